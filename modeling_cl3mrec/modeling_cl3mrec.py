"""CL3M-Rec / CoLLM-style recommender: an LLM reads a prompt in which CF embeddings fill placeholder tokens.

Shaped after transformers' LLaVA: a projector maps collaborative (CF) embeddings into the LLM token space,
placeholder tokens in ``input_ids`` are replaced with ``masked_scatter`` after checking the counts, and the
model answers "Yes"/"No". Only the answer position's hidden state meets the LM head, and only the
"Yes"/"No" rows of its weight (never full-vocabulary logits).

References: CoLLM (Zhang et al., arXiv 2310.19488); CL3M-Rec (contrastive alignment of CF and language views).

Cold and unknown ids are the CF encoder's business (see ``collaborative_encoders.py``): in-range ids unseen in
training map to row 0 (mean of warm rows); out-of-range ids raise a ``ValueError`` naming the id and table size.
"""

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer
from transformers import initialization as init
from transformers.utils import ModelOutput

from .collaborative_encoders import build_collaborative_encoder, init_cf_weights
from .configuration_cl3mrec import CL3MRecConfig


PROMPT_PARTS = ("user", "item", "history")


def decoder_cache_kwarg(decoder: nn.Module) -> str:
    """Name of a decoder's KV-cache argument: `cache` (newer transformers 5.x) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer `(keys, values)` `[B, kv_heads, T, head_dim]` of a filled cache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_from_layers(config, kv_pairs) -> DynamicCache:
    """A `DynamicCache` holding the given per-layer `(keys, values)` as they are (views and autograd kept).

    Plain `DynamicLayer`s take the tensors without a copy; other layer types (sliding windows, ...) are filled
    through the constructor, which copies them once."""
    cache = DynamicCache(config=config)
    kv_pairs = list(kv_pairs)
    if kv_pairs and len(cache.layers) == len(kv_pairs) and all(type(layer) is DynamicLayer for layer in cache.layers):
        for layer, (keys, values) in zip(cache.layers, kv_pairs):
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        return cache
    return DynamicCache(ddp_cache_data=kv_pairs or None, config=config)


@dataclass
class CL3MRecOutput(ModelOutput):
    """Output of [`CL3MRecModel`]. B = batch, H = LLM hidden size, d = CF hidden size.

    Args:
        loss: BCE-with-logits of `logits` against `labels` (only when labels are given).
        logits `[B]`: the recommendation score ("Yes" logit, or "Yes" − "No" per `config.answer_score`; plus
            fused with `cf_logits` under a `config.score_fusion`: see :class:`CL3MRecScoreFusion`).
        yes_logits / no_logits `[B]`: the two answer logits at the last prompt position.
        answer_hidden_states `[B, H]`: the decoder's (final-normed) hidden state at the last position.
        user_embeds / item_embeds `[B, H]`: projected CF embeddings (first token of each entity); None when
            the batch has no CF ids.
        cf_user_embeds / cf_item_embeds `[B, f]`: what the projector read: the CF embeddings (`f = d`), with the
            entity's bias term appended under `config.cf_features="embedding_bias"` (`f = d + 1`).
        cf_logits `[B]`: the CF model's own logit (only with a `config.score_fusion`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    yes_logits: torch.FloatTensor | None = None
    no_logits: torch.FloatTensor | None = None
    answer_hidden_states: torch.FloatTensor | None = None
    user_embeds: torch.FloatTensor | None = None
    item_embeds: torch.FloatTensor | None = None
    cf_user_embeds: torch.FloatTensor | None = None
    cf_item_embeds: torch.FloatTensor | None = None
    cf_logits: torch.FloatTensor | None = None


def cf_feature_size(config: CL3MRecConfig) -> int:
    """Width f of what the projector reads per entity: d, or d + 1 with `cf_features="embedding_bias"`."""
    return config.cf_config.hidden_size + (1 if config.cf_features == "embedding_bias" else 0)


