"""Global ROC AUC as a local ``evaluate`` metric: ``evaluate.load("trainers/inference/metric_modules/auc")``.

Self-contained: ``evaluate`` copies this file and ``roc_auc.py`` (its arithmetic, also used by
``trainers.inference.metrics``) on their own, so nothing here imports the cl3mrec package.
"""

import datasets
import evaluate

from .roc_auc import roc_auc

_DESCRIPTION = "Global ROC AUC of binary labels against real scores; ties count one half."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): scores, higher = more likely positive; finite.
    references (`list` of `int`): binary labels 0/1, both classes present.
Returns:
    auc (`float`): the area under the ROC curve, equal to `sklearn.metrics.roc_auc_score`.
"""
_CITATION = "Bao et al., CoLLM: Integrating Collaborative Embeddings into LLMs for Recommendation, 2023."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AUC(evaluate.Metric):
    """Global AUC (see :func:`roc_auc.roc_auc`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"auc": roc_auc(references, predictions)}
