"""Assemble a CL3M-Rec model around a pretrained LLM, add LoRA, and export a merged model.

`build_cl3mrec` loads the LLM once with `AutoModelForCausalLM.from_pretrained` (4-bit NF4 for QLoRA on CUDA),
adds the placeholder special tokens to the tokenizer (ids may exceed the LLM vocabulary: the model masks them
before the embedding lookup, so no resize), and copies pretrained CF weights from a `CFRecModel` directory.
"""

import logging
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.dynamic_module_utils import custom_object_save

from modeling_cl3mrec import CFRecConfig, CFRecModel, CL3MRecConfig, CL3MRecModel, CL3MRecProcessor
from modeling_cl3mrec.pipeline_cl3mrec import TASK, CL3MRecScoringPipeline
from modeling_cl3mrec.collaborative_encoders import build_collaborative_encoder
from modeling_cl3mrec.modeling_cl3mrec import CL3MRecAlignmentHeads, CL3MRecProjector, CL3MRecScoreFusion

from .atomic_io import staging_dir
from .model_dirs import load_complete

logger = logging.getLogger(__name__)

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The files a tokenizer's save_pretrained writes (fast or slow, Llama / Qwen2 / GPT-2 style), as fnmatch patterns.
TOKENIZER_FILE_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.*",
)


def answer_token_id(tokenizer, word: str) -> int:
    """The single token id of `word` (e.g. "Yes"); raises if the tokenizer splits it."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"answer word {word!r} is not a single token for this tokenizer (got ids {ids})")
    return ids[0]


def _quantization_config(quantization: str | None):
    if quantization is None:
        return None
    if quantization != "nf4":
        raise ValueError(f"quantization must be None or 'nf4', got {quantization!r}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError("quantization='nf4' needs the bitsandbytes package (pip install 'cl3mrec[gpu]')") from error
    if not torch.cuda.is_available():
        raise ValueError("quantization='nf4' (QLoRA) needs a CUDA GPU; none is available")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def build_cl3mrec(
    llm_path,
    cf_model_dir=None,
    cf_config: CFRecConfig | None = None,
    prompt_template: str | None = None,
    text_prompt_template: str | None = None,
    tokens_per_entity: int = 1,
    use_history_embeddings: bool = False,
    answer_words: tuple[str, str] = ("Yes", "No"),
    answer_score: str = "yes",
    quantization: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    **config_kwargs,
):
    """Build `(CL3MRecModel, tokenizer)` around the LLM at `llm_path`.

    Args:
        llm_path: directory (or hub id already in the local cache) of an `AutoModelForCausalLM` + tokenizer.
        cf_model_dir: a saved `CFRecModel`; its config and weights are copied into the model.
        cf_config: a `CFRecConfig` for a freshly initialised CF encoder (ignored when `cf_model_dir` is given).
            With neither, the model is text-only (no placeholders, no projector).
        prompt_template / text_prompt_template: template texts stored in the config (see `CL3MRecProcessor`).
        answer_words: the "Yes" / "No" words; each must be one token.
        quantization: None or "nf4" (QLoRA; CUDA + bitsandbytes only).
        dtype: dtype of the LLM weights; the projector and CF encoder stay float32.
        config_kwargs: further `CL3MRecConfig` glue fields (e.g. `score_fusion`).
    """
    tokenizer = AutoTokenizer.from_pretrained(llm_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"tokenizer at {llm_path} has no pad, eos or unk token to pad with")

    cf_model = load_complete(CFRecModel, cf_model_dir, "cf_model_dir") if cf_model_dir is not None else None
    if cf_model is not None:
        cf_config = cf_model.config
    placeholder_ids = {}
    if cf_config is not None:
        placeholder_ids = CL3MRecProcessor.add_placeholder_tokens(tokenizer, use_history_embeddings)

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    llm = AutoModelForCausalLM.from_pretrained(
        llm_path, dtype=dtype, quantization_config=_quantization_config(quantization)
    )
    config = CL3MRecConfig(
        text_config=llm.config,
        cf_config=cf_config,
        tokens_per_entity=tokens_per_entity,
        use_history_embeddings=use_history_embeddings,
        prompt_template=prompt_template,
        text_prompt_template=text_prompt_template,
        yes_token_id=answer_token_id(tokenizer, answer_words[0]),
        no_token_id=answer_token_id(tokenizer, answer_words[1]),
        answer_score=answer_score,
        **placeholder_ids,
        **config_kwargs,
    )
    # Build the shell on the meta device (no second random LLM), then plug in the real parts.
    with torch.device("meta"):
        model = CL3MRecModel(config)
    model.language_model = llm
    if config.use_cf:
        model.cf_encoder = cf_model.encoder if cf_model is not None else build_collaborative_encoder(cf_config)
        model.projector = CL3MRecProjector(config)
        model.score_fusion = CL3MRecScoreFusion.from_config(config)
        model.alignment_heads = CL3MRecAlignmentHeads(config) if config.alignment_dim > 0 else None
        for fresh in (model.projector, model.score_fusion, model.alignment_heads):
            if fresh is not None:
                model._init_weights(fresh)
    model.to(llm.device)
    logger.info(
        "built CL3M-Rec on %s (cf: %s, placeholders: %s, yes/no ids %d/%d)",
        llm_path,
        cf_config.encoder_type if cf_config is not None else "none (text-only)",
        placeholder_ids or "none",
        config.yes_token_id,
        config.no_token_id,
    )
    return model, tokenizer


def lora_target_regex(target_modules=DEFAULT_LORA_TARGETS) -> str:
    """A regex that matches only the LLM's linear layers named in `target_modules` (never projector / CF / head)."""
    names = "|".join(target_modules)
    return rf"language_model\.(?:.*\.)?(?:{names})"