def entity_features(
    encoder, user_ids, item_ids, history_item_ids, cf_features: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a projector reads for each row's user and item, `(users [B, f], items [B, f])`, from `encoder` (a
    `CollaborativeEncoder`): its embeddings `[B, d]`, with the bias term of each entity in the CF score appended
    under `cf_features="embedding_bias"` (f = d + 1)."""
    cf_user, cf_item = encoder.encode(user_ids, item_ids, history_item_ids)  # [B, d] each
    if cf_features != "embedding_bias":
        return cf_user, cf_item
    user_bias = encoder.user_bias_term(user_ids).unsqueeze(-1).to(cf_user.dtype)  # [B, 1]
    item_bias = encoder.item_bias_term(item_ids).unsqueeze(-1).to(cf_item.dtype)  # [B, 1]
    return torch.cat([cf_user, user_bias], dim=-1), torch.cat([cf_item, item_bias], dim=-1)


class CL3MRecProjector(nn.Module):
    """Linear(f, factor·d) → ReLU → Linear(factor·d, H·k): one CF feature vector to k LLM token embeddings.

    Shape:
        input `[..., f]` (f = :func:`cf_feature_size`) → output `[..., k, H]` (k = `tokens_per_entity`).
    """

    def __init__(self, config: CL3MRecConfig):
        super().__init__()
        cf_hidden = config.cf_config.hidden_size
        self.tokens_per_entity = config.tokens_per_entity
        self.hidden_size = config.text_config.hidden_size
        self.linear_1 = nn.Linear(cf_feature_size(config), config.projector_hidden_factor * cf_hidden)
        self.act = nn.ReLU()
        self.linear_2 = nn.Linear(config.projector_hidden_factor * cf_hidden, self.hidden_size * self.tokens_per_entity)

    def forward(self, cf_embeds: torch.Tensor) -> torch.Tensor:
        hidden = self.linear_2(self.act(self.linear_1(cf_embeds)))
        return hidden.view(*cf_embeds.shape[:-1], self.tokens_per_entity, self.hidden_size)


class CL3MRecScoreFusion(nn.Module):
    """Fusion of the two scorers: `score = answer logit + w · CF logit` (`config.score_fusion="residual"`), or
    `a · answer logit + w · CF logit` (`"weighted"`); `w` (`weight`) and `a` (`answer_weight`) are learned scalars
    initialised to 1.

    Shape:
        answer_logits `[B]`, cf_logits `[B]` → `[B]`.
    """

    def __init__(self, weighted: bool = False):
        """`weighted`: learn the answer's weight `a` too (`config.score_fusion="weighted"`)."""
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.answer_weight = nn.Parameter(torch.ones(1)) if weighted else None

    @classmethod
    def from_config(cls, config: CL3MRecConfig) -> "CL3MRecScoreFusion | None":
        """The fusion `config.score_fusion` asks for (None for `"none"`)."""
        return None if config.score_fusion == "none" else cls(weighted=config.score_fusion == "weighted")

    def forward(self, answer_logits: torch.Tensor, cf_logits: torch.Tensor) -> torch.Tensor:
        if self.answer_weight is not None:
            answer_logits = self.answer_weight * answer_logits
        return answer_logits + self.weight * cf_logits.to(answer_logits.dtype)


