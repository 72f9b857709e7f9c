"""Rank many candidate items for one user with a prefix-cached [`CL3MRecModel`].

Every candidate prompt of a user starts with the same tokens (instruction, history, user placeholder);
only the tail (title, item placeholder, question) changes. The ranker runs the shared prefix through the
decoder ONCE, keeps its key/value cache, and runs only the candidate suffixes, batched against copies of
that cache. Scores equal pair-by-pair scoring through `CL3MRecModel.forward` (tested to fp32 tolerance):

* prompts are rendered and tokenised exactly as for pair-by-pair scoring, and the prefix is the longest
  common *token* prefix of the candidates' prompts, cut before the first target-item placeholder, so
  tokeniser merges at the prefix/suffix boundary cannot change a token;
* placeholder embeddings come from the model's own `embed_inputs` on the full prompts (token embeddings
  are position-wise, so slicing them into prefix and suffix is exact);
* suffixes are right-padded: with causal attention a real token never sees the padding after it, and the
  score is gathered at each row's last real position; positions continue from the prefix length, as the
  model's forward numbers real tokens from 0.

Speed: candidates are batched by suffix length (little padding); the prefix keys/values are broadcast views,
copied once per batch by the decoder's cache `cat`; on CPU, SDPA reads the grouped K/V heads directly instead
of repeating them over the prefix for every candidate (see `_sdpa_gqa`). Cost per user: one prefix forward +
`C` suffixes, against `C` full prompts pair by pair (about 4-5x fewer tokens with the ML-1M templates).
"""

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from data_scripts.prompts import render_prompt

from .prompt_dataset import recent_history

logger = logging.getLogger(__name__)

_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


def _unwrap(model):
    """The `CL3MRecModel` inside a PEFT wrapper (LoRA layers stay active: they are injected in place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _cache_kwarg(decoder) -> str:
    """Name of the decoder's cache argument: `cache` (transformers >= 5.2x) or `past_key_values`."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@contextmanager
def _sdpa_gqa(config, device: torch.device):
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


def common_prefix_length(sequences: Sequence[Sequence[int]], stop_token_id: int | None = None) -> int:
    """Length of the longest common prefix of token-id sequences, cut before `stop_token_id` and kept
    at least one token shorter than the shortest sequence (every candidate needs a suffix token)."""
    if not sequences:
        raise ValueError("common_prefix_length needs at least one sequence")
    first = np.asarray(sequences[0])
    length = min(len(seq) for seq in sequences) - 1
    for seq in sequences[1:]:
        differs = np.flatnonzero(first[:length] != np.asarray(seq[:length]))
        if differs.size:
            length = int(differs[0])
    if stop_token_id is not None:
        stops = np.flatnonzero(first[:length] == stop_token_id)
        if stops.size:
            length = int(stops[0])
    return max(length, 0)


