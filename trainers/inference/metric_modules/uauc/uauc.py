"""Per-user AUC (UAUC, CoLLM's uAUC) as a local ``evaluate`` metric: ``evaluate.load("trainers/inference/metric_modules/uauc")``.

Self-contained: ``evaluate`` copies this file and ``user_auc.py`` (its arithmetic, also used by
``trainers.inference.metrics``) on their own, so nothing here imports the cl3mrec package.
"""

import datasets
import evaluate

from .user_auc import user_auc

_DESCRIPTION = (
    "UAUC: unweighted mean of per-user ROC AUC over users with more than one row and both label "
    "classes (CoLLM's uAUC)."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): scores, higher = more likely positive; finite.
    references (`list` of `int`): binary labels 0/1.
    user_ids (`list` of `int`): the user of each row.
Returns:
    uauc (`float`): mean per-user AUC (NaN when no user qualifies).
    n_users (`int`): the number of users averaged.
"""
_CITATION = "Bao et al., CoLLM: Integrating Collaborative Embeddings into LLMs for Recommendation, 2023."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UAUC(evaluate.Metric):
    """Per-user AUC (see :func:`user_auc.user_auc`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("float64"),
                    "references": datasets.Value("int64"),
                    "user_ids": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, user_ids):
        value, n_users = user_auc(user_ids, references, predictions)
        return {"uauc": value, "n_users": n_users}
