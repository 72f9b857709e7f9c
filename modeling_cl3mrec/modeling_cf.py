"""``CFRecModel``: one collaborative encoder as a ``PreTrainedModel`` (save/load, BCE loss).

Registered for auto classes: ``save_pretrained`` writes ``auto_map`` and copies this folder's code, so a saved
model loads with ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` without the cl3mrec package.
"""

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .collaborative_encoders import build_collaborative_encoder, init_cf_weights
from .configuration_cf import CFRecConfig


@dataclass
class CFRecOutput(ModelOutput):
    """Output of :class:`CFRecModel`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): BCE-with-logits loss, when `labels` is given.
        logits (`torch.FloatTensor` of shape `[B]`): logit of "liked".
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None


class CFRecModel(PreTrainedModel):
    """A collaborative encoder (``self.encoder``, built from ``config.encoder_type``) trained with BCE."""

    config_class = CFRecConfig
    base_model_prefix = "encoder"
    main_input_name = "user_ids"

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        self.encoder = build_collaborative_encoder(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Guarded initialisers: tables loaded from a checkpoint are left as they are.
        init_cf_weights(module, self.config.initializer_range)

    def forward(
        self,
        user_ids: torch.LongTensor,
        item_ids: torch.LongTensor,
        history_item_ids: torch.LongTensor,
        labels: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> CFRecOutput:
        """``user_ids [B]``, ``item_ids [B]``, ``history_item_ids [B, L]`` (left-padded), ``labels [B]``."""
        logits = self.encoder.score(user_ids, item_ids, history_item_ids)  # [B]
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return CFRecOutput(loss=loss, logits=logits)


CFRecConfig.register_for_auto_class("AutoConfig")
CFRecModel.register_for_auto_class("AutoModel")
