"""Paired user bootstrap (trainers.inference.bootstrap): zero for identical models, clearly positive for a better one,
seed pairs averaged, bad shapes refused."""

import numpy as np
import pytest

from trainers.inference.bootstrap import paired_bootstrap
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
    with pytest.raises(ValueError, match="entries for"):
        paired_bootstrap(users, labels, [noise[0][:-1]], [noise[1]], resamples=5)
