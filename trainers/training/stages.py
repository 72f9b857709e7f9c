"""Staged freezing, declared once: stage → which parameter groups train.

Parameters of the PEFT-wrapped ``CL3MRecModel`` are grouped by name:
``lora`` (names containing ``lora_``), ``projector`` (``projector``), ``cf_encoder`` (``cf_encoder``),
``score_fusion`` and ``alignment_heads`` (the optional residual-fusion weight and contrastive heads, which train
whenever the projector does), everything else is ``frozen_base`` and never trains. PEFT's ``modules_to_save`` wrapper keeps a frozen
``original_module`` copy next to the trained one; copies are never trainable. While a stage trains, frozen
LoRA layers are merged into the base weights (:func:`merged_frozen_lora`), and under bf16 autocast the decoder's
frozen linear weights are held in bf16 (:func:`frozen_decoder_weights_in`).

| stage | trains | CoLLM / TALLRec counterpart |
| --- | --- | --- |
| ``lora`` | LoRA | TALLRec, CoLLM step 1 (text-only prompt) |
| ``cie`` | projector (+ CF encoder if ``train_cf_encoder``) | CoLLM step 2 (T1 / T2 variants) |
| ``joint`` | LoRA + projector (+ CF encoder) | optional last stage, small LR |
"""

import contextlib
import logging
import os
import shutil
from collections import Counter

import torch
from torch import nn

from ..llm_loading import unwrap_peft

logger = logging.getLogger(__name__)

STAGES = ("lora", "cie", "joint")
GROUP_PATTERNS = {
    "lora": "lora_",
    "projector": "projector",
    "cf_encoder": "cf_encoder",
    "score_fusion": "score_fusion",
    "alignment_heads": "alignment_heads",
}
FROZEN_COPY_PATTERN = "original_module"

STAGE_GROUPS = {
    "lora": ("lora",),
    "cie": ("projector",),
    "joint": ("lora", "projector"),
}
OPTIONAL_GROUPS = ("score_fusion", "alignment_heads")  # train beside the projector when the model has them (the
# heads only with a contrastive loss: apply_stage's contrastive_weight > 0)


def parameter_group(name: str) -> str:
    """The group of one parameter name: ``lora``, ``projector``, ``cf_encoder`` or ``frozen_base``.

    LoRA wins over the module it sits in (a LoRA layer inside the projector would be ``lora``); a
    ``modules_to_save`` ``original_module`` copy is always ``frozen_base``.
    """
    if FROZEN_COPY_PATTERN in name:
        return "frozen_base"
    for group, pattern in GROUP_PATTERNS.items():
        if pattern in name:
            return group
    return "frozen_base"


def trainable_groups(stage: str, train_cf_encoder: bool = False) -> tuple[str, ...]:
    """The parameter groups that train in ``stage``."""
    if stage not in STAGE_GROUPS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    if train_cf_encoder and stage == "lora":
        raise ValueError("train_cf_encoder=True needs stage 'cie' or 'joint': stage 'lora' reads no CF embeddings")
    groups = STAGE_GROUPS[stage]
    if "projector" in groups:
        groups = groups + OPTIONAL_GROUPS
    return groups + ("cf_encoder",) if train_cf_encoder else groups


def check_stage_settings(
    stage: str,
    template_has_placeholders: bool,
    contrastive_weight: float,
    train_cf_encoder: bool = False,
    cf_cross_fit_folds: int = 0,
    use_history_embeddings: bool = False,
) -> None:
    """Refuse settings that contradict the stage, before any model is built.

    Raises:
        ValueError: stage ``lora`` with a placeholder template or ``contrastive_weight > 0``;
            stage ``cie``/``joint`` with a text-only template; an unknown stage; cross-fitted CF inputs
            (``cf_cross_fit_folds``) without placeholders or with history-item placeholders, which they do not cover.
    """
    trainable_groups(stage, train_cf_encoder)
    if cf_cross_fit_folds and not template_has_placeholders:
        raise ValueError("cf_cross_fit_folds: the template has no CF placeholders ({user}/{item}) to cross-fit")
    if cf_cross_fit_folds and use_history_embeddings:
        raise ValueError("cf_cross_fit_folds does not cross-fit history-item placeholders: use_history_embeddings")
    if stage == "lora":
        if template_has_placeholders:
            raise ValueError(
                "stage 'lora' trains on text-only prompts, but the template has CF placeholders "
                "({user}/{item}); use a text-only template or stage 'cie'"
            )
        if contrastive_weight > 0:
            raise ValueError(
                f"stage 'lora' has no projected CF embeddings to align: contrastive_weight must be 0, "
                f"got {contrastive_weight}"
            )
    elif not template_has_placeholders:
        raise ValueError(
            f"stage {stage!r} trains the projector, but the template has no {{user}}/{{item}} placeholders; "
            "the projector would get no gradient"
        )


