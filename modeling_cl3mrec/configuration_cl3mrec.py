"""Configuration of the CL3M-Rec model: an LLM (``text_config``) + a CF encoder (``cf_config``) + glue.

Like LLaVA's config, this one *composes* the wrapped models' own configs instead of copying their
fields; only the glue knobs (placeholder ids, projector size, answer tokens, how CF knowledge enters) sit at
the top level. A dict ``text_config`` (from JSON) is rebuilt through ``CONFIG_MAPPING[d["model_type"]]``.
Training-only knobs (the contrastive loss's λ and τ) live in the training arguments, and the history length
of a prompt (``max_history``) in ``CL3MRecProcessor``: neither is saved here.
"""

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_cf import CFRecConfig

ANSWER_SCORES = ("yes", "yes_minus_no")
CF_FEATURES = ("embedding", "embedding_bias")
SCORE_FUSIONS = ("none", "residual", "weighted")


class CL3MRecConfig(PretrainedConfig):
    r"""Configuration of [`CL3MRecModel`].

    Args:
        text_config (`dict` or `PretrainedConfig`): config of the LLM (any `AutoModelForCausalLM` architecture;
            default Llama).
        cf_config (`dict`, `CFRecConfig` or `None`): config of the collaborative encoder. `None` builds a
            text-only model (no CF encoder, no projector; prompts must not contain placeholders).
        tokens_per_entity (`int`, defaults to 1): LLM tokens each user / target item occupies in the prompt.
        projector_hidden_factor (`int`, defaults to 10): projector width is `factor * cf_config.hidden_size`.
        user_token_id / item_token_id / history_token_id (`int`): ids of the placeholder special tokens
            `<|user_emb|>`, `<|item_emb|>`, `<|hist_emb|>`. They may be >= the LLM vocabulary size. User and item
            ids are required when `cf_config` is set; the history id when `use_history_embeddings` is also set.
        yes_token_id / no_token_id (`int`): the answer tokens; the score is read from their LM-head rows.
        use_history_embeddings (`bool`): fill `<|hist_emb|>` placeholders with projected history-item embeddings.
        prompt_template / text_prompt_template (`str`): template text used with / without CF placeholders.
        answer_score (`"yes"` or `"yes_minus_no"`): the score is the "Yes" logit (as CoLLM) or "Yes" − "No".
        cf_features (`"embedding"` or `"embedding_bias"`, defaults to `"embedding"`): what the projector reads per
            entity. `"embedding"` is CoLLM's bias-free CF embedding `[d]`; `"embedding_bias"` appends the entity's
            bias term of the CF score (global + user bias for users, item bias for items) → `[d + 1]`, so the bias
            part of what the CF model knows reaches the LLM too (needs `cf_config.use_bias`).
        score_fusion (`"none"`, `"residual"` or `"weighted"`, defaults to `"none"`): `"residual"` adds the CF model's
            own logit to the answer score, `score = answer logit + w · CF logit`, with a learned scalar `w`
            (initialised to 1); `"weighted"` also learns the answer's weight, `score = a · answer logit + w · CF
            logit` (`a` initialised to 1), so training can turn down an answer that only adds noise to the CF score;
            `"none"` is the paper recipe (the LLM's answer alone).
        alignment_dim (`int`, defaults to 0): width of the CLIP-style alignment heads that map the projected CF view
            and the LLM's text view of an entity into one space for the contrastive loss; 0 = no heads (the
            contrastive loss then compares the two views directly by cosine).
    """

    model_type = "cl3mrec"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "cf_config": SubConfigSpec(config_class=CFRecConfig, optional=True),
    }

    text_config: dict | PretrainedConfig | None = None
    cf_config: dict | PretrainedConfig | None = None
    tokens_per_entity: int = 1
    projector_hidden_factor: int = 10
    user_token_id: int | None = None
    item_token_id: int | None = None
    history_token_id: int | None = None
    yes_token_id: int | None = None
    no_token_id: int | None = None
    use_history_embeddings: bool = False
    prompt_template: str | None = None
    text_prompt_template: str | None = None
    answer_score: str = "yes"
    cf_features: str = "embedding"
    score_fusion: str = "none"
    alignment_dim: int = 0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The LLM ties its own embeddings (per text_config); this flag only mirrors it, as in LLaVA.
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        self._validate_glue()

    @property
    def use_cf(self) -> bool:
        """Whether the model has a collaborative encoder and CF placeholders."""
        return self.cf_config is not None

    def _validate_glue(self) -> None:
        if self.tokens_per_entity < 1:
            raise ValueError(f"CL3MRecConfig.tokens_per_entity must be >= 1, got {self.tokens_per_entity}")
        if self.projector_hidden_factor < 1:
            raise ValueError(
                f"CL3MRecConfig.projector_hidden_factor must be >= 1, got {self.projector_hidden_factor}"
            )
        if self.answer_score not in ANSWER_SCORES:
            raise ValueError(f"CL3MRecConfig.answer_score must be one of {ANSWER_SCORES}, got {self.answer_score!r}")
        if self.cf_features not in CF_FEATURES:
            raise ValueError(f"CL3MRecConfig.cf_features must be one of {CF_FEATURES}, got {self.cf_features!r}")
        if self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"CL3MRecConfig.score_fusion must be one of {SCORE_FUSIONS}, got {self.score_fusion!r}")
        if self.alignment_dim < 0:
            raise ValueError(f"CL3MRecConfig.alignment_dim must be >= 0, got {self.alignment_dim}")
        if not self.use_cf and (self.cf_features != "embedding" or self.score_fusion != "none" or self.alignment_dim):
            raise ValueError(
                "CL3MRecConfig: cf_features / score_fusion / alignment_dim need a cf_config (a text-only model has no "
                "CF encoder)"
            )
        if self.use_cf and self.cf_features == "embedding_bias" and not self.cf_config.use_bias:
            raise ValueError(
                "CL3MRecConfig.cf_features='embedding_bias' needs a CF encoder with biases (cf_config.use_bias=True)"
            )
        if self.yes_token_id is not None and self.yes_token_id == self.no_token_id:
            raise ValueError(
                f"CL3MRecConfig.yes_token_id and no_token_id must differ, both are {self.yes_token_id}"
            )
        if self.answer_score == "yes_minus_no" and self.yes_token_id is not None and self.no_token_id is None:
            raise ValueError("CL3MRecConfig.no_token_id is required when answer_score='yes_minus_no'")
        if self.use_cf:
            required = ["user_token_id", "item_token_id"]
            if self.use_history_embeddings:
                required.append("history_token_id")
            missing = [name for name in required if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"CL3MRecConfig: {', '.join(missing)} must be set when cf_config is given "
                    "(add the placeholder tokens to the tokenizer first)"
                )
            placeholder_ids = [getattr(self, name) for name in required]
            if len(set(placeholder_ids)) != len(placeholder_ids):
                raise ValueError(f"CL3MRecConfig: placeholder ids {required} must differ, got {placeholder_ids}")
        elif self.use_history_embeddings:
            raise ValueError("CL3MRecConfig.use_history_embeddings needs a cf_config (history embeddings come from it)")


__all__ = ["CL3MRecConfig"]
