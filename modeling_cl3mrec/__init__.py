"""CL3M-Rec models; importing this package registers them with ``AutoConfig`` / ``AutoModel`` /
``AutoProcessor`` and registers the ``cl3mrec-scoring`` pipeline task.

The folder is flat (relative imports of siblings only) because ``save_pretrained`` copies these files next
to a saved model for ``AutoModel.from_pretrained(dir, trust_remote_code=True)``.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_cf import CFRecConfig
from .configuration_cl3mrec import CL3MRecConfig
from .modeling_cf import CFRecModel
from .modeling_cl3mrec import CL3MRecModel, CL3MRecOutput, CL3MRecPreTrainedModel, CL3MRecProjector
from .pipeline_cl3mrec import TASK, CL3MRecScoringPipeline
from .processing_cl3mrec import CL3MRecProcessor

AutoConfig.register(CFRecConfig.model_type, CFRecConfig, exist_ok=True)
AutoModel.register(CFRecConfig, CFRecModel, exist_ok=True)
AutoConfig.register(CL3MRecConfig.model_type, CL3MRecConfig, exist_ok=True)
AutoModel.register(CL3MRecConfig, CL3MRecModel, exist_ok=True)
AutoProcessor.register(CL3MRecConfig, CL3MRecProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=CL3MRecScoringPipeline, pt_model=AutoModel, type="text")

__all__ = [
    "CFRecConfig",
    "CFRecModel",
    "CL3MRecConfig",
    "CL3MRecModel",
    "CL3MRecOutput",
    "CL3MRecPreTrainedModel",
    "CL3MRecProcessor",
    "CL3MRecProjector",
    "CL3MRecScoringPipeline",
]
