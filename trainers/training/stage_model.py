"""The model of one training stage: LLM (+ CF encoder + projector) + LoRA (+ the previous stage's adapter).

:func:`build_stage_model` is the library call behind ``cl3mrec train`` (as TRL's ``RewardTrainer`` builds and
wraps its model from a path and a ``peft_config``); freezing comes later (:func:`trainers.training.stages.apply_stage`).
QLoRA (``quantization: nf4``): the 4-bit LLM goes through PEFT's ``prepare_model_for_kbit_training`` before LoRA is
added, and the export merges the trained adapter into the LLM reloaded unquantized (:func:`unquantized_copy`), never
into 4-bit weights.
"""

import dataclasses
import logging
from pathlib import Path

from modeling_cl3mrec.processing_cl3mrec import template_uses_ids

from ..llm_loading import add_lora, build_cl3mrec
from ..model_dirs import CF_MODEL_TYPE, require_model_dir
from ..prompt_templates import load_template
from ..run_state import require_stage_complete
from .training_args import ModelArguments

logger = logging.getLogger(__name__)


def load_stage_adapter(peft_model, init_from: str) -> None:
    """Load a previous stage's adapter (LoRA + any saved projector / CF encoder) into ``peft_model``.

    Raises:
        FileNotFoundError: no ``adapter_model.safetensors`` in ``init_from``.
        ValueError: the LoRA layers do not line up (different ``lora_target_modules`` / ``lora_r``).
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(init_from) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"init_from={init_from}: no adapter_model.safetensors (not a stage output dir?)")
    try:
        state = load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"{path}: corrupt or truncated safetensors ({error}); rerun the init_from stage") from None
    # A text-only stage saved no projector / CF encoder: those keep their current (fresh / pretrained) weights.
    current = get_peft_model_state_dict(peft_model)
    try:
        result = set_peft_model_state_dict(peft_model, {**current, **state})
    except RuntimeError as error:  # shape mismatch
        raise ValueError(f"init_from={init_from}: adapter does not fit this model ({error}); use the same lora_r") from error
    unexpected = [key for key in result.unexpected_keys if "lora_" in key]
    missing = [key for key in result.missing_keys if "lora_" in key]
    if unexpected or missing:
        raise ValueError(
            f"init_from={init_from}: LoRA layers differ (unexpected {unexpected[:3]}, missing {missing[:3]}); "
            "use the same lora_target_modules as that stage"
        )
    logger.info("loaded %d adapter tensors from %s (%d kept from this model)", len(state), init_from, len(set(current) - set(state)))


CF_GLUE_FIELDS = ("cf_features", "score_fusion", "alignment_dim")


def cf_glue(model_args) -> dict:
    """The `CL3MRecConfig` fields that decide how CF knowledge enters the model (placeholder templates only)."""
    return {name: getattr(model_args, name) for name in CF_GLUE_FIELDS}


def stage_cl3mrec(model_args, template: str, with_ids: bool, quantization: str):
    """``(CL3MRecModel, tokenizer)`` of a stage, without LoRA: the LLM at ``model_args.llm_path`` (in
    ``model_args.dtype``; 4-bit with ``quantization="nf4"``) + CF encoder + projector for a placeholder template."""
    return build_cl3mrec(
        model_args.llm_path,
        cf_model_dir=model_args.cf_model_dir if with_ids else None,
        prompt_template=template if with_ids else None,
        text_prompt_template=None if with_ids else template,
        tokens_per_entity=model_args.tokens_per_entity,
        use_history_embeddings=model_args.use_history_embeddings and with_ids,
        answer_score=model_args.answer_score,
        **(cf_glue(model_args) if with_ids else {}),
        quantization=None if quantization == "none" else quantization,
        dtype=model_args.dtype,
    )


def prepare_quantized_llm(model, gradient_checkpointing: bool, gradient_checkpointing_kwargs: dict | None) -> None:
    """QLoRA's preparation of ``model.language_model`` (a 4-bit LLM), in place: PEFT's
    ``prepare_model_for_kbit_training`` freezes it, upcasts its remaining half-precision parameters (norms,
    embeddings) to fp32 and, with ``gradient_checkpointing``, turns checkpointing on with input gradients. Only the
    LLM: the CF encoder and projector are fp32 and trained or frozen per stage later."""
    from peft import prepare_model_for_kbit_training

    model.language_model = prepare_model_for_kbit_training(
        model.language_model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs=gradient_checkpointing_kwargs,
    )
    logger.info("4-bit LLM prepared for QLoRA training (gradient checkpointing: %s)", gradient_checkpointing)


def unquantized_copy(peft_model, model_args, args):
    """The stage's model rebuilt around the LLM loaded *unquantized* (``model_args.dtype``, on the CPU) with
    ``peft_model``'s trained adapter (LoRA + projector / CF encoder / fusion / alignment heads) copied in.

    What a QLoRA stage exports: merging LoRA into 4-bit weights would round the update into the 4-bit grid (PEFT
    warns, and the saved weights would be 4-bit). The copy's scores differ from the 4-bit model's by the
    quantisation error of the base weights (the eval metrics are those of the 4-bit model)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    template = load_template(model_args.template)
    model, _ = stage_cl3mrec(model_args, template, template_uses_ids(template), quantization="none")
    model = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    trained = {key: value.detach().cpu() for key, value in get_peft_model_state_dict(peft_model).items()}
    result = set_peft_model_state_dict(model, trained)
    if result.unexpected_keys:
        raise RuntimeError(f"unquantized copy lacks adapter tensors {result.unexpected_keys[:3]}")
    logger.info("LLM reloaded in %s to merge the QLoRA adapter (%d tensors)", model_args.dtype, len(trained))
    return model


