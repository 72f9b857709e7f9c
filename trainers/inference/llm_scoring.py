"""Batch scoring of a saved (or in-memory) CL3M-Rec model: one float per dataset row, row order kept."""

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_cl3mrec import CL3MRecModel, CL3MRecProcessor

from ..llm_loading import unwrap_peft
from ..model_dirs import load_complete
from ..training.prompt_dataset import CL3MRecCollator, context_groups, length_grouped_batches, tokenize_dataset
from ..training.stages import compiled_decoder_layers, frozen_decoder_weights_in, require_cpp_compiler
from .ranking import grouped_kv_attention

logger = logging.getLogger(__name__)


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is usable on `device` (CPU: always with torch >= 2; CUDA: if the GPU supports it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def load_processor(model_dir, config) -> CL3MRecProcessor:
    """The processor saved in `model_dir`; models exported before processors were saved (no
    `processor_config.json`) get one built from their config (which then still carried `max_history`) and tokenizer."""
    if (Path(model_dir) / "processor_config.json").is_file():
        return CL3MRecProcessor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return CL3MRecProcessor.from_model_config(tokenizer, config, max_history=getattr(config, "max_history", 10))


class CL3MRecScorer:
    """Score rows with a CL3M-Rec model.

    Args:
        model: a `CL3MRecModel` (or a PEFT wrapper of one).
        processor: its `CL3MRecProcessor` (template, placeholders, history length); e.g.
            `CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=False)` for the text prompt.
        batch_size: rows per forward pass.
        use_bf16: run under bf16 autocast when supported (about 3x faster on CPU); False for exact fp32.
        show_progress: tqdm progress bar.
        share_prefix: batch the rows of one user context (same user and history) together and run their shared
            prompt prefix once (`CL3MRecModel.forward` with `prefix_input_ids`); same scores. False: whole prompts.
            Default: True, False with `compile`.
        compile: run the decoder layers through `torch.compile` (`trainers.training.stages.compiled_decoder_layers`;
            whole prompts, so not with `share_prefix`). On 2 Xeon cores with AMX 1.3-1.7x faster than the eager scorer,
            on an AMD EPYC no faster (README, Performance); scores agree with the eager ones to bf16 rounding (not
            bit for bit). Needs a C++ compiler on CPUs.
    """

    def __init__(
        self,
        model,
        processor: CL3MRecProcessor,
        batch_size: int = 16,
        use_bf16: bool = True,
        show_progress: bool = True,
        share_prefix: bool | None = None,
        compile: bool = False,
    ):
        if compile and share_prefix:
            raise ValueError("CL3MRecScorer: compile scores whole prompts; it cannot share prefixes (share_prefix)")
        share_prefix = not compile if share_prefix is None else share_prefix
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.use_bf16 = use_bf16
        self.show_progress = show_progress
        self.share_prefix = share_prefix
        self.compile = compile
        if compile:
            require_cpp_compiler(next(model.parameters()).device)
        base_model = unwrap_peft(model)
        self._decoder_config = base_model.get_decoder().config
        self.collator = CL3MRecCollator(processor, base_model.shared_prefix_parts if share_prefix else None)
        self.last_rows_per_second = None

    @classmethod
    def from_pretrained(cls, model_dir, device: str | None = None, attn_implementation: str = "sdpa", **kwargs):
        """Load a saved model + processor from `model_dir` (registered classes; no remote code needed)."""
        model = load_complete(CL3MRecModel, model_dir, "--model", attn_implementation=attn_implementation)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), load_processor(model_dir, model.config), **kwargs)

    @torch.inference_mode()
    def score(self, dataset) -> np.ndarray:
        """Scores `[len(dataset)]` (float64) in the dataset's row order; logs rows/second."""
        tokenized = tokenize_dataset(dataset, self.processor)
        groups = context_groups(tokenized) if self.share_prefix else None
        batches = length_grouped_batches(tokenized["length"], self.batch_size, groups)
        device = next(self.model.parameters()).device
        use_bf16 = self.use_bf16 and bf16_autocast_supported(device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
        rows = tokenized.to_list()
        scores = np.empty(len(rows), dtype=np.float64)
        start = time.perf_counter()
        attention = grouped_kv_attention(self._decoder_config, device) if self.share_prefix else nullcontext()
        weights = frozen_decoder_weights_in(self.model, torch.bfloat16 if use_bf16 else None)
        compiled = compiled_decoder_layers(self.model) if self.compile else nullcontext()
        with autocast, attention, weights, compiled:
            for indices in tqdm(batches, desc="Scoring", disable=not self.show_progress):
                batch = self.collator([rows[i] for i in indices])
                batch.pop("labels", None)
                outputs = self.model(**{name: tensor.to(device) for name, tensor in batch.items()})
                scores[indices] = outputs.logits.float().cpu().numpy()
        elapsed = time.perf_counter() - start
        self.last_rows_per_second = len(rows) / elapsed if elapsed > 0 else float("inf")
        logger.info("scored %d rows in %.1f s (%.1f rows/s)", len(rows), elapsed, self.last_rows_per_second)
        return scores
