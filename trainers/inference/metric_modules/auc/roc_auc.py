"""ROC AUC arithmetic of the ``auc`` metric module (numpy + pandas only).

Imported by ``auc.py`` (``evaluate`` copies this file beside it) and by ``trainers.inference.metrics``, so the evaluate
module and the library compute with the same code.
"""

import numpy as np
import pandas as pd


def roc_auc(labels, scores) -> float:
    """ROC AUC (Mann-Whitney U from average ranks) of ``labels [N]`` (0/1) against ``scores [N]``.

    Raises:
        ValueError: non-finite scores, non-binary labels, or a single class.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)) or not np.isin(labels, (0, 1)).all():
        raise ValueError("AUC needs finite scores and labels 0 or 1")
    n_pos = labels.sum()
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both label classes (0 and 1) among the rows")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