class CandidateRanker:
    """Scores candidate items for one user, reusing the KV cache of the shared prompt prefix.

    Args:
        model: a `CL3MRecModel` (or a PEFT model wrapping one); put in eval mode, as `CL3MRecScorer` does.
        tokenizer: the tokenizer holding the placeholder tokens.
        template: prompt template text; defaults to `model.config.prompt_template` (CF model) or
            `model.config.text_prompt_template` (text-only model).
        batch_size: candidates per suffix forward.
        autocast_dtype: e.g. `torch.bfloat16` to run under autocast; `None` runs in the weights' dtype.
        tokenize: `list[str] -> list[list[int]]`; defaults to `tokenizer(texts, add_special_tokens=True)`,
            the call `trainers.prompt_dataset.tokenize_dataset` makes.
    """

    def __init__(self, model, tokenizer, template=None, batch_size=32, autocast_dtype=None, tokenize=None):
        self.model = _unwrap(model).eval()
        self.tokenizer = tokenizer
        config = self.model.config
        if template is None:
            template = config.prompt_template if config.use_cf else config.text_prompt_template
        if not template:
            raise ValueError("CandidateRanker: no prompt template given and model.config has none")
        if batch_size < 1:
            raise ValueError(f"CandidateRanker: batch_size must be >= 1, got {batch_size}")
        self.template = template
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self._tokenize = tokenize or (lambda texts: tokenizer(texts, add_special_tokens=True)["input_ids"])
        self.decoder = self.model.get_decoder()
        self._cache_arg = _cache_kwarg(self.decoder)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _prompt_ids(self, user_row: Mapping, candidate_item_ids, candidate_titles) -> list[list[int]]:
        """Token ids of each candidate's full prompt (the user's row with the candidate's id and title)."""
        config = self.model.config
        prompts = [
            render_prompt(
                self.template,
                {**user_row, "item_id": int(item_id), "title": title},
                max_history=config.max_history,
                tokens_per_entity=config.tokens_per_entity,
                with_history_tokens=bool(config.use_history_embeddings),
            )
            for item_id, title in zip(candidate_item_ids, candidate_titles)
        ]
        return self._tokenize(prompts)

    def _cf_inputs(self, user_row: Mapping, item_ids: list[int]):
        """`user_ids [c]`, `item_ids [c]`, `history_item_ids [c, L]` (as `CL3MRecCollator` builds them),
        or three Nones for a text-only model."""
        if not self.model.config.use_cf:
            return None, None, None
        history = [int(i) for i in recent_history(user_row["history_item_ids"], self.model.config.max_history)]
        count = len(item_ids)
        device = self.device
        user_ids = torch.full((count,), int(user_row["user_id"]), dtype=torch.long, device=device)
        items = torch.tensor(item_ids, dtype=torch.long, device=device)
        history_ids = torch.tensor([history or [0]], dtype=torch.long, device=device).expand(count, -1)
        return user_ids, items, history_ids

    def _embed(self, ids: list[list[int]], user_row: Mapping, item_ids: list[int]) -> torch.Tensor:
        """Right-padded full prompts → input embeddings `[c, T, H]` with placeholders filled by the model."""
        width = max(len(seq) for seq in ids)
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long, device=self.device)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        user_ids, items, history_ids = self._cf_inputs(user_row, item_ids)
        embeds, _ = self.model.embed_inputs(input_ids, user_ids, items, history_ids)
        return embeds

    def _decode(self, embeds: torch.Tensor, start: int, cache: DynamicCache) -> torch.Tensor:
        """Run the decoder on `embeds [c, S, H]` at positions `start..start+S-1`; returns hidden `[c, S, H]`."""
        positions = torch.arange(start, start + embeds.shape[1], device=embeds.device).unsqueeze(0)
        with _sdpa_gqa(self.decoder.config, embeds.device):
            outputs = self.decoder(
                inputs_embeds=embeds, position_ids=positions, use_cache=True, **{self._cache_arg: cache}
            )
        return outputs.last_hidden_state

    @torch.inference_mode()
    def score(self, user_row: Mapping, candidate_item_ids, candidate_titles) -> np.ndarray:
        """Scores `[C]` of the candidates for the user in `user_row` (a dataset row: `user_id`,
        `history_item_ids`, `history_titles`, ...), in candidate order."""
        candidate_item_ids = [int(i) for i in candidate_item_ids]
        candidate_titles = list(candidate_titles)
        if len(candidate_item_ids) != len(candidate_titles):
            raise ValueError(
                f"rank: {len(candidate_item_ids)} candidate_item_ids but {len(candidate_titles)} candidate_titles"
            )
        if not candidate_item_ids:
            raise ValueError(f"rank: no candidates for user {user_row.get('user_id')}")
        ids = self._prompt_ids(user_row, candidate_item_ids, candidate_titles)
        stop = self.model.config.item_token_id if self.model.config.use_cf else None
        prefix_len = common_prefix_length(ids, stop_token_id=stop)
        scores = np.empty(len(ids), dtype=np.float64)
        # Candidates of similar suffix length share a batch, so little right padding is computed.
        order = np.argsort([len(seq) for seq in ids], kind="stable")
        prefix_kv = None
        with self._autocast():
            for start in range(0, len(ids), self.batch_size):
                chunk = order[start : start + self.batch_size]
                chunk_ids = [ids[i] for i in chunk]
                embeds = self._embed(chunk_ids, user_row, [candidate_item_ids[i] for i in chunk])  # [c, T, H]
                if prefix_kv is None:
                    prefix_kv = self._prefix_cache(embeds[:1, :prefix_len])
                count = embeds.shape[0]
                cache = self._expanded_cache(prefix_kv, count)
                hidden = self._decode(embeds[:, prefix_len:], prefix_len, cache)  # [c, S, H]
                last = torch.tensor([len(seq) - prefix_len - 1 for seq in chunk_ids], device=hidden.device)
                answer_hidden = hidden[torch.arange(count, device=hidden.device), last]  # [c, H]
                scores[chunk] = self.model.answer_logits(answer_hidden)[0].cpu().numpy()
        logger.debug("ranked %d candidates: prefix %d of up to %d tokens", len(ids), prefix_len, max(map(len, ids)))
        return scores

    def _prefix_cache(self, prefix_embeds: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer (keys, values) `[1, kv_heads, P, head_dim]` of the shared prefix (empty prefix: no layers)."""
        if prefix_embeds.shape[1] == 0:
            return []
        cache = DynamicCache(config=self.decoder.config)
        self._decode(prefix_embeds, 0, cache)
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _expanded_cache(self, prefix_kv, count: int) -> DynamicCache:
        """A cache holding the prefix keys/values broadcast over `count` candidates.

        Plain `DynamicLayer`s get stride-0 views (the decoder's `cat` with the suffix makes the only copy);
        other layer types (sliding windows, ...) are filled through the constructor, which copies once more.
        """
        cache = DynamicCache(config=self.decoder.config)
        plain = all(type(layer) is DynamicLayer for layer in cache.layers)
        if prefix_kv and len(cache.layers) == len(prefix_kv) and plain:
            for layer, (keys, values) in zip(cache.layers, prefix_kv):
                layer.lazy_initialization(keys, values)
                layer.keys = keys.expand(count, -1, -1, -1)
                layer.values = values.expand(count, -1, -1, -1)
            return cache
        expanded = [(k.expand(count, -1, -1, -1), v.expand(count, -1, -1, -1)) for k, v in prefix_kv]
        return DynamicCache(ddp_cache_data=expanded or None, config=self.decoder.config)

    def rank(self, user_row: Mapping, candidate_item_ids, candidate_titles, k: int = 10):
        """Top-`k` candidates: `(top_item_ids [k], top_scores [k], all_scores [C])`, best first."""
        if k < 1:
            raise ValueError(f"rank: k must be >= 1, got {k}")
        scores = self.score(user_row, candidate_item_ids, candidate_titles)
        order = np.argsort(-scores, kind="stable")[:k]
        return np.asarray(candidate_item_ids, dtype=np.int64)[order], scores[order], scores


def rank(model, tokenizer, user_row, candidate_item_ids, candidate_titles, k=10, batch_size=32, **ranker_kwargs):
    """Functional form of [`CandidateRanker.rank`]: `(top_item_ids, top_scores, all_scores)`."""
    ranker = CandidateRanker(model, tokenizer, batch_size=batch_size, **ranker_kwargs)
    return ranker.rank(user_row, candidate_item_ids, candidate_titles, k=k)


__all__ = ["CandidateRanker", "common_prefix_length", "rank"]