class CL3MRecAlignmentHeads(nn.Module):
    """CLIP-style linear heads mapping the two views of an entity into one alignment space of width p.

    The projected CF view lives where CF tokens enter the LLM (input-embedding space), the text view is the
    frozen LLM's mean-pooled last-layer state: two different spaces, so each gets its own head (Radford et al.,
    "Learning Transferable Visual Models From Natural Language Supervision", 2021). Used only by the
    contrastive loss; the recommendation score never passes through them.

    Shape:
        `cf_head`: `[..., H]` → `[..., p]`; `text_head`: `[..., H]` → `[..., p]` (p = `config.alignment_dim`).
    """

    def __init__(self, config: CL3MRecConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.cf_head = nn.Linear(hidden, config.alignment_dim, bias=False)
        self.text_head = nn.Linear(hidden, config.alignment_dim, bias=False)

    def forward(self, cf_view: torch.Tensor | None, text_view: torch.Tensor | None):
        """`(cf [..., p] or None, text [..., p] or None)` from `cf_view [..., H]` / `text_view [..., H]` (either may be None)."""
        return (
            None if cf_view is None else self.cf_head(cf_view.to(self.cf_head.weight.dtype)),
            None if text_view is None else self.text_head(text_view.to(self.text_head.weight.dtype)),
        )


class CL3MRecPreTrainedModel(PreTrainedModel):
    config_class = CL3MRecConfig
    config: CL3MRecConfig
    base_model_prefix = "cl3mrec"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # The decoder layers are collected from the language model in `post_init`.
    _no_split_modules = ["CL3MRecProjector"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise fresh projector and CF weights (the LLM uses its own `_init_weights`).

        transformers 5 re-runs this on load; `transformers.initialization` functions skip parameters flagged as
        loaded, and modules already initialised are skipped, so loaded projector / CF tables survive.
        """
        if getattr(module, "_is_hf_initialized", False):
            return
        cf_encoder = getattr(self, "cf_encoder", None)
        if cf_encoder is not None and any(module is cf_module for cf_module in cf_encoder.modules()):
            init_cf_weights(module, self.config.cf_config.initializer_range)
        elif isinstance(module, CL3MRecProjector):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            for linear in (module.linear_1, module.linear_2):
                init.normal_(linear.weight, mean=0.0, std=std)
                init.zeros_(linear.bias)
        elif isinstance(module, CL3MRecScoreFusion):
            for weight in (module.weight, module.answer_weight):
                if weight is not None:
                    init.ones_(weight)
        elif isinstance(module, CL3MRecAlignmentHeads):
            for linear in (module.cf_head, module.text_head):
                init.normal_(linear.weight, mean=0.0, std=linear.in_features**-0.5)


class CL3MRecModel(CL3MRecPreTrainedModel):
    """LLM + CF encoder + projector scoring "does the user like the item?" at the last prompt token.

    Attributes:
        language_model: `AutoModelForCausalLM.from_config(config.text_config)`.
        cf_encoder: `build_collaborative_encoder(config.cf_config)` (None for a text-only model).
        projector: [`CL3MRecProjector`] (None for a text-only model).
        score_fusion: [`CL3MRecScoreFusion`] with `config.score_fusion` `"residual"` / `"weighted"`, else None.
        alignment_heads: [`CL3MRecAlignmentHeads`] with `config.alignment_dim > 0`, else None.
    """

    def __init__(self, config: CL3MRecConfig):
        super().__init__(config)
        if config.yes_token_id is None:
            raise ValueError("CL3MRecConfig.yes_token_id must be set to build CL3MRecModel")
        if config.answer_score == "yes_minus_no" and config.no_token_id is None:
            raise ValueError("CL3MRecConfig.no_token_id must be set when answer_score='yes_minus_no'")
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        if config.use_cf:
            self.cf_encoder = build_collaborative_encoder(config.cf_config)
            self.projector = CL3MRecProjector(config)
        else:
            self.cf_encoder = None
            self.projector = None
        self.score_fusion = CL3MRecScoreFusion.from_config(config)
        self.alignment_heads = CL3MRecAlignmentHeads(config) if config.alignment_dim > 0 else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_decoder(self) -> nn.Module:
        """The LLM without its LM head (e.g. `LlamaModel`), whose output is already final-normed."""
        return self.language_model.get_decoder()

    def _placeholder_ids(self) -> list[int]:
        ids = [self.config.user_token_id, self.config.item_token_id, self.config.history_token_id]
        return [i for i in ids if i is not None]

    def _check_counts(self, mask: torch.Tensor, expected: torch.Tensor, kind: str) -> None:
        """Raise unless each row holds `expected[b]` placeholders of `kind` (mask `[B, T]`, expected `[B]`)."""
        found = mask.sum(dim=1)
        if not torch.equal(found, expected.to(found)):
            bad = int((found != expected.to(found)).nonzero()[0, 0])
            raise ValueError(
                f"{kind} placeholder tokens do not match {kind} embeddings in batch row {bad}: "
                f"tokens {int(found[bad])}, embeddings {int(expected[bad])} "
                f"(totals: tokens {int(found.sum())}, embeddings {int(expected.sum())})"
            )

    def cf_features(self, user_ids, item_ids, history_item_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """What the projector reads for each row's user and item: `(users [B, f], items [B, f])`
        (:func:`entity_features` of the model's CF encoder)."""
        return entity_features(self.cf_encoder, user_ids, item_ids, history_item_ids, self.config.cf_features)

    def item_features(self, item_ids: torch.LongTensor) -> torch.Tensor:
        """What the projector reads for items of any shape `[...]` → `[..., f]` (history items, item tables)."""
        embeds = self.cf_encoder.encode_items(item_ids)  # [..., d]
        if self.config.cf_features != "embedding_bias":
            return embeds
        return torch.cat([embeds, self.cf_encoder.item_bias_term(item_ids).unsqueeze(-1).to(embeds.dtype)], dim=-1)

    def embed_inputs(self, input_ids, user_ids, item_ids, history_item_ids, parts=PROMPT_PARTS, precomputed=None):
        """Token embeddings `[B, T, H]` with CF placeholders filled; also returns the CF outputs (a dict, per row).

        Public so that callers which run the decoder themselves (prefix-cached ranking) fill placeholders
        exactly as `forward` does.

        Args:
            parts: the placeholder kinds `input_ids` holds, each `tokens_per_entity` times per row (history: per
                kept history item): all of them for a whole prompt; a shared prompt prefix holds the user context
                (`("user", "history")`), its suffix the candidate (`("item",)`). Kinds not listed must be absent.
            precomputed: the rows' CF features and logits computed elsewhere (see `forward`), or None.
        """
        cf = self._cf_inputs(input_ids, user_ids, item_ids, history_item_ids, precomputed)
        return self._fill_placeholders(input_ids, cf, parts), self._cf_outputs(cf)

    def _cf_inputs(self, input_ids, user_ids, item_ids, history_item_ids, precomputed=None) -> dict | None:
        """What fills the placeholders of each row (None without CF ids): projected `user` / `item` tokens
        `[B, k, H]`, `history` tokens `[B, L, k, H]` (with `use_history_embeddings`) and the `kept` history slots
        `[B, L]`, plus the CF features and logits of :class:`CL3MRecOutput`. The CF encoder runs once per row, or
        not at all for the user / item features and logits in `precomputed` (`{"cf_user": [B, f], "cf_item": [B, f],
        "cf_logits": [B] or None}`)."""
        if user_ids is None or item_ids is None:
            return None
        if self.cf_encoder is None:
            raise ValueError("user_ids / item_ids were given but this CL3MRecModel has no cf_config (text-only)")
        if history_item_ids is None:
            history_item_ids = user_ids.new_zeros(input_ids.shape[0], 1)
        if precomputed is not None:
            cf_user, cf_item, cf_logits = precomputed["cf_user"], precomputed["cf_item"], precomputed["cf_logits"]
        else:
            cf_user, cf_item = self.cf_features(user_ids, item_ids, history_item_ids)  # [B, f] each
            cf_logits = None
            if self.score_fusion is not None:
                cf_logits = self.cf_encoder.score(user_ids, item_ids, history_item_ids)  # [B]
        history_tokens = None
        if self.config.use_history_embeddings:  # left-padded with 0: order of kept ids = prompt order
            history_tokens = self.projector(self.item_features(history_item_ids))  # [B, L, k, H]
        return {
            "user": self.projector(cf_user),
            "item": self.projector(cf_item),
            "history": history_tokens,
            "kept": history_item_ids != 0,
            "cf_user": cf_user,
            "cf_item": cf_item,
            "cf_logits": cf_logits,
        }

    @staticmethod
    def _cf_outputs(cf: dict | None) -> dict:
        """The CF fields of :class:`CL3MRecOutput` (all None without CF ids)."""
        if cf is None:
            return dict.fromkeys(("user_embeds", "item_embeds", "cf_user_embeds", "cf_item_embeds", "cf_logits"))
        return {
            "user_embeds": cf["user"][:, 0],
            "item_embeds": cf["item"][:, 0],
            "cf_user_embeds": cf["cf_user"],
            "cf_item_embeds": cf["cf_item"],
            "cf_logits": cf["cf_logits"],
        }

    def _fill_placeholders(self, input_ids, cf: dict | None, parts=PROMPT_PARTS, rows=None) -> torch.Tensor:
        """Token embeddings `[N, T, H]` of `input_ids [N, T]`, placeholders of the kinds in `parts` filled from
        `cf` (:meth:`_cf_inputs`); row n takes the CF inputs of row `rows[n]` (default: row n). Raises when a row's
        placeholder count differs from its tokens, or when a placeholder is left unfilled."""
        placeholder_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for token_id in self._placeholder_ids():
            placeholder_mask |= input_ids == token_id
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholder_mask, 0))
        if cf is None:
            if placeholder_mask.any():
                raise ValueError(
                    f"input_ids contain {int(placeholder_mask.sum())} CF placeholder tokens but user_ids / item_ids "
                    "were not given"
                )
            return inputs_embeds
        if rows is not None:
            cf = {key: value if value is None else value[rows] for key, value in cf.items()}
        count = input_ids.shape[0]
        k = self.config.tokens_per_entity
        fills = [("user", self.config.user_token_id, cf["user"], torch.full((count,), k))]
        fills.append(("item", self.config.item_token_id, cf["item"], torch.full((count,), k)))
        if cf["history"] is not None and "history" in parts:
            kept = cf["kept"]
            fills.append(("history", self.config.history_token_id, cf["history"][kept], kept.sum(dim=1).cpu() * k))
        filled = torch.zeros_like(placeholder_mask)
        for kind, token_id, tokens, expected in fills:
            mask = input_ids == token_id
            self._check_counts(mask.cpu(), expected if kind in parts else torch.zeros_like(expected), kind)
            if kind in parts:
                values = tokens.to(inputs_embeds.dtype).reshape(-1)
                inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1), values)
                filled |= mask
        if (placeholder_mask & ~filled).any():
            raise ValueError(
                f"input_ids contain {int((placeholder_mask & ~filled).sum())} placeholder tokens that nothing fills: "
                f"history placeholders without config.use_history_embeddings, or a kind outside parts={parts}"
            )
        return inputs_embeds

    @property
    def shared_prefix_parts(self) -> tuple[str, ...]:
        """Placeholder kinds a prompt prefix shared by all candidates of a user may hold: the user context, but not
        the user placeholder when the CF encoder's user view depends on the target item (DIN)."""
        if getattr(self.cf_encoder, "target_aware_user", False):
            return ("history",)
        return ("user", "history")

    def _gradient_free_columns(self, input_ids: torch.Tensor, all_if_none: bool = False) -> int:
        """Leading columns of `input_ids [B, T]` before any CF placeholder in any row (0 when gradients cannot skip
        them: no grad or gradient checkpointing). Without any placeholder: `T` if `all_if_none` (a shared prompt
        prefix, which is followed by the rows' suffixes), else 0."""
        if not torch.is_grad_enabled() or getattr(self.get_decoder(), "gradient_checkpointing", False):
            return 0
        placeholder_columns = torch.zeros_like(input_ids[0], dtype=torch.bool)
        for token_id in self._placeholder_ids():
            placeholder_columns |= (input_ids == token_id).any(dim=0)
        columns = placeholder_columns.nonzero()
        if columns.numel():
            return int(columns[0, 0])
        return input_ids.shape[1] if all_if_none else 0

    def _decode_into_cache(self, inputs_embeds, attention_mask, position_ids, cache, split: int, **kwargs):
        """Run the decoder on `inputs_embeds [B, T, H]` into `cache`: columns `[:split]` without an autograd graph,
        the rest with one; returns the last hidden states `[B, T - split, H]` of the second part (None if empty)."""
        decoder = self.get_decoder()
        cache_kwarg = {decoder_cache_kwarg(decoder): cache}
        if split > 0:
            with torch.no_grad():
                decoder(
                    inputs_embeds=inputs_embeds[:, :split],
                    attention_mask=attention_mask[:, :split],
                    position_ids=position_ids[:, :split],
                    use_cache=True,
                    **cache_kwarg,
                    **kwargs,
                )
        if split >= inputs_embeds.shape[1]:
            return None
        outputs = decoder(
            inputs_embeds=inputs_embeds[:, split:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, split:],
            use_cache=True,
            **cache_kwarg,
            **kwargs,
        )
        return outputs.last_hidden_state

    def answer_logits(
        self, answer_hidden: torch.Tensor, cf_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Scores from answer-position hidden states `[B, H]`: only the "Yes"/"No" rows of the LM head.

        Args:
            cf_logits `[B]`: the CF model's logits (`cf_outputs["cf_logits"]` of :meth:`embed_inputs`); required
                with a `config.score_fusion` (`"residual"`: the score adds `w · cf_logits`; `"weighted"`: it is
                `a · answer + w · cf_logits`).

        Returns `(logits [B], yes_logits [B], no_logits [B] or None)` in float32; `logits` follows
        `config.answer_score` (and the fusion).
        """
        lm_head = self.get_output_embeddings()
        no_token_id = self.config.yes_token_id if self.config.no_token_id is None else self.config.no_token_id
        answer_ids = [self.config.yes_token_id, no_token_id]
        answer = answer_hidden @ lm_head.weight[answer_ids].T  # [B, 2]
        if getattr(lm_head, "bias", None) is not None:
            answer = answer + lm_head.bias[answer_ids]
        answer = answer.float()
        yes_logits, no_logits = answer[:, 0], answer[:, 1]
        logits = yes_logits - no_logits if self.config.answer_score == "yes_minus_no" else yes_logits
        if self.score_fusion is not None:
            if cf_logits is None:
                fusion = self.config.score_fusion
                raise ValueError(f"config.score_fusion={fusion!r} needs the CF logits (user_ids / item_ids not given?)")
            logits = self.score_fusion(logits, cf_logits.float())
        return logits, yes_logits, (None if self.config.no_token_id is None else no_logits)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        user_ids: torch.LongTensor | None = None,
        item_ids: torch.LongTensor | None = None,
        history_item_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        frozen_prefix: bool = False,
        prefix_input_ids: torch.LongTensor | None = None,
        prefix_attention_mask: torch.Tensor | None = None,
        prefix_index: torch.LongTensor | None = None,
        cf_user_features: torch.FloatTensor | None = None,
        cf_item_features: torch.FloatTensor | None = None,
        cf_logits: torch.FloatTensor | None = None,
        **kwargs,
    ) -> CL3MRecOutput:
        """Score prompts, given whole (left-padded) or as shared prefixes + per-row suffixes.

        Args:
            input_ids `[B, T]`: left-padded prompt ids, ending right before the answer; with `prefix_input_ids`, the
                rows' prompt suffixes instead, right-padded.
            attention_mask `[B, T]`: 1 for prompt tokens, 0 for padding.
            user_ids / item_ids `[B]`: CF ids (only with placeholder prompts).
            history_item_ids `[B, L]`: history item ids, left-padded with 0, most recent last.
            labels `[B]`: 1 = liked; gives `loss` (BCE with logits).
            frozen_prefix: the LLM is frozen (stage `cie`), so the columns before the first CF placeholder carry no
                gradient: run them once without an autograd graph into a KV cache and backpropagate only through
                the rest. Same function, less work; ignored without grad, with gradient checkpointing, and for
                whole prompts without placeholders.
            prefix_input_ids `[G, P]`, prefix_attention_mask `[G, P]`, prefix_index `[B]`: prompt prefixes shared by
                several rows (left-padded; `CL3MRecProcessor.pad_shared_prefix` builds them), and the prefix each
                row continues. Each prefix runs through the decoder once; its key/value cache is gathered for its
                rows (gradients flow back through the gather), and only the suffixes run per row. Same scores as
                the whole prompts.
            cf_user_features / cf_item_features `[B, f]`, cf_logits `[B]`: what the CF encoder would give each row
                (:meth:`cf_features`, its score), computed elsewhere: the cross-fitted training inputs of
                `trainers.training.cross_fitting`, from CF models that never saw the row. Given (the features together,
                the logits needed with a `score_fusion` only), they replace the encoder's; the ids still
                count the placeholders.
        """
        precomputed = self._precomputed_cf(cf_user_features, cf_item_features, cf_logits)
        if prefix_input_ids is None:
            answer_hidden, cf_outputs = self._whole_prompt_states(
                input_ids, attention_mask, user_ids, item_ids, history_item_ids, frozen_prefix, precomputed, **kwargs
            )
        else:
            if prefix_index is None:
                raise ValueError("prefix_input_ids needs prefix_index (the prefix of each row)")
            answer_hidden, cf_outputs = self._shared_prefix_states(
                prefix_input_ids, prefix_attention_mask, prefix_index, input_ids, attention_mask,
                user_ids, item_ids, history_item_ids, frozen_prefix, precomputed, **kwargs,
            )  # fmt: skip
        logits, yes_logits, no_logits = self.answer_logits(answer_hidden, cf_outputs["cf_logits"])

        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.device).float())
        return CL3MRecOutput(
            loss=loss,
            logits=logits,
            yes_logits=yes_logits,
            no_logits=no_logits,
            answer_hidden_states=answer_hidden,
            **cf_outputs,
        )

    def _precomputed_cf(self, cf_user_features, cf_item_features, cf_logits) -> dict | None:
        """`forward`'s precomputed CF inputs as `_cf_inputs` takes them (None when none are given)."""
        if cf_user_features is None and cf_item_features is None and cf_logits is None:
            return None
        if self.projector is None:
            raise ValueError("precomputed CF inputs were given but this CL3MRecModel has no cf_config (text-only)")
        if cf_user_features is None or cf_item_features is None:
            raise ValueError("precomputed CF inputs need both cf_user_features and cf_item_features")
        if cf_logits is None and self.score_fusion is not None:
            fusion = self.config.score_fusion
            raise ValueError(f"precomputed CF inputs need cf_logits with config.score_fusion={fusion!r}")
        width = cf_feature_size(self.config)
        for name, value in (("cf_user_features", cf_user_features), ("cf_item_features", cf_item_features)):
            if value.shape[-1] != width:
                raise ValueError(f"{name} has width {value.shape[-1]}, the projector reads {width}")
        dtype = self.projector.linear_1.weight.dtype
        return {
            "cf_user": cf_user_features.to(dtype),
            "cf_item": cf_item_features.to(dtype),
            "cf_logits": None if self.score_fusion is None else cf_logits,
        }

    def _whole_prompt_states(
        self, input_ids, attention_mask, user_ids, item_ids, history_item_ids, frozen_prefix, precomputed, **kwargs
    ):
        """Answer-position hidden states `[B, H]` of left-padded whole prompts, and the CF outputs."""
        inputs_embeds, cf_outputs = self.embed_inputs(
            input_ids, user_ids, item_ids, history_item_ids, precomputed=precomputed
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # Positions count real tokens only, so a prompt's score does not depend on its padding.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        split = self._gradient_free_columns(input_ids) if frozen_prefix else 0
        if split == 0:
            hidden = self.get_decoder()(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                **kwargs,
            ).last_hidden_state
        else:
            cache = DynamicCache(config=self.get_decoder().config)
            hidden = self._decode_into_cache(inputs_embeds, attention_mask, position_ids, cache, split, **kwargs)
        return hidden[:, -1], cf_outputs

    def _shared_prefix_states(
        self, prefix_input_ids, prefix_attention_mask, prefix_index, input_ids, attention_mask,
        user_ids, item_ids, history_item_ids, frozen_prefix, precomputed, **kwargs,
    ):  # fmt: skip
        """Answer-position hidden states `[B, H]` of rows given as shared prefixes `[G, P]` (left-padded) + suffixes
        `[B, S]` (right-padded), and the CF outputs (per row)."""
        decoder = self.get_decoder()
        if getattr(decoder, "gradient_checkpointing", False) and self.training:
            raise ValueError(
                "shared prompt prefixes need the KV cache, which activation (gradient) checkpointing turns off"
            )
        rows = torch.arange(prefix_index.shape[0], device=prefix_index.device)
        groups = prefix_input_ids.shape[0]
        first = torch.full((groups,), rows.numel(), device=rows.device).scatter_reduce(0, prefix_index, rows, "amin")
        if int(first.max()) >= rows.numel():
            raise ValueError(f"prefix_index leaves some of the {groups} prefixes without a row")
        cf = self._cf_inputs(input_ids, user_ids, item_ids, history_item_ids, precomputed)  # CF encoder: once per row
        prefix_parts = self.shared_prefix_parts
        prefix_embeds = self._fill_placeholders(prefix_input_ids, cf, prefix_parts, rows=first)  # [G, P, H]
        suffix_parts = tuple(part for part in PROMPT_PARTS if part not in prefix_parts)
        suffix_embeds = self._fill_placeholders(input_ids, cf, suffix_parts)  # [B, S, H]
        cf_outputs = self._cf_outputs(cf)
        if prefix_attention_mask is None:
            prefix_attention_mask = torch.ones_like(prefix_input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prefix_attention_mask, attention_mask = prefix_attention_mask.long(), attention_mask.long()
        if not attention_mask[:, 0].all() or not prefix_attention_mask[:, -1].all():
            raise ValueError("shared prompt prefixes must be left-padded and the suffixes right-padded")

        prefix_cache = DynamicCache(config=decoder.config)
        split = self._gradient_free_columns(prefix_input_ids, all_if_none=True) if frozen_prefix else 0
        prefix_positions = (prefix_attention_mask.cumsum(-1) - 1).clamp(min=0)
        self._decode_into_cache(prefix_embeds, prefix_attention_mask, prefix_positions, prefix_cache, split, **kwargs)
        row_cache = cache_from_layers(
            decoder.config, [(keys[prefix_index], values[prefix_index]) for keys, values in cache_layers(prefix_cache)]
        )
        # Suffix positions continue each row's prefix; the mask covers the (left-padded) prefix and the suffix.
        prefix_lengths = prefix_attention_mask.sum(-1)[prefix_index]  # [B]
        position_ids = prefix_lengths[:, None] + (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, S]
        hidden = decoder(
            inputs_embeds=suffix_embeds,
            attention_mask=torch.cat([prefix_attention_mask[prefix_index], attention_mask], dim=1),
            position_ids=position_ids,
            use_cache=True,
            **{decoder_cache_kwarg(decoder): row_cache},
            **kwargs,
        ).last_hidden_state  # [B, S, H]
        return hidden[rows, attention_mask.sum(-1) - 1], cf_outputs


CL3MRecConfig.register_for_auto_class("AutoConfig")
CL3MRecModel.register_for_auto_class("AutoModel")

__all__ = [
    "CL3MRecAlignmentHeads",
    "CL3MRecModel",
    "CL3MRecOutput",
    "CL3MRecPreTrainedModel",
    "CL3MRecProjector",
    "CL3MRecScoreFusion",
]
