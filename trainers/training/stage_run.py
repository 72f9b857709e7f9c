"""Run one training stage end to end: train → score the eval split → save → export → mark complete.

:func:`run_stage` is the library call behind ``cl3mrec train``; safe under ``accelerate launch`` (only the main
process writes caches, exports and cards). A stage's very last write is ``stage_complete.json``.
"""

import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from ..atomic_io import require_empty_or_own, staging_dir, write_json_atomic, write_npy_atomic
from ..hub.model_card import write_model_card
from ..inference.metrics import ranking_report
from ..llm_loading import TOKENIZER_FILE_PATTERNS, is_quantized, save_merged
from ..run_state import checkpoint_is_complete, clear_stage_complete, mark_stage_complete, newest_complete_checkpoint
from .stage_model import unquantized_copy
from .stage_plots import PLOTS_DIR, write_stage_plots
from .stage_setup import build_stage
from .stages import compiled_decoder_layers, fast_frozen_weights, require_cpp_compiler
from .training_summary import training_summary

logger = logging.getLogger(__name__)

# What a stage writes into its output_dir (Trainer files included): another non-empty folder is refused.
STAGE_OUTPUT_FILES = (
    "stage_complete.json", "checkpoint-*", "trainer_state.json", "*_results.json", "adapter_*", "training_args.bin",
    "eval_*.npy", "merged", "training_summary.json", "runs", PLOTS_DIR,
)
# What a merged model (an export) holds: model, code, processor + tokenizer, records, card and its plots.
EXPORT_FILES = (
    "config.json", "*.safetensors", "*.py", "processor_config.json", *TOKENIZER_FILE_PATTERNS, "eval_results.json",
    "training_summary.json", "README.md", PLOTS_DIR, "reload_scores.npy",
)


@contextlib.contextmanager
def training_attention(peft_model, choice: str, device_type: str):
    """Switch the LLM's attention kernel for the training loop and restore it afterwards (for scoring).

    ``auto`` picks eager attention on CPU: there CPU SDPA's backward took 27% of a LoRA step, and eager training
    ran 1.3-2x faster (``benchmarks/results/summary.md``); SDPA stays faster for inference."""
    language_model = peft_model.get_base_model().language_model
    scoring = language_model.config._attn_implementation
    wanted = ("eager" if device_type == "cpu" else scoring) if choice == "auto" else choice
    if wanted != scoring:
        language_model.set_attn_implementation(wanted)
        logger.info("training with %s attention (scoring keeps %s)", wanted, scoring)
    try:
        yield
    finally:
        if wanted != scoring:
            language_model.set_attn_implementation(scoring)


def eval_results(split: str, report: dict, metrics: dict) -> dict:
    """``eval_results.json``, one shape everywhere (stage output dir and export): ``{split: report}``, where
    ``report`` is the split's ``ranking_report`` (``auc``, ``uauc``, ``n_rows``, ``n_users_uauc``, ``warm{…}``,
    ``cold{…}``) plus the stage's other eval metrics without their ``eval_`` prefix (``loss``, ``loss/rec``,
    ``align_item_recall@10``, …); the flat ``eval_auc`` / ``eval_warm_*`` copies of the report are left out."""
    ranking = {f"eval_{key}" for key in report}
    ranking |= {f"eval_{part}_{key}" for part in ("warm", "cold") for key in report.get(part) or {}}
    extra = {key.removeprefix("eval_"): value for key, value in metrics.items() if key not in ranking}
    return {split: {**report, **extra}}


@contextlib.contextmanager
def compiled_decoder(trainer, enabled: bool):
    """With ``enabled``, train / evaluate on whole prompts (the collator shares no prefix; the row order stays the
    sampler's) through compiled decoder layers (:func:`~trainers.training.stages.compiled_decoder_layers`); both
    undone on exit. Without: nothing changes."""
    if not enabled:
        yield
        return
    with trainer.whole_prompts(), compiled_decoder_layers(trainer.model):
        yield


