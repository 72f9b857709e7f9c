"""Paired, user-clustered bootstrap of AUC / UAUC differences between two models scored on the same rows.

Users are resampled with replacement (rows stay with their user), so the interval reflects which users happen to
be in the split. With several seeds per model, each resample's difference is the mean over seed pairs of
``metric(candidate seed s) − metric(baseline seed s)``; a deterministic baseline (a CF encoder) is one score
array paired with every candidate seed.
"""

import numpy as np

from .metric_modules.uauc.user_auc import per_user_auc
from .metrics import auc, uauc

METRICS = ("auc", "uauc")
_RESAMPLES_PER_CHUNK = 250


def check_seed_counts(baseline: int, candidate: int) -> None:
    """Raise ``ValueError`` unless ``baseline`` seeds can pair with ``candidate`` seeds: one baseline (paired with
    every candidate seed) or as many as the candidate."""
    if not candidate or baseline not in (1, candidate):
        raise ValueError(
            f"the baseline needs 1 seed or as many as the candidate ({candidate}), got {baseline} baseline score arrays"
        )


def _seed_pairs(baseline: list[np.ndarray], candidate: list[np.ndarray]) -> list[tuple]:
    """(baseline, candidate) score arrays paired seed by seed; a single baseline pairs with every candidate."""
    return list(zip(baseline * len(candidate), candidate)) if len(baseline) == 1 else list(zip(baseline, candidate))


def mean_differences(users, labels, baseline: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
    """Mean over seed pairs of candidate − baseline AUC and UAUC on all rows. ``baseline`` has one array or as many
    as ``candidate``."""
    totals = {name: 0.0 for name in METRICS}
    for base, cand in _seed_pairs(baseline, candidate):
        totals["auc"] += auc(labels, cand) - auc(labels, base)
        totals["uauc"] += uauc(users, labels, cand)[0] - uauc(users, labels, base)[0]
    return {name: total / len(_seed_pairs(baseline, candidate)) for name, total in totals.items()}


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of ``scores`` with rows repeated ``weights`` times, ties counting one half, for each row of ``weights``.

    A resample that draws a user twice is the data with that user's rows weighted 2: one sort of the scores
    serves every resample.

    Shape:
        labels [N] (0/1), scores [N], weights [R, N] (non-negative counts) -> [R].

    Raises:
        ValueError: a weighting that leaves one label class only.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    tie_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sorted_weights, positive = weights[:, order], labels[order] == 1
    pos = np.add.reduceat(sorted_weights * positive, tie_starts, axis=1)  # [R, G]: positives per tied score
    neg = np.add.reduceat(sorted_weights * ~positive, tie_starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly lower
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    if np.any(pairs == 0):
        raise ValueError("AUC needs both label classes (0 and 1) among the rows of every resample")
    return (pos * (below + 0.5 * neg)).sum(axis=1) / pairs


def resampled_differences(users, labels, baseline: list[np.ndarray], candidate: list[np.ndarray], counts):
    """Mean over seed pairs of candidate − baseline AUC and UAUC in each resample of users.

    ``counts[r, u]`` is how often resample ``r`` drew user ``u`` (users numbered as ``np.unique(users)``). Equals
    :func:`mean_differences` on the resampled rows with each drawn copy of a user counted as a user of its own
    (``tests/test_bootstrap.py`` checks it against that), without building them: per-user AUCs do not change
    when a user is drawn again, so a resample's UAUC is their count-weighted mean, and its AUC a weighted AUC.

    Shape:
        users [N], labels [N], score arrays [N], counts [R, U] -> ``{"auc": [R], "uauc": [R]}``.
    """
    unique_users, user_index = np.unique(users, return_inverse=True)
    row_weights = counts[:, user_index].astype(np.float64)  # [R, N]
    totals = {name: np.zeros(len(counts)) for name in METRICS}
    qualifies = None
    for base, cand in _seed_pairs(baseline, candidate):
        totals["auc"] += weighted_aucs(labels, cand, row_weights) - weighted_aucs(labels, base, row_weights)
        per_user = [per_user_auc(users, labels, scores).reindex(unique_users).to_numpy() for scores in (base, cand)]
        qualifies = ~np.isnan(per_user[0])  # a user with one row or one class: the same for every model
        totals["uauc"] += counts @ np.where(qualifies, per_user[1] - per_user[0], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        totals["uauc"] /= counts @ qualifies.astype(np.float64)  # resamples without a qualifying user: nan
    pairs = len(_seed_pairs(baseline, candidate))
    return {name: total / pairs for name, total in totals.items()}


def paired_bootstrap(
    users, labels, baseline: list[np.ndarray], candidate: list[np.ndarray], resamples: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Observed mean difference, 95% percentile interval and the share of resamples where the candidate is not
    better, per metric.

    Shape:
        users [N], labels [N]; each score array [N] (the same rows in the same order).

    Raises:
        ValueError: no candidate scores, mismatched lengths, or a baseline count that is neither 1 nor the
            candidate count.
    """
    users, labels = np.asarray(users), np.asarray(labels)
    if labels.size and not np.isin(labels, (0, 1)).all():  # before the cast: 0.5 must not become 0
        bad = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise ValueError(f"labels must be 0 or 1; row {bad} is {labels[bad].item()!r}")
    labels = labels.astype(np.int64)
    check_seed_counts(len(baseline), len(candidate))
    for scores in (*baseline, *candidate):
        if len(scores) != len(labels):
            raise ValueError(f"a score array has {len(scores)} entries for {len(labels)} rows")
    baseline = [np.asarray(scores, dtype=np.float64) for scores in baseline]
    candidate = [np.asarray(scores, dtype=np.float64) for scores in candidate]
    num_users = len(np.unique(users))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.choice(num_users, num_users), minlength=num_users) for _ in range(resamples)])
    resampled = {name: [] for name in METRICS}
    for start in range(0, resamples, _RESAMPLES_PER_CHUNK):  # bounds the [R, N] weight matrix
        chunk = resampled_differences(users, labels, baseline, candidate, counts[start : start + _RESAMPLES_PER_CHUNK])
        for name in METRICS:
            resampled[name].append(chunk[name])
    observed = mean_differences(users, labels, baseline, candidate)
    report = {}
    for name in METRICS:
        values = np.concatenate(resampled[name])
        report[name] = {
            "observed": float(observed[name]),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "p_not_better": float(np.mean(values <= 0)),
        }
    return report
