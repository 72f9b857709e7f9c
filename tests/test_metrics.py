"""trainers.inference.metrics against sklearn and a per-user loop, plus the local evaluate modules."""

from pathlib import Path

import evaluate
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainers.inference.metrics import auc, ranking_report, uauc

MODULES = Path(__file__).resolve().parents[1] / "trainers" / "inference" / "metric_modules"


def random_rows(seed: int, n: int = 400, n_users: int = 30, tie_levels: int = 7):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    labels = rng.integers(0, 2, n)
    scores = rng.integers(0, tie_levels, n) + 0.5 * labels * rng.random(n)  # many ties, some signal
    return users, labels, scores


def reference_uauc(users, labels, scores):
    values = []
    for user in np.unique(users):
        mask = users == user
        if mask.sum() > 1 and len(np.unique(labels[mask])) == 2:
            values.append(roc_auc_score(labels[mask], scores[mask]))
    return float(np.mean(values)), len(values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    _, labels, scores = random_rows(seed)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auc(labels, np.round(scores)) == pytest.approx(roc_auc_score(labels, np.round(scores)), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uauc_matches_per_user_loop(seed):
    users, labels, scores = random_rows(seed)
    users[:3] = 999  # a user with three rows ...
    labels[:3] = 1  # ... of one class: skipped
    users[3] = 1000  # a single-row user: skipped
    value, n_users = uauc(users, labels, scores)
    expected, expected_users = reference_uauc(users, labels, scores)
    assert n_users == expected_users
    assert value == pytest.approx(expected, abs=1e-12)


def test_uauc_independent_of_row_order():
    users, labels, scores = random_rows(3)
    order = np.random.default_rng(0).permutation(len(users))
    assert uauc(users, labels, scores) == pytest.approx(uauc(users[order], labels[order], scores[order]))


def test_perfect_and_reversed_scores():
    labels = np.array([0, 1, 0, 1])
    users = np.array([1, 1, 2, 2])
    assert auc(labels, labels * 2.0) == 1.0
    assert uauc(users, labels, -labels.astype(float)) == (0.0, 2)


def test_ranking_report_subsets():
    users, labels, scores = random_rows(4)
    warm = np.arange(len(users)) % 3 != 0
    report = ranking_report(users, labels, scores, warm)
    assert report["n_rows"] == len(users)
    assert report["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert report["warm"]["n_rows"] + report["cold"]["n_rows"] == len(users)
    assert report["warm"]["auc"] == pytest.approx(roc_auc_score(labels[warm], scores[warm]))
    assert report["cold"]["uauc"] == pytest.approx(reference_uauc(users[~warm], labels[~warm], scores[~warm])[0])


def test_ranking_report_undefined_subsets_carry_reasons():
    report = ranking_report([1, 1, 2], [0, 1, 1], [0.1, 0.9, 0.5], warm=[True, True, True])
    assert report["cold"] == {"auc": None, "uauc": None, "n_rows": 0, "n_users_uauc": 0, "reason": "no rows"}
    one_class = ranking_report([1, 2, 3], [1, 1, 0], [0.3, 0.2, 0.1], warm=[True, True, False])
    assert one_class["warm"]["auc"] is None and "only label 1" in one_class["warm"]["reason"]
    assert one_class["uauc"] is None and one_class["auc"] == 1.0  # every user has one row
    assert "no user" in one_class["reason"]


@pytest.mark.parametrize(
    "args, message",
    [
        (([0, 1], [0.1]), "labels has 2 entries but scores has 1"),
        (([0, 1], [0.1, float("nan")]), "scores must be finite; row 1"),
        (([0, 2], [0.1, 0.2]), "labels must be 0 or 1; row 1"),
        (([1, 1], [0.1, 0.2]), "both label classes"),
    ],
)
def test_auc_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        auc(*args)


def test_uauc_and_report_reject_bad_lengths():
    with pytest.raises(ValueError, match="user_ids has 1 entries"):
        uauc([1], [0, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="warm has 1 entries"):
        ranking_report([1, 1], [0, 1], [0.1, 0.2], warm=[True])


def test_evaluate_modules_agree(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    users, labels, scores = random_rows(5)
    auc_metric = evaluate.load(str(MODULES / "auc"))
    uauc_metric = evaluate.load(str(MODULES / "uauc"))
    assert auc_metric.compute(predictions=scores, references=labels)["auc"] == pytest.approx(auc(labels, scores))
    # Batches added one at a time give the same result as the whole arrays.
    for start in range(0, len(users), 64):
        part = slice(start, start + 64)
        uauc_metric.add_batch(predictions=scores[part], references=labels[part], user_ids=users[part])
    result = uauc_metric.compute()
    assert (result["uauc"], result["n_users"]) == pytest.approx(uauc(users, labels, scores))


def test_evaluate_modules_load_without_the_package(run_without_repo):
    """`evaluate.load(path)` in a fresh process outside the repository imports nothing from cl3mrec."""
    script = f"""
import evaluate
auc = evaluate.load({str(MODULES / "auc")!r}).compute(predictions=[0.1, 0.8, 0.25, 0.3], references=[0, 1, 1, 0])
uauc = evaluate.load({str(MODULES / "uauc")!r}).compute(
    predictions=[0.9, 0.1, 0.2, 0.7, 0.5], references=[1, 0, 1, 0, 1], user_ids=[1, 1, 2, 2, 3])
print(auc["auc"], uauc["uauc"], uauc["n_users"])
"""
    assert run_without_repo(script).split() == ["0.75", "0.5", "2"]
    for name in ("auc", "uauc"):
        card = (MODULES / name / "README.md").read_text()
        assert card.startswith("---\n") and f"# Metric Card for {name.upper()}" in card
