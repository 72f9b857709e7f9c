"""Batch scoring of a saved (or in-memory) CL3M-Rec model: one float per dataset row, row order kept."""

import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from modeling_cl3mrec import CL3MRecModel

from .prompt_dataset import CL3MRecCollator, length_grouped_batches, tokenize_dataset

logger = logging.getLogger(__name__)


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is usable on `device` (CPU: always with torch >= 2; CUDA: if the GPU supports it)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


class CL3MRecScorer:
    """Score rows with a CL3M-Rec model.

    Args:
        model: a `CL3MRecModel` (or a PEFT wrapper of one).
        tokenizer: its tokenizer (left padding, placeholder tokens added).
        batch_size: rows per forward pass.
        use_bf16: run under bf16 autocast when supported (about 3x faster on CPU); False for exact fp32.
        with_ids: use the ID prompt (`prompt_template` + CF placeholders); default: whether the model has CF.
        show_progress: tqdm progress bar.
    """

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        use_bf16: bool = True,
        with_ids: bool | None = None,
        show_progress: bool = True,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.batch_size = batch_size
        self.use_bf16 = use_bf16
        self.with_ids = self.config.use_cf if with_ids is None else with_ids
        self.show_progress = show_progress
        self.collator = CL3MRecCollator(tokenizer, self.config.max_history, with_ids=self.with_ids)
        self.last_rows_per_second = None

    @classmethod
    def from_pretrained(cls, model_dir, device: str | None = None, attn_implementation: str = "sdpa", **kwargs):
        """Load a saved model + tokenizer from `model_dir` (registered classes; no remote code needed)."""
        model = CL3MRecModel.from_pretrained(model_dir, attn_implementation=attn_implementation)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = "left"
        return cls(model.to(device), tokenizer, **kwargs)

    @torch.inference_mode()
    def score(self, dataset) -> np.ndarray:
        """Scores `[len(dataset)]` (float64) in the dataset's row order; logs rows/second."""
        tokenized = tokenize_dataset(dataset, self.tokenizer, self.config, with_ids=self.with_ids)
        batches = length_grouped_batches(tokenized["length"], self.batch_size)
        device = next(self.model.parameters()).device
        use_bf16 = self.use_bf16 and bf16_autocast_supported(device)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
        rows = tokenized.to_list()
        scores = np.empty(len(rows), dtype=np.float64)
        start = time.perf_counter()
        with autocast:
            for indices in tqdm(batches, desc="Scoring", disable=not self.show_progress):
                batch = self.collator([rows[i] for i in indices])
                batch.pop("labels", None)
                outputs = self.model(**{name: tensor.to(device) for name, tensor in batch.items()})
                scores[indices] = outputs.logits.float().cpu().numpy()
        elapsed = time.perf_counter() - start
        self.last_rows_per_second = len(rows) / elapsed if elapsed > 0 else float("inf")
        logger.info("scored %d rows in %.1f s (%.1f rows/s)", len(rows), elapsed, self.last_rows_per_second)
        return scores
