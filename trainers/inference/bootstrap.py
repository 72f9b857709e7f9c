"""Paired, user-clustered bootstrap of AUC / UAUC differences between two models scored on the same rows.

Users are resampled with replacement (rows stay with their user), so the interval reflects which users happen to
be in the split. With several seeds per model, each resample's difference is the mean over seed pairs of
``metric(candidate seed s) − metric(baseline seed s)``; a deterministic baseline (a CF encoder) is one score
array paired with every candidate seed.
"""

import numpy as np

from .metrics import auc, uauc

METRICS = ("auc", "uauc")


def check_seed_counts(baseline: int, candidate: int) -> None:
    """Raise ``ValueError`` unless ``baseline`` seeds can pair with ``candidate`` seeds: one baseline (paired with
    every candidate seed) or as many as the candidate."""
    if not candidate or baseline not in (1, candidate):
        raise ValueError(
            f"the baseline needs 1 seed or as many as the candidate ({candidate}), got {baseline} baseline score arrays"
        )


def mean_differences(users, labels, baseline: list[np.ndarray], candidate: list[np.ndarray], rows) -> dict[str, float]:
    """Mean over seed pairs of candidate − baseline AUC and UAUC on ``rows`` (users identified by ``users[rows]``
    renumbered by the caller). ``baseline`` has one array or as many as ``candidate``."""
    pairs = list(zip(baseline * len(candidate), candidate)) if len(baseline) == 1 else list(zip(baseline, candidate))
    row_labels = labels[rows]
    totals = {name: 0.0 for name in METRICS}
    for base, cand in pairs:
        totals["auc"] += auc(row_labels, cand[rows]) - auc(row_labels, base[rows])
        totals["uauc"] += uauc(users, row_labels, cand[rows])[0] - uauc(users, row_labels, base[rows])[0]
    return {name: total / len(pairs) for name, total in totals.items()}


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
    check_seed_counts(len(baseline), len(candidate))
    for scores in (*baseline, *candidate):
        if len(scores) != len(labels):
            raise ValueError(f"a score array has {len(scores)} entries for {len(labels)} rows")
    rows_of_user = {user: np.flatnonzero(users == user) for user in np.unique(users)}
    unique_users = np.array(list(rows_of_user))
    rng = np.random.default_rng(seed)
    resampled = []
    for _ in range(resamples):
        picked = rng.choice(unique_users, len(unique_users))
        rows = np.concatenate([rows_of_user[user] for user in picked])
        # Resampled users get distinct ids so that a user drawn twice counts twice in UAUC.
        ids = np.repeat(np.arange(len(picked)), [len(rows_of_user[user]) for user in picked])
        resampled.append(mean_differences(ids, labels, baseline, candidate, rows))
    observed = mean_differences(users, labels, baseline, candidate, np.arange(len(labels)))
    report = {}
    for name in METRICS:
        values = np.array([sample[name] for sample in resampled])
        report[name] = {
            "observed": float(observed[name]),
            "ci95": [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))],
            "p_not_better": float(np.mean(values <= 0)),
        }
    return report
