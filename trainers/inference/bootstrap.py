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
    """Mean over seed pairs of candidate − baseline AUC and UAUC on all rows (inputs checked by
    :func:`~trainers.inference.metrics.auc` / :func:`~trainers.inference.metrics.uauc`). ``baseline`` has one array
    or as many as ``candidate``."""
    pairs = _seed_pairs(baseline, candidate)
    totals = {name: 0.0 for name in METRICS}
    for base, cand in pairs:
        totals["auc"] += auc(labels, cand) - auc(labels, base)
        totals["uauc"] += uauc(users, labels, cand)[0] - uauc(users, labels, base)[0]
    return {name: total / len(pairs) for name, total in totals.items()}


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
    when a user is drawn again, so they are computed once and a resample's UAUC is their count-weighted mean; its
    AUC is a weighted AUC, ``_RESAMPLES_PER_CHUNK`` resamples at a time (the ``[R, N]`` weights stay bounded).

    Shape:
        users [N], labels [N] (0/1), score arrays [N], counts [R, U] -> ``{"auc": [R], "uauc": [R]}``.
    """
    unique_users, user_index = np.unique(users, return_inverse=True)
    pairs = _seed_pairs(baseline, candidate)
    base_aucs, cand_aucs = (
        [per_user_auc(users, labels, scores).reindex(unique_users).to_numpy() for scores in arrays]  # [U] each
        for arrays in (baseline, candidate)
    )
    qualifies = ~np.isnan(base_aucs[0])  # >1 row and both classes: the same for every model
    user_differences = np.mean([cand - base for base, cand in _seed_pairs(base_aucs, cand_aucs)], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # resamples without a qualifying user: nan
        uauc_differences = counts @ np.where(qualifies, user_differences, 0.0) / (counts @ qualifies.astype(float))
    auc_differences = []
    for start in range(0, len(counts), _RESAMPLES_PER_CHUNK):
        row_weights = counts[start : start + _RESAMPLES_PER_CHUNK, user_index].astype(np.float64)  # [R', N]
        auc_differences.append(
            np.mean([weighted_aucs(labels, cand, row_weights) - weighted_aucs(labels, base, row_weights)
                     for base, cand in pairs], axis=0)  # fmt: skip
        )
    return {"auc": np.concatenate(auc_differences), "uauc": uauc_differences}


def paired_bootstrap(
    users, labels, baseline: list[np.ndarray], candidate: list[np.ndarray], resamples: int = 1000, seed: int = 0
) -> dict[str, dict]:
    """Observed mean difference, 95% percentile interval and the share of resamples where the candidate is not
    better, per metric.

    Shape:
        users [N], labels [N]; each score array [N] (the same rows in the same order).

    Raises:
        ValueError: no candidate scores, mismatched lengths, a baseline count that is neither 1 nor the
            candidate count, or labels / scores the metrics refuse (labels not 0 / 1, non-finite scores).
    """
    users, labels = np.asarray(users), np.asarray(labels)
    check_seed_counts(len(baseline), len(candidate))
    for scores in (*baseline, *candidate):
        if len(scores) != len(labels):
            raise ValueError(f"a score array has {len(scores)} entries for {len(labels)} rows")
    observed = mean_differences(users, labels, baseline, candidate)  # first: the metrics check every input
    baseline = [np.asarray(scores, dtype=np.float64) for scores in baseline]
    candidate = [np.asarray(scores, dtype=np.float64) for scores in candidate]
    num_users = len(np.unique(users))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.choice(num_users, num_users), minlength=num_users) for _ in range(resamples)])
    resampled = resampled_differences(users, labels.astype(np.int64), baseline, candidate, counts)
    report = {}
    for name in METRICS:
        values = resampled[name]
        report[name] = {
            "observed": float(observed[name]),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "p_not_better": float(np.mean(values <= 0)),
        }
    return report
