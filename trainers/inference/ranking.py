"""Rank many candidate items for one user with a prefix-cached [`CL3MRecModel`].

Every candidate prompt of a user starts with the same tokens (instruction, history, user placeholder);
only the tail (title, item placeholder, question) changes. The ranker runs the shared prefix through the
decoder ONCE, keeps its key/value cache, and runs only the candidate suffixes, batched against copies of
that cache. Scores equal pair-by-pair scoring through `CL3MRecModel.forward` (tested to fp32 tolerance):

* prompts are rendered and tokenised by the model's `CL3MRecProcessor`, exactly as for pair-by-pair scoring
  (one record per candidate: the user's record with the candidate's id and title), and the prefix is the longest
  common *token* prefix of the candidates' prompts, cut before the first target-item placeholder, so
  tokeniser merges at the prefix/suffix boundary cannot change a token;
* placeholder embeddings come from the model's own `embed_inputs` on the full prompts, right-padded by the
  processor, with the user's (shared) history (token embeddings are position-wise, so slicing them into prefix
  and suffix is exact);
* suffixes are right-padded: with causal attention a real token never sees the padding after it, and the
  score is gathered at each row's last real position; positions continue from the prefix length, as the
  model's forward numbers real tokens from 0.

Speed: candidates are batched by suffix length (little padding); the prefix keys/values are broadcast views,
copied once per batch by the decoder's cache `cat`; on CPU, SDPA reads the grouped K/V heads directly instead
of repeating them over the prefix for every candidate (see `grouped_kv_attention`). Cost per user: one prefix forward +
`C` suffixes, against `C` full prompts pair by pair (about 4-5x fewer tokens with the ML-1M templates).
"""

import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from transformers import DynamicCache

from modeling_cl3mrec.modeling_cl3mrec import cache_from_layers, cache_layers, decoder_cache_kwarg
from modeling_cl3mrec.processing_cl3mrec import common_prefix_length

from ..llm_loading import unwrap_peft

logger = logging.getLogger(__name__)

_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextmanager
def grouped_kv_attention(config, device: torch.device):
    """On CPU with SDPA, let `scaled_dot_product_attention` read grouped K/V heads itself (`enable_gqa`).

    With a KV cache the suffix attention carries a mask, and transformers then copies every key/value head
    `num_attention_heads / num_key_value_heads` times (`repeat_kv`) over the whole cached prefix of every
    candidate: on CPU that copy costs about as much as the suffix forward itself. transformers exposes the
    switch only as the `TRANSFORMERS_SDPA_FORCE_GQA` environment variable, set here for the call and restored.
    CUDA keeps the default (there, GQA with a mask falls back to the math kernel).
    """
    if device.type != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    previous = os.environ.get(_FORCE_GQA)
    os.environ[_FORCE_GQA] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_FORCE_GQA]
        else:
            os.environ[_FORCE_GQA] = previous