def apply_stage(
    model: nn.Module, stage: str, train_cf_encoder: bool = False, contrastive_weight: float = 0.0
) -> dict[str, dict[str, int]]:
    """Set ``requires_grad`` of every parameter of ``model`` for ``stage`` and log the counts per group.

    Returns:
        ``{group: {"trainable": n_params, "total": n_params}}`` for each group present.

    Raises:
        ValueError: the stage would train nothing, or a group it needs is missing from the model
            (e.g. stage ``lora`` on a model without LoRA layers).
    """
    groups = trainable_groups(stage, train_cf_encoder)
    if contrastive_weight <= 0:  # nothing would give the alignment heads a gradient
        groups = tuple(group for group in groups if group != "alignment_heads")
    counts: dict[str, Counter] = {}
    for name, param in model.named_parameters():
        group = parameter_group(name)
        param.requires_grad_(group in groups)
        counter = counts.setdefault(group, Counter())
        counter["total"] += param.numel()
        counter["trainable"] += param.numel() if param.requires_grad else 0
    missing = [
        group for group in groups if group not in OPTIONAL_GROUPS and counts.get(group, Counter())["trainable"] == 0
    ]
    if missing:
        raise ValueError(
            f"stage {stage!r} trains {list(groups)}, but the model has no parameters in {missing} "
            f"(parameter-name patterns {[GROUP_PATTERNS[g] for g in missing]})"
        )
    for group, counter in sorted(counts.items()):
        logger.info("stage %s: %s trainable %d / %d parameters", stage, group, counter["trainable"], counter["total"])
    return {group: dict(counter) for group, counter in counts.items()}


@contextlib.contextmanager
def merged_frozen_lora(model: nn.Module):
    """Merge every frozen LoRA layer into its base weight for the duration of the block; restore it bit-exactly.

    A frozen adapter is a fixed weight change, so the merged forward/backward computes the same function as
    PEFT's ``base(x) + B(A(dropout(x))) · scale`` at inference, without the two extra matmuls per layer and the
    dropout (which on weights that do not learn only adds noise; its random numbers cost ~15-25% of a CPU step).
    Stage ``cie`` trains at 5.6-5.8 instead of 3.9-4.2 samples/s (``benchmarks/results/training.md``). The
    adapter's own tensors are untouched, so checkpoints saved inside the block are the same. On exit each layer
    is unmerged and its base weight restored from a copy taken before the merge (exact in bf16 too; costs one
    copy of the adapted weights).
    Quantised base layers (QLoRA's 4-bit weights) are left as PEFT layers: merging into them would be lossy.
    Call after ``requires_grad`` is set (:func:`apply_stage`). Yields the number of merged layers.
    """
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or module.merged or not _plain_float_weight(module.get_base_layer()):
            continue
        adapter_weights = [*module.lora_A.parameters(), *module.lora_B.parameters()]
        if adapter_weights and not any(weight.requires_grad for weight in adapter_weights):
            layers.append(module)
    originals = [layer.get_base_layer().weight.detach().clone() for layer in layers]
    for layer in layers:
        layer.merge()
    if layers:
        logger.info("frozen LoRA merged into the base weights of %d layers for training", len(layers))
    try:
        yield len(layers)
    finally:
        with torch.no_grad():
            for layer, original in zip(layers, originals):
                layer.unmerge()
                layer.get_base_layer().weight.copy_(original)