def add_lora(model: CL3MRecModel, r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules=None):
    """Wrap `model` with LoRA on the LLM; projector, CF encoder, score fusion and alignment heads are trained fully
    and saved (modules_to_save)."""
    from peft import LoraConfig, get_peft_model

    names = ("projector", "cf_encoder", "score_fusion", "alignment_heads")
    modules_to_save = [name for name in names if getattr(model, name, None) is not None]
    lora_config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(target_modules or DEFAULT_LORA_TARGETS),
        modules_to_save=modules_to_save or None,
        bias="none",
    )
    with warnings.catch_warnings():  # PEFT 0.21 reads transformers 5's deprecated alias: not the user's to fix
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora_config)


def export_merged(peft_model, processor, out_dir) -> Path:
    """Merge LoRA into the LLM and save a plain `CL3MRecModel` (safetensors) + processor + scoring pipeline,
    atomically (see :func:`save_merged`).

    Note: `merge_and_unload` modifies `peft_model`'s base model in place.
    """
    with staging_dir(out_dir) as staging:
        save_merged(peft_model, processor, staging)
    logger.info("merged CL3M-Rec model written to %s", out_dir)
    return Path(out_dir)


def unwrap_peft(model):
    """The `CL3MRecModel` inside a PEFT wrapper, or ``model`` itself (LoRA layers stay active: PEFT injects them in
    place)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def is_quantized(model) -> bool:
    """Whether the LLM of ``model`` (a `CL3MRecModel` or a PEFT wrapper of one) holds 4-bit / 8-bit bitsandbytes
    weights."""
    base = unwrap_peft(model)
    return any(getattr(base.language_model, flag, False) for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"))


def save_merged(peft_model, processor, directory) -> None:
    """Merge LoRA (in place) and save into `directory` (not atomic: use :func:`export_merged`, or write into a
    :func:`trainers.atomic_io.staging_dir`): the plain `CL3MRecModel` (safetensors, `auto_map`), its
    `CL3MRecProcessor` (tokenizer + `processor_config.json`) and the `cl3mrec-scoring` pipeline
    (`custom_pipelines` in `config.json` + its code), so that `AutoModel`, `AutoProcessor` and
    `pipeline("cl3mrec-scoring", model=directory)` load it with `trust_remote_code=True`.

    Raises:
        ValueError: the LLM is quantized (QLoRA): merge into the LLM reloaded unquantized instead
            (:func:`trainers.training.stage_model.unquantized_copy`).
    """
    if is_quantized(peft_model):
        raise ValueError(
            "save_merged: the LLM is 4-bit/8-bit (QLoRA); merging LoRA into quantized weights is lossy. Merge into "
            "the LLM reloaded unquantized (trainers.training.stage_model.unquantized_copy)"
        )
    merged = peft_model.merge_and_unload() if hasattr(peft_model, "merge_and_unload") else peft_model
    module = CL3MRecScoringPipeline.__module__.split(".")[-1]
    merged.config.custom_pipelines = {
        TASK: {"impl": f"{module}.{CL3MRecScoringPipeline.__name__}", "pt": ["AutoModel"], "type": "text"}
    }
    merged.save_pretrained(directory, safe_serialization=True)
    custom_object_save(CL3MRecScoringPipeline, directory)
    processor.save_pretrained(directory)