def run_stage(model_args, data_args, args) -> dict:
    """Run one stage; return the flat eval metrics (``eval_auc``, ``eval_uauc``, …). ``<output_dir>/eval_results.json``
    holds them as :func:`eval_results`; scores of the eval split go to ``<output_dir>/eval_scores.npy`` (rows
    ``eval_rows.npy`` of the split, in order), the training curves and AUC / UAUC bars to ``<output_dir>/plots/``
    (:mod:`trainers.training.stage_plots`). The final eval metrics are also logged (``trainer.log``), so every
    ``report_to`` tracker receives them."""
    require_empty_or_own(args.output_dir, STAGE_OUTPUT_FILES, "output_dir", replaced=False)  # trained into, resumed
    if args.export_dir:  # replaced whole by the export
        require_empty_or_own(args.export_dir, EXPORT_FILES, "export_dir")
    if args.compile_train or args.compile_eval:
        require_cpp_compiler(args.device)  # before training, not after it
    if PartialState().is_main_process:
        clear_stage_complete(args.output_dir)  # unfinished until the very end
    setup = build_stage(model_args, data_args, args)
    trainer, processor, eval_raw = setup.trainer, setup.processor, setup.eval_raw
    alignment_before = trainer.alignment_report()
    autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    if args.do_train:
        resume = resume_checkpoint(args.resume_from_checkpoint, args.output_dir, trainer.is_world_process_zero())
        attention = training_attention(trainer.model, model_args.train_attn_implementation, args.device.type)
        compiled = compiled_decoder(trainer, args.compile_train)
        with attention, fast_frozen_weights(trainer.model, autocast_dtype), compiled:
            train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()

    # Scored as exported: frozen LoRA merged (the export merges it too).
    with fast_frozen_weights(trainer.model, autocast_dtype), compiled_decoder(trainer, args.compile_eval):
        prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    metrics = {**prediction.metrics, **trainer.flush_metrics("eval")}
    metrics.update({f"eval_{key}": value for key, value in trainer.alignment_report().items()})
    metrics.update({f"eval_{key}_before_training": value for key, value in alignment_before.items()})
    if trainer.is_world_process_zero():  # on stderr: stdout carries only the CLI's JSON answer
        logger.info("eval metrics: %s", ", ".join(f"{key} = {value}" for key, value in sorted(metrics.items())))
    trainer.log(dict(metrics))  # predict() logs nothing: this hands the final metrics to every report_to tracker
    report = ranking_report(eval_raw["user_id"], eval_raw["label"], prediction.predictions, eval_raw["warm"])
    results = eval_results(data_args.eval_split, report, metrics)
    if trainer.is_world_process_zero():
        write_json_atomic(Path(args.output_dir) / "eval_results.json", results)
        write_npy_atomic(Path(args.output_dir) / "eval_scores.npy", np.asarray(prediction.predictions, dtype=np.float64))
        write_npy_atomic(Path(args.output_dir) / "eval_rows.npy", setup.eval_rows)
        reads_cf = trainer.accelerator.unwrap_model(trainer.model).get_base_model().config.use_cf
        cf_model_dir = model_args.cf_model_dir if reads_cf else None
        write_stage_plots(args.output_dir, trainer.state.log_history, data_args.eval_split, report, cf_model_dir)
    export_dir = None
    if args.do_train:
        export_dir = export(trainer, processor, args, results, model_args, data_args.data_dir)
    if trainer.is_world_process_zero():  # last: every output above is in place
        mark_stage_complete(args.output_dir, {"stage": args.stage, "export_dir": export_dir and str(export_dir), **metrics})
    trainer.accelerator.wait_for_everyone()
    return metrics


def resume_checkpoint(choice, output_dir, is_main_process: bool) -> str | None:
    """The checkpoint to resume from: ``true`` / ``last`` = the newest *complete* ``checkpoint-N`` of
    ``output_dir`` (half-written ones, left by a kill during a save, are skipped and removed), or none yet
    (training starts from step 0); an explicit path must be a complete checkpoint."""
    if choice is None or str(choice).lower() in ("false", "no", "none", ""):
        return None
    if str(choice).lower() in ("true", "last"):
        checkpoint = newest_complete_checkpoint(output_dir, remove_incomplete=is_main_process)
        if checkpoint is None:
            # a first run (half-written checkpoints were each named with a warning above)
            logger.info("resume_from_checkpoint: no complete checkpoint in %s yet; training from step 0", output_dir)
        return None if checkpoint is None else str(checkpoint)
    if not checkpoint_is_complete(Path(choice)):
        raise ValueError(
            f"resume_from_checkpoint={choice}: not a complete checkpoint (no readable trainer_state.json); "
            "use resume_from_checkpoint=true for the newest complete one"
        )
    return str(choice)


def export(trainer, processor, args, results: dict, model_args, data_dir=None) -> Path:
    """Merge LoRA and save a plain model + processor + scoring pipeline + ``eval_results.json`` (``results``, see
    :func:`eval_results`) + ``training_summary.json`` (:mod:`trainers.training.training_summary`) + the output dir's
    ``plots/`` + card into the export dir, atomically (main process; others wait). ``data_dir``'s ``stats.json``
    names the data set. A 4-bit (QLoRA) model is not merged in place: its adapter
    is merged into the LLM reloaded unquantized (:func:`trainers.training.stage_model.unquantized_copy`)."""
    export_dir = Path(args.export_dir or Path(args.output_dir) / "merged")
    if trainer.is_world_process_zero():
        summary = training_summary(trainer, args, model_args, data_dir)
        write_json_atomic(Path(args.output_dir) / "training_summary.json", summary)
        with staging_dir(export_dir) as staging:
            model = trainer.accelerator.unwrap_model(trainer.model)
            save_merged(unquantized_copy(model, model_args, args) if is_quantized(model) else model, processor, staging)
            write_json_atomic(staging / "eval_results.json", results)
            write_json_atomic(staging / "training_summary.json", summary)
            shutil.copytree(Path(args.output_dir) / PLOTS_DIR, staging / PLOTS_DIR)  # written by run_stage
        write_model_card(export_dir)  # after the move: the card names its folder
        logger.info("merged model, eval results and card written to %s", export_dir)
    trainer.accelerator.wait_for_everyone()
    return export_dir
