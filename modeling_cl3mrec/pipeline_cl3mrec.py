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

import numbers
from collections.abc import Iterable, Mapping, Sequence

import torch
from transformers import Pipeline

TASK = "cl3mrec-scoring"
ECHOED_FIELDS = ("user_id", "item_id", "title")


def _check_count(name: str, value) -> None:
    """Refuse a ``top_k`` / ``batch_size`` that is not an integer >= 1 (``True``, ``"2"`` and ``1.5`` included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


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

        Raises:
            ValueError / TypeError: one message naming the record (or candidate) and the field, for a missing field,
                a title that is not a string, a history that is not a list, an id that is not an integer or not a
                row of the model's tables (0 is padding), or a ``top_k`` / ``batch_size`` that is not an integer >= 1.
        """
        if candidates is None and top_k is not None:
            raise ValueError("top_k needs candidates")
        if candidates is not None and not isinstance(inputs, Mapping):
            raise ValueError("ranking takes one user record (a dict) and a list of candidates")
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Iterable):
            raise TypeError(f"inputs must be a record (a dict) or a list of records, got {type(inputs).__name__}")
        if top_k is not None:
            _check_count("top_k", top_k)
        batch_size = (self._batch_size or 32) if batch_size is None else batch_size
        _check_count("batch_size", batch_size)
        single = isinstance(inputs, Mapping) and candidates is None
        if candidates is not None:
            records = self._candidate_records(inputs, candidates)
        else:
            records = [inputs] if single else list(inputs)
        if not records:
            raise ValueError("nothing to score: no records / candidates given")
        rank = candidates is not None
        # What errors call each record; in ranking the fields left to check are the user record's, but a candidate's
        # item_id is its own.
        names = ["the user record"] * len(records) if rank else [f"record {index}" for index in range(len(records))]
        item_names = [f"candidate {index}" for index in range(len(records))] if rank else names
        features = self.processor.encode_rows(records, names)  # checks each record
        self._check_id_ranges(records, names, item_names)
        encoded = {"records": records, "features": features}
        outputs = super().__call__(encoded, chunk_size=batch_size, rank=rank, top_k=top_k)
        return outputs[0] if single else outputs

    def _candidate_records(self, user_record: Mapping, candidates) -> list[dict]:
        """The records of ranking: ``user_record`` with each candidate's ``item_id`` and ``title``."""
        if isinstance(candidates, (str, bytes, Mapping)) or not isinstance(candidates, Iterable):
            raise TypeError(f"candidates must be a list of dicts with item_id and title, got {candidates!r}")
        candidates = list(candidates)
        for index, candidate in enumerate(candidates):
            if not isinstance(candidate, Mapping) or not {"item_id", "title"} <= candidate.keys():
                raise ValueError(f"candidate {index} must be a dict with item_id and title, got {candidate!r}")
        return self.processor.candidate_records(
            user_record, [c["item_id"] for c in candidates], [c["title"] for c in candidates]
        )

    def _check_id_ranges(self, records: list, names: list[str], item_names: list[str]) -> None:
        """For a model with a CF encoder, check that the ids of ``records`` (integers, checked when encoded) are
        rows of the model's tables other than padding row 0: an id of another data set, or a 0-based id, would
        score some other user or item (history ids too, which some encoders do not read). Errors call record ``i``
        ``names[i]``, and ``item_names[i]`` for its ``item_id``."""
        cf_config = self.model.config.cf_config
        if cf_config is None or not self.processor.with_ids:  # a text prompt reads no ids
            return
        for record, where, item_where in zip(records, names, item_names):
            checks = [("user_id", record["user_id"], cf_config.num_users, where)]
            checks.append(("item_id", record["item_id"], cf_config.num_items, item_where))
            for position, item_id in enumerate(record["history_item_ids"]):
                checks.append((f"history_item_ids[{position}]", item_id, cf_config.num_items, where))
            for field, value, size, label in checks:
                if not 1 <= value < size:
                    raise ValueError(
                        f"{label}: {field} {value} is outside the model's ids 1..{size - 1} (0 is padding); "
                        "ids must be those of the model's training data"
                    )

    def _sanitize_parameters(self, chunk_size=None, rank=None, top_k=None):
        preprocess = {} if chunk_size is None else {"chunk_size": chunk_size}
        postprocess = {key: value for key, value in (("rank", rank), ("top_k", top_k)) if value is not None}
        return preprocess, {}, postprocess

    def preprocess(self, inputs: dict, chunk_size: int = 32) -> dict:
        """``{"records", "batches"}``: the records and their model inputs (``inputs["features"]``, encoded by the
        processor), ``chunk_size`` rows per padded batch."""
        features = inputs["features"]
        starts = range(0, len(features), chunk_size)
        # Left padding whatever the saved processor says: the model reads the score at position -1.
        pad = self.processor.pad
        batches = [dict(pad(features[start : start + chunk_size], padding_side="left")) for start in starts]
        return {"records": inputs["records"], "batches": batches}

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