@contextlib.contextmanager
def frozen_decoder_weights_in(model: nn.Module, dtype: torch.dtype | None):
    """Hold the frozen linear weights of the LLM decoder in ``dtype`` (the autocast dtype) for the block.

    Under autocast every linear layer casts its weight to the autocast dtype on each call; autocast caches that cast
    only for weights that require grad, so a frozen weight (the whole LLM in stage ``cie``, the base weights under
    LoRA) is re-cast in every forward: on a CPU those copies take ~20% of a step. A weight already in ``dtype`` makes
    the cast a no-op and the result bit-identical, as long as the block runs under autocast to ``dtype``. Only the
    decoder's linear layers are cast (the LM head, embeddings and norms stay as they are), and not LoRA's own
    ``lora_A`` / ``lora_B`` layers, so checkpoints saved inside the block hold the adapter as trained. On exit the
    original tensors are put back (no copy: the originals are kept; anything loaded into a cast weight inside the
    block is dropped, which only frozen base weights are). ``dtype=None`` does nothing. Enter it after
    :func:`merged_frozen_lora`, so the merged weights are the ones cast. Yields the number of weights cast.
    """
    if dtype is None:
        yield 0
        return
    swapped = []
    try:
        for name, module in unwrap_peft(model).get_decoder().named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, nn.Linear) or "lora_" in name or not _plain_float_weight(module):
                continue
            if weight.requires_grad or weight.dtype == dtype:
                continue
            swapped.append((weight, weight.data))
            weight.data = weight.data.to(dtype)
        if swapped:
            logger.info("%d frozen decoder weights held in %s (autocast casts them no more)", len(swapped), dtype)
        yield len(swapped)
    finally:
        for weight, original in swapped:
            weight.data = original


@contextlib.contextmanager
def fast_frozen_weights(model: nn.Module, dtype: torch.dtype | None):
    """:func:`merged_frozen_lora`, then :func:`frozen_decoder_weights_in` (the order they must nest in): a block in
    which frozen weights cost least and compute the same function."""
    with merged_frozen_lora(model), frozen_decoder_weights_in(model, dtype):
        yield


def require_cpp_compiler(device: torch.device) -> None:
    """``torch.compile`` builds C++ kernels on a CPU: refuse early, in one line, when no compiler is found."""
    if device.type != "cpu":
        return
    if not any(shutil.which(name) for name in (os.environ.get("CXX"), "g++", "clang++") if name):
        raise ValueError(
            "compile: torch.compile builds C++ kernels on a CPU and found no C++ compiler (g++, clang++ or $CXX); "
            "install one (apt install g++) or turn compiling off (compile_train / compile_eval: false, no --compile)"
        )


@contextlib.contextmanager
def compiled_decoder_layers(model: nn.Module):
    """Run every decoder layer of ``model`` (a `CL3MRecModel` or a PEFT wrapper of one) through ``torch.compile``
    for the block, forward and backward; on exit the layers run as before it (eagerly, unless compiled already).

    Compiled in place (``nn.Module.compile``): the modules and their parameter names stay as they are, so a
    checkpoint saved inside the block is the eager model's. The layers share one code path, so with dynamic shapes
    one compiled graph serves all of them, whatever the batch and prompt lengths (a few seconds to build, once per
    process and grad mode). Whole prompts only: with a KV cache every layer reads its own cache entry, and dynamo
    then builds a graph per layer until its recompile limit.
    """
    layers = unwrap_peft(model).get_decoder().layers
    before = [layer._compiled_call_impl for layer in layers]  # what nn.Module.compile sets; None = eager
    try:
        for layer in layers:
            layer.compile(dynamic=True)
        yield
    finally:
        for layer, call in zip(layers, before):
            layer._compiled_call_impl = call  # as before the block (eager, or an enclosing block's compile)


def _plain_float_weight(layer: nn.Module) -> bool:
    """A layer whose ``weight`` is an ordinary float tensor (not a 4-bit / 8-bit quantised one)."""
    weight = getattr(layer, "weight", None)
    plain = isinstance(weight, torch.Tensor) and type(weight) in (torch.Tensor, nn.Parameter)
    return plain and weight.is_floating_point()


def trainable_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters with ``requires_grad``."""
    return {name for name, param in model.named_parameters() if param.requires_grad}
