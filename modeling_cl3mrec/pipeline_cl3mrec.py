"""The ``cl3mrec-scoring`` pipeline: score (user, item) records or rank candidate items for one user.

Saved with a model as a custom task (``custom_pipelines`` in ``config.json`` + this file), so that

    recommender = pipeline("cl3mrec-scoring", model=model_dir, trust_remote_code=True)  # add device=0 for CUDA
    recommender({"user_id": 7, "item_id": 6, "title": "Heat (1995)", "history_item_ids": [1, 2],
                 "history_titles": ["Toy Story (1995)", "Fargo (1996)"]})
    # {'user_id': 7, 'item_id': 6, 'title': 'Heat (1995)', 'score': 1.42}   (a logit)
    recommender(user_record, candidates=[{"item_id": 6, "title": "Heat (1995)"}, ...], top_k=5)
    # [{'item_id': 6, 'title': 'Heat (1995)', 'score': 1.42}, ...]  best first

works without this repository. Inputs are built by the model's `CL3MRecProcessor` (loaded with
``AutoProcessor``); the score is the model's ``logits`` (``sigmoid(score)`` = P(the user likes the item)).
Ranking scores every candidate prompt in full, batched; the prefix-cached ranker of the cl3mrec package
(``trainers.inference.ranking``) gives the same scores faster.
"""

from collections.abc import Mapping, Sequence

import torch
from transformers import Pipeline

TASK = "cl3mrec-scoring"
ECHOED_FIELDS = ("user_id", "item_id", "title")


class CL3MRecScoringPipeline(Pipeline):
    """Scores records with a `CL3MRecModel`; see the module docstring for inputs and outputs."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __call__(
        self,
        inputs: Mapping | Sequence[Mapping],
        candidates: Sequence[Mapping] | None = None,
        top_k: int | None = None,
        batch_size: int | None = None,
    ):
        """Score ``inputs`` (one record → one dict; a list → a list in the same order), or, with ``candidates``
        (dicts with ``item_id`` and ``title``), rank them for the user of the record ``inputs``.

        Args:
            inputs: record(s) with ``history_titles`` and ``title`` (+ ``user_id``, ``item_id``,
                ``history_item_ids`` for a model with CF placeholders); for ranking, the user's record (its
                ``item_id`` / ``title`` are ignored).
            candidates: items to rank for the user in ``inputs``.
            top_k: keep the ``top_k`` best candidates (default: all).
            batch_size: prompts per forward pass (default: the pipeline's ``batch_size``, else 32).
        """
        if candidates is None and top_k is not None:
            raise ValueError("top_k needs candidates")
        if candidates is not None and not isinstance(inputs, Mapping):
            raise ValueError("ranking takes one user record (a dict) and a list of candidates")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        batch_size = batch_size or self._batch_size or 32
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        single = isinstance(inputs, Mapping) and candidates is None
        if candidates is not None:
            records = self.processor.candidate_records(
                inputs, [c["item_id"] for c in candidates], [c["title"] for c in candidates]
            )
        else:
            records = [inputs] if single else list(inputs)
        if not records:
            raise ValueError("nothing to score: no records / candidates given")
        rank = candidates is not None
        outputs = super().__call__({"records": records}, chunk_size=batch_size, rank=rank, top_k=top_k)
        return outputs[0] if single else outputs

    def _sanitize_parameters(self, chunk_size=None, rank=None, top_k=None):
        preprocess = {} if chunk_size is None else {"chunk_size": chunk_size}
        postprocess = {key: value for key, value in (("rank", rank), ("top_k", top_k)) if value is not None}
        return preprocess, {}, postprocess

    def preprocess(self, inputs: dict, chunk_size: int = 32) -> dict:
        """``{"records", "batches"}``: the records and their model inputs, ``chunk_size`` rows per padded batch."""
        records = inputs["records"]
        starts = range(0, len(records), chunk_size)
        # Left padding whatever the saved processor says: the model reads the score at position -1.
        batches = [dict(self.processor(records[start : start + chunk_size], padding_side="left")) for start in starts]
        return {"records": records, "batches": batches}

    def _forward(self, model_inputs: dict) -> dict:
        """Scores ``[N]`` (float32) of every record, one forward pass per batch."""
        scores = [self.model(**batch).logits.float() for batch in model_inputs["batches"]]
        return {"records": model_inputs["records"], "scores": torch.cat(scores)}

    def postprocess(self, model_outputs: dict, rank: bool = False, top_k: int | None = None) -> list[dict]:
        """One dict per record (``user_id`` / ``item_id`` / ``title`` where given, ``score``); ranked: the
        candidates best first (``item_id``, ``title``, ``score``), ``top_k`` of them."""
        fields = ("item_id", "title") if rank else ECHOED_FIELDS
        results = [
            {**{key: record[key] for key in fields if key in record}, "score": score}
            for record, score in zip(model_outputs["records"], model_outputs["scores"].tolist())
        ]
        if rank:
            results = sorted(results, key=lambda result: -result["score"])[:top_k]
        return results


__all__ = ["CL3MRecScoringPipeline", "TASK"]
