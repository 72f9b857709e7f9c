"""Global ROC AUC as a local ``evaluate`` metric (``evaluate.load("trainers/metric_modules/auc")``)."""

import datasets
import evaluate

from trainers.metrics import auc

_DESCRIPTION = "Global ROC AUC of binary labels against real scores; ties count one half."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): scores, higher = more likely positive.
    references (`list` of `int`): binary labels 0/1.
Returns:
    auc (`float`): the area under the ROC curve, equal to `sklearn.metrics.roc_auc_score`.
"""
_CITATION = "Bao et al., CoLLM: Integrating Collaborative Embeddings into LLMs for Recommendation, 2023."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AUC(evaluate.Metric):
    """Global AUC; delegates to :func:`trainers.metrics.auc`."""

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
        return {"auc": auc(references, predictions)}
