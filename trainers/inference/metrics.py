"""Ranking metrics of CoLLM-style recommenders: global AUC and per-user UAUC.

All functions take the *full* gathered arrays (one entry per scored row), so the result does not
depend on batch size or on the number of processes that produced the scores. Everything is
vectorised: per-user statistics come from one ``groupby`` rank, not from a Python loop over rows.

UAUC follows CoLLM (``uAUC_me``): the unweighted mean of per-user AUC over users that have more
than one row and both label classes; other users are skipped.

The arithmetic lives in the local ``evaluate`` modules (``trainers/inference/metric_modules/{auc,uauc}/``, each with a
metric card, loadable with ``evaluate.load(path)`` without this package): :func:`auc` and :func:`uauc` check
their inputs here and call the modules' own arithmetic files (``roc_auc.py``, ``user_auc.py``) directly, so
``compute_metrics``, the CLIs and the ``evaluate`` modules give identical numbers without paying ``evaluate``'s
import and Arrow round trip on every call. The bootstrap (``bootstrap.py``) reuses the per-user AUCs of
``user_auc.per_user_auc`` across resamples.
"""

from typing import Optional

import numpy as np

from .metric_modules.auc.roc_auc import roc_auc
from .metric_modules.uauc.user_auc import user_auc


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
        value = labels[bad].item() if isinstance(labels[bad], np.generic) else labels[bad]
        raise ValueError(f"labels must be 0 or 1; row {bad} is {value!r}")
    return labels.astype(np.int64), scores, user_ids


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
    return roc_auc(labels, scores)


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
    return user_auc(user_ids, labels, scores)


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
