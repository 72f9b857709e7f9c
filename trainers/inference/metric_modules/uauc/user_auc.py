"""Per-user AUC arithmetic of the ``uauc`` metric module (numpy + pandas only).

Imported by ``uauc.py`` (``evaluate`` copies this file beside it) and by ``trainers.inference.metrics``, so the evaluate
module and the library compute with the same code.
"""

import numpy as np
import pandas as pd


def per_user_auc(user_ids, labels, scores) -> pd.Series:
    """AUC of each user with >1 row and both classes (a Series indexed by user id, in order of first appearance).

    Vectorised: per-user average ranks come from one ``groupby`` rank, not a loop over users.

    Raises:
        ValueError: non-finite scores or non-binary labels.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)) or not np.isin(labels, (0, 1)).all():
        raise ValueError("UAUC needs finite scores and labels 0 or 1")
    frame = pd.DataFrame({"user": np.asarray(user_ids).reshape(-1), "label": labels, "score": scores})
    frame["rank"] = frame.groupby("user", sort=False)["score"].rank(method="average")
    frame["pos_rank"] = frame["rank"] * frame["label"]
    per_user = frame.groupby("user", sort=False).agg(
        n=("label", "size"), n_pos=("label", "sum"), pos_rank_sum=("pos_rank", "sum")
    )
    n_neg = per_user["n"] - per_user["n_pos"]
    keep = (per_user["n"] > 1) & (per_user["n_pos"] > 0) & (n_neg > 0)
    per_user, n_neg = per_user[keep], n_neg[keep]
    n_pos = per_user["n_pos"]
    return (per_user["pos_rank_sum"] - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def user_auc(user_ids, labels, scores) -> tuple[float, int]:
    """``(mean per-user AUC, n_users)`` over users with >1 row and both classes; ``(nan, 0)`` when none.

    Raises:
        ValueError: non-finite scores or non-binary labels.
    """
    aucs = per_user_auc(user_ids, labels, scores)
    if aucs.empty:
        return float("nan"), 0
    return float(aucs.mean()), int(len(aucs))