class CandidateRanker:
    """Scores candidate items for one user, reusing the KV cache of the shared prompt prefix.

    Args:
        model: a `CL3MRecModel` (or a PEFT model wrapping one); put in eval mode, as `CL3MRecScorer` does.
        processor: the model's `CL3MRecProcessor` (it renders, tokenises and pads the candidate prompts).
        batch_size: candidates per suffix forward.
        autocast_dtype: e.g. `torch.bfloat16` to run under autocast; `None` runs in the weights' dtype.
    """

    def __init__(self, model, processor, batch_size=32, autocast_dtype=None):
        self.model = unwrap_peft(model).eval()
        self.processor = processor
        if batch_size < 1:
            raise ValueError(f"CandidateRanker: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.decoder = self.model.get_decoder()
        self._cache_arg = decoder_cache_kwarg(self.decoder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _embed(self, features: list[dict]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoded candidate prompts → input embeddings `[c, T, H]` (right-padded) with placeholders filled by
        the model, and the CF logits `[c]` its residual score fusion adds (None without fusion)."""
        batch = self.processor.pad(features, padding_side="right").to(self.device)
        embeds, cf_outputs = self.model.embed_inputs(
            batch["input_ids"], batch.get("user_ids"), batch.get("item_ids"), batch.get("history_item_ids")
        )
        return embeds, cf_outputs["cf_logits"]

    def _decode(self, embeds: torch.Tensor, start: int, cache: DynamicCache) -> torch.Tensor:
        """Run the decoder on `embeds [c, S, H]` at positions `start..start+S-1`; returns hidden `[c, S, H]`."""
        positions = torch.arange(start, start + embeds.shape[1], device=embeds.device).unsqueeze(0)
        with grouped_kv_attention(self.decoder.config, embeds.device):
            outputs = self.decoder(
                inputs_embeds=embeds, position_ids=positions, use_cache=True, **{self._cache_arg: cache}
            )
        return outputs.last_hidden_state

    @torch.inference_mode()
    def score(self, user_row: Mapping, candidate_item_ids, candidate_titles) -> np.ndarray:
        """Scores `[C]` of the candidates for the user in `user_row` (a dataset row: `user_id`,
        `history_item_ids`, `history_titles`, ...), in candidate order."""
        records = self.processor.candidate_records(user_row, list(candidate_item_ids), list(candidate_titles))
        if not records:
            raise ValueError(f"rank: no candidates for user {user_row.get('user_id')}")
        features = self.processor.encode_rows(records)
        ids = [feature["input_ids"] for feature in features]
        prefix_len = common_prefix_length(ids, self.processor.prefix_stop_ids(self.model.shared_prefix_parts))
        scores = np.empty(len(ids), dtype=np.float64)
        # Candidates of similar suffix length share a batch, so little right padding is computed.
        order = np.argsort([len(seq) for seq in ids], kind="stable")
        prefix_kv = None
        with self._autocast():
            for start in range(0, len(ids), self.batch_size):
                chunk = order[start : start + self.batch_size]
                chunk_ids = [ids[i] for i in chunk]
                embeds, cf_logits = self._embed([features[i] for i in chunk])  # [c, T, H], [c] or None
                if prefix_kv is None:
                    prefix_kv = self._prefix_cache(embeds[:1, :prefix_len])
                count = embeds.shape[0]
                cache = self._expanded_cache(prefix_kv, count)
                hidden = self._decode(embeds[:, prefix_len:], prefix_len, cache)  # [c, S, H]
                last = torch.tensor([len(seq) - prefix_len - 1 for seq in chunk_ids], device=hidden.device)
                answer_hidden = hidden[torch.arange(count, device=hidden.device), last]  # [c, H]
                scores[chunk] = self.model.answer_logits(answer_hidden, cf_logits)[0].cpu().numpy()
        logger.debug("ranked %d candidates: prefix %d of up to %d tokens", len(ids), prefix_len, max(map(len, ids)))
        return scores

    def _prefix_cache(self, prefix_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (keys, values) `[1, kv_heads, P, head_dim]` of the shared prefix (empty prefix: no layers)."""
        if prefix_embeds.shape[1] == 0:
            return []
        cache = DynamicCache(config=self.decoder.config)
        self._decode(prefix_embeds, 0, cache)
        return cache_layers(cache)

    def _expanded_cache(self, prefix_kv, count: int) -> DynamicCache:
        """A cache holding the prefix keys/values broadcast over `count` candidates (stride-0 views: the decoder's
        `cat` with the suffix makes the only copy)."""
        return cache_from_layers(
            self.decoder.config, [(k.expand(count, -1, -1, -1), v.expand(count, -1, -1, -1)) for k, v in prefix_kv]
        )

    def rank(self, user_row: Mapping, candidate_item_ids, candidate_titles, k: int = 10):
        """Top-`k` candidates: `(top_item_ids [k], top_scores [k], all_scores [C])`, best first."""
        if k < 1:
            raise ValueError(f"rank: k must be >= 1, got {k}")
        scores = self.score(user_row, candidate_item_ids, candidate_titles)
        order = np.argsort(-scores, kind="stable")[:k]
        return np.asarray(candidate_item_ids, dtype=np.int64)[order], scores[order], scores


def rank(model, processor, user_row, candidate_item_ids, candidate_titles, k=10, batch_size=32, **ranker_kwargs):
    """Functional form of [`CandidateRanker.rank`]: `(top_item_ids, top_scores, all_scores)`."""
    ranker = CandidateRanker(model, processor, batch_size=batch_size, **ranker_kwargs)
    return ranker.rank(user_row, candidate_item_ids, candidate_titles, k=k)


__all__ = ["CandidateRanker", "common_prefix_length", "grouped_kv_attention", "rank"]
