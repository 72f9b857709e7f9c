"""Ranking metrics of CoLLM-style recommenders: global AUC and per-user UAUC.

All functions take the *full* gathered arrays (one entry per scored row), so the result does not
depend on batch size or on the number of processes that produced the scores. Everything is
vectorised: per-user statistics come from one ``groupby`` rank, not from a Python loop over rows.

UAUC follows CoLLM (``uAUC_me``): the unweighted mean of per-user AUC over users that have more
than one row and both label classes; other users are skipped.
"""

from typing import Optional

import numpy as np
import pandas as pd


def _validate(labels, scores, user_ids=None):
    """Return ``(labels int64 [N], scores float64 [N], user_ids int64 [N] | None)`` or raise ``ValueError``."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but scores has {scores.shape[0]}")
    if user_ids is not None:
        user_ids = np.asarray(user_ids).reshape(-1)
        if user_ids.shape[0] != labels.shape[0]:
            raise ValueError(f"user_ids has {user_ids.shape[0]} entries but labels has {labels.shape[0]}")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"scores must be finite; row {bad} is {scores[bad]}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(labels, (0, 1)))[0])
        raise ValueError(f"labels must be 0 or 1; row {bad} is {labels[bad]!r}")
    return labels.astype(np.int64), scores, user_ids


def _auc_from_ranks(ranks, labels):
    """AUC (Mann-Whitney U) from average ranks; ``nan`` when a class is missing."""
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(labels, scores) -> float:
    """Global ROC AUC with ties counted as one half (equals ``sklearn.metrics.roc_auc_score``).

    Args:
        labels: ``[N]`` binary labels (0/1).
        scores: ``[N]`` real scores, higher = more likely positive.

    Raises:
        ValueError: on mismatched lengths, non-finite scores, non-binary labels, or a single class.
    """
    labels, scores, _ = _validate(labels, scores)
    if labels.size == 0 or labels.min() == labels.max():
        raise ValueError("AUC needs both label classes (0 and 1) among the rows")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return _auc_from_ranks(ranks, labels)


def uauc(user_ids, labels, scores) -> tuple[float, int]:
    """Unweighted mean of per-user AUC, as CoLLM.

    Args:
        user_ids: ``[N]`` user id of each row.
        labels: ``[N]`` binary labels.
        scores: ``[N]`` scores.

    Returns:
        ``(value, n_users)``: the mean over the ``n_users`` users with >1 row and both classes;
        ``(nan, 0)`` when no user qualifies.
    """
    labels, scores, user_ids = _validate(labels, scores, user_ids)
    if labels.size == 0:
        return float("nan"), 0
    frame = pd.DataFrame({"user": user_ids, "label": labels, "score": scores})
    frame["rank"] = frame.groupby("user", sort=False)["score"].rank(method="average")
    frame["pos_rank"] = frame["rank"] * frame["label"]
    per_user = frame.groupby("user", sort=False).agg(
        n=("label", "size"), n_pos=("label", "sum"), pos_rank_sum=("pos_rank", "sum")
    )
    n_neg = per_user["n"] - per_user["n_pos"]
    keep = (per_user["n"] > 1) & (per_user["n_pos"] > 0) & (n_neg > 0)
    per_user, n_neg = per_user[keep], n_neg[keep]
    if per_user.empty:
        return float("nan"), 0
    n_pos = per_user["n_pos"]
    user_auc = (per_user["pos_rank_sum"] - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return float(user_auc.mean()), int(len(user_auc))


def _subset_report(user_ids, labels, scores) -> dict:
    """``auc, uauc, n_rows, n_users_uauc`` of one subset; metrics ``None`` plus ``reason`` if undefined."""
    report = {"auc": None, "uauc": None, "n_rows": int(labels.size), "n_users_uauc": 0}
    if labels.size == 0:
        report["reason"] = "no rows"
        return report
    if labels.min() == labels.max():
        report["reason"] = f"only label {int(labels[0])} present"
        return report
    report["auc"] = auc(labels, scores)
    value, n_users = uauc(user_ids, labels, scores)
    report["n_users_uauc"] = n_users
    if n_users == 0:
        report["reason"] = "no user has both label classes"
    else:
        report["uauc"] = value
    return report


def ranking_report(user_ids, labels, scores, warm: Optional[np.ndarray] = None) -> dict:
    """AUC/UAUC for all rows plus the warm and cold subsets.

    Args:
        user_ids: ``[N]`` user ids.
        labels: ``[N]`` binary labels.
        scores: ``[N]`` scores.
        warm: ``[N]`` bool, True where user and item both occur in train (``None``: all warm).

    Returns:
        ``{"auc", "uauc", "n_rows", "n_users_uauc", "warm": {...same...}, "cold": {...same...}}``;
        a subset whose metric is undefined carries ``None`` and a ``"reason"``.
    """
    labels, scores, user_ids = _validate(labels, scores, user_ids)
    warm = np.ones(labels.size, dtype=bool) if warm is None else np.asarray(warm).reshape(-1)
    if warm.shape[0] != labels.size:
        raise ValueError(f"warm has {warm.shape[0]} entries but labels has {labels.size}")
    warm = warm.astype(bool)
    report = _subset_report(user_ids, labels, scores)
    report["warm"] = _subset_report(user_ids[warm], labels[warm], scores[warm])
    report["cold"] = _subset_report(user_ids[~warm], labels[~warm], scores[~warm])
    return report
