"""Per-user AUC (UAUC, CoLLM) as a local ``evaluate`` metric (``evaluate.load("trainers/metric_modules/uauc")``)."""

import datasets
import evaluate

from trainers.metrics import uauc

_DESCRIPTION = (
    "UAUC: unweighted mean of per-user ROC AUC over users with more than one row and both label "
    "classes (CoLLM's uAUC)."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): scores, higher = more likely positive.
    references (`list` of `int`): binary labels 0/1.
    user_ids (`list` of `int`): the user of each row.
Returns:
    uauc (`float`): mean per-user AUC (NaN when no user qualifies).
    n_users (`int`): the number of users averaged.
"""
_CITATION = "Bao et al., CoLLM: Integrating Collaborative Embeddings into LLMs for Recommendation, 2023."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UAUC(evaluate.Metric):
    """Per-user AUC; delegates to :func:`trainers.metrics.uauc`."""

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
        value, n_users = uauc(user_ids, references, predictions)
        return {"uauc": value, "n_users": n_users}
