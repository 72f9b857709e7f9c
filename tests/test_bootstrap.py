"""Paired user bootstrap (trainers.inference.bootstrap): zero for identical models, clearly positive for a better one,
seed pairs averaged, each resample equal to the metrics recomputed on its rows, bad shapes refused."""

import numpy as np
import pytest

from trainers.inference.bootstrap import mean_differences, paired_bootstrap, resampled_differences
from trainers.inference.metrics import auc


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 10)
    labels = rng.integers(0, 2, users.size)
    noise = [rng.normal(size=users.size) for _ in range(3)]
    return users, labels, noise


def test_identical_models_differ_by_zero(rows):
    users, labels, noise = rows
    report = paired_bootstrap(users, labels, [noise[0]], [noise[0]], resamples=50)
    for metric in ("auc", "uauc"):
        assert report[metric]["observed"] == 0.0 and report[metric]["ci95"] == [0.0, 0.0]
        assert report[metric]["p_not_better"] == 1.0


def test_a_better_model_has_an_interval_above_zero(rows):
    users, labels, noise = rows
    better = [labels + 0.8 * n for n in noise]  # three seeds of an informative model
    report = paired_bootstrap(users, labels, [noise[0]], better, resamples=200)
    expected = np.mean([auc(labels, scores) for scores in better]) - auc(labels, noise[0])
    assert report["auc"]["observed"] == pytest.approx(expected)  # one baseline paired with every seed
    assert report["auc"]["ci95"][0] > 0 and report["uauc"]["ci95"][0] > 0
    assert report["auc"]["p_not_better"] == 0.0


def test_bad_inputs_raise(rows):
    users, labels, noise = rows
    with pytest.raises(ValueError, match="baseline score arrays"):
        paired_bootstrap(users, labels, noise[:2], noise, resamples=5)
    with pytest.raises(ValueError, match="labels must be 0 or 1; row 3 is 0.5"):
        fractional = labels.astype(float)
        fractional[3] = 0.5
        paired_bootstrap(users, fractional, [noise[0]], [noise[1]], resamples=5)
    with pytest.raises(ValueError, match="entries for"):
        paired_bootstrap(users, labels, [noise[0][:-1]], [noise[1]], resamples=5)


def test_each_resample_equals_the_metrics_on_its_rows():
    """The count-weighted shortcut against building each resample: rows of every drawn user concatenated, each
    drawn copy a user of its own, AUC / UAUC recomputed. Tied scores, users with one row or one class (UAUC skips
    them) and user ids that are not 0..U-1 included."""
    rng = np.random.default_rng(1)
    users = 7 * np.repeat(np.arange(30), rng.integers(1, 9, 30)) + 3
    labels = rng.integers(0, 2, users.size)
    labels[users == users[0]] = 1  # a one-class user
    baseline = [np.round(rng.normal(size=users.size), 1) for _ in range(2)]  # rounded: many ties
    candidate = [np.round(labels + rng.normal(size=users.size), 1) for _ in range(2)]
    unique_users = np.unique(users)
    counts = np.stack([np.bincount(rng.choice(unique_users.size, unique_users.size), minlength=unique_users.size)
                       for _ in range(6)])
    shortcut = resampled_differences(users, labels, baseline, candidate, counts)
    for r, drawn in enumerate(counts):
        picked = np.repeat(unique_users, drawn)
        rows = np.concatenate([np.flatnonzero(users == user) for user in picked])
        copies = np.repeat(np.arange(picked.size), [np.sum(users == user) for user in picked])
        direct = mean_differences(copies, labels[rows], [b[rows] for b in baseline], [c[rows] for c in candidate])
        for metric in ("auc", "uauc"):
            assert shortcut[metric][r] == pytest.approx(direct[metric], abs=1e-12)