def check_cf_id_space(cf_config: dict, cf_model_dir, data_stats: dict) -> None:
    """Refuse a CF model whose user / item tables are not the data's id space (its ``stats.json``): one trained
    on other data would read every id as some other user or item without an error."""
    for key in ("num_users", "num_items"):
        if cf_config.get(key) != data_stats.get(key):
            raise ValueError(
                f"cf_model_dir={cf_model_dir}: {key} = {cf_config.get(key)}, but the data has {data_stats.get(key)} "
                "(stats.json): a CF model of other data; train one on it (cl3mrec cf train --data)"
            )


def build_stage_model(model_args, args, template: str, with_ids: bool, data_stats: dict | None = None):
    """``(peft_model, tokenizer)`` for one stage: LLM (+ CF encoder + projector) + LoRA (+ previous adapter).

    Freezing comes later (:func:`trainers.training.stages.apply_stage`): PEFT's ``disable_adapter()`` and
    ``load_adapter`` switch adapter parameters back to trainable. ``use_history_embeddings`` only applies
    with a placeholder template (``with_ids``): a text-only model has no CF encoder to embed history with.
    ``data_stats`` (the data's ``stats.json``), when given, must have the CF model's id space."""
    if with_ids and model_args.cf_model_dir is None:
        raise ValueError(f"template {model_args.template!r} has CF placeholders: set cf_model_dir")
    if model_args.init_from:
        require_stage_complete(model_args.init_from)  # else its recipe and adapter may be missing or stale
    require_model_dir(model_args.llm_path, "llm_path", forbid_type=CF_MODEL_TYPE)
    if with_ids:
        cf_config = require_model_dir(model_args.cf_model_dir, "cf_model_dir", model_type=CF_MODEL_TYPE)
        if data_stats is not None:
            check_cf_id_space(cf_config, model_args.cf_model_dir, data_stats)
    if model_args.use_history_embeddings and not with_ids:
        logger.warning("template %r is text-only: use_history_embeddings is ignored", model_args.template)
    defaults = {field.name: field.default for field in dataclasses.fields(ModelArguments)}
    set_glue = [name for name in CF_GLUE_FIELDS if getattr(model_args, name, defaults[name]) != defaults[name]]
    if set_glue and not with_ids:
        raise ValueError(
            f"template {model_args.template!r} is text-only (no CF placeholders), so {', '.join(set_glue)} would "
            "change nothing; set them on a stage with a placeholder template (stage cie), or drop them"
        )
    model, tokenizer = stage_cl3mrec(model_args, template, with_ids, model_args.quantization)
    if model_args.quantization != "none":
        prepare_quantized_llm(model, args.activation_checkpointing, args.activation_checkpointing_kwargs)
    model = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    if model_args.init_from:
        load_stage_adapter(model, model_args.init_from)
    elif args.stage != "lora":
        logger.warning("stage %s without init_from: LoRA starts from zero (no stage-lora adapter)", args.stage)
    return model, tokenizer
