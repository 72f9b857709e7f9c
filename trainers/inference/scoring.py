"""Scorers: one score per row of a ``datasets.Dataset``, for any saved cl3mrec model directory."""

from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
from datasets import Dataset

from modeling_cl3mrec.modeling_cf import CFRecModel
from trainers.cf_training import dataset_to_tensors, predict
from trainers.model_dirs import check_weights, load_complete, read_model_config


class Scorer(Protocol):
    """Anything with ``score(dataset) -> np.ndarray[float] [N]`` (row order kept)."""

    def score(self, dataset: Dataset) -> np.ndarray: ...


class CFScorer:
    """Scores rows with a saved :class:`CFRecModel` (logit of "liked"), in batches of ``batch_size``."""

    def __init__(self, model: CFRecModel, batch_size: int = 4096):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, model_dir, batch_size: int = 4096) -> "CFScorer":
        return cls(load_complete(CFRecModel, model_dir, "--model"), batch_size=batch_size)

    @torch.no_grad()
    def score(self, dataset: Dataset) -> np.ndarray:
        """Logits ``[N]`` for ``dataset`` rows (schema of ``data_scripts.schema``), row order kept."""
        data = dataset_to_tensors(dataset, self.model.config.max_history)
        return predict(self.model, data, self.batch_size).astype(np.float64)


def load_scorer(model_dir, batch_size: Optional[int] = None, compile: bool = False) -> Scorer:
    """Pick the scorer from ``model_dir/config.json``'s ``model_type``.

    ``cl3mrec_cf`` → :class:`CFScorer`; ``cl3mrec`` → ``trainers.inference.llm_scoring.CL3MRecScorer`` (imported
    lazily), with ``compile`` its ``torch.compile`` option (a CF model has no decoder to compile: refused).
    """
    config_path = Path(model_dir) / "config.json"
    model_type = read_model_config(model_dir, "--model").get("model_type")
    if model_type not in ("cl3mrec_cf", "cl3mrec"):
        raise ValueError(f"{config_path}: model_type {model_type!r} is not a cl3mrec model ('cl3mrec_cf' or 'cl3mrec')")
    check_weights(model_dir, "--model")
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    if model_type == "cl3mrec_cf":
        if compile:
            raise ValueError(f"{model_dir}: compile applies to LLM models; a CF model has no decoder to compile")
        return CFScorer.from_pretrained(model_dir, **kwargs)
    from trainers.inference.llm_scoring import CL3MRecScorer

    return CL3MRecScorer.from_pretrained(model_dir, compile=compile, **kwargs)


def model_id_space(model_dir) -> tuple[int | None, int | None]:
    """``(num_users, num_items)`` of the CF tables in ``model_dir``'s config; ``(None, None)`` for a text-only
    model, whose scores do not read ids."""
    config = read_model_config(model_dir, "--model")
    cf_config = config if config.get("model_type") == "cl3mrec_cf" else config.get("cf_config") or {}
    return cf_config.get("num_users"), cf_config.get("num_items")
