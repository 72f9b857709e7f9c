"""``cl3mrec train`` (one stage from a YAML) and ``cl3mrec pipeline`` (the whole recipe end to end).

One stage: parse the three argument dataclasses → check the stage against the template → build the
model around the LLM (+ LoRA, + the previous stage's adapter) → freeze per stage → tokenise → train →
score the eval split (AUC/UAUC) → save the adapter, ``eval_results.json`` and a merged plain model.
Safe under ``accelerate launch``: only the main process writes caches, exports and cards.
"""

import argparse
import contextlib
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from transformers import EarlyStoppingCallback, set_seed

from data_scripts.io import load_dataset_dict, read_stats
from modeling_cl3mrec import CL3MRecProcessor
from modeling_cl3mrec.processing_cl3mrec import template_uses_ids

from .atomic_io import require_empty_or_own, staging_dir, write_json_atomic, write_npy_atomic
from .config_values import load_yaml_file
from .llm_loading import add_lora, build_cl3mrec, save_merged
from .metrics import ranking_report
from .model_card import dataset_name_from_source, write_model_card
from .model_dirs import CF_MODEL_TYPE, require_model_dir
from .prompt_dataset import CL3MRecCollator, tokenize_dataset
from .prompt_templates import load_template
from .run_state import (
    checkpoint_is_complete,
    clear_stage_complete,
    mark_stage_complete,
    newest_complete_checkpoint,
    require_stage_complete,
)
from .stages import apply_stage, check_stage_settings, merged_frozen_lora
from .contrastive import TextViews, user_text_table
from .text_representations import collect_item_titles, item_text_table
from .trainer import CL3MRecTrainer
from .training_args import parse_config

logger = logging.getLogger(__name__)

# What a stage writes into its output_dir (Trainer files included): another non-empty folder is refused.
STAGE_OUTPUT_FILES = (
    "stage_complete.json", "checkpoint-*", "trainer_state.json", "*_results.json", "adapter_*", "training_args.bin",
    "eval_*.npy", "merged", "training_summary.json", "runs",
)
EXPORT_FILES = ("config.json", "*.safetensors", "eval_results.json", "training_summary.json")  # a merged model
HELD_OUT_SPLITS = ("test",)  # never read during training (no titles, no tuning)


def subsample_indices(num_rows: int, size: int | None, seed: int, keep_order: bool) -> np.ndarray:
    """Row indices of a random subsample of ``size`` rows (all rows when ``None`` or larger);
    ``keep_order`` sorts them so the original row order survives."""
    if size is None or size >= num_rows:
        return np.arange(num_rows)
    indices = np.random.default_rng(seed).choice(num_rows, size=size, replace=False)
    return np.sort(indices) if keep_order else indices


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


def cf_glue(model_args) -> dict:
    """The `CL3MRecConfig` fields that decide how CF knowledge enters the model (placeholder templates only)."""
    return {
        "cf_features": model_args.cf_features,
        "score_fusion": model_args.score_fusion,
        "alignment_dim": model_args.alignment_dim,
    }


def build_stage_model(model_args, args, template: str, with_ids: bool):
    """``(peft_model, tokenizer)`` for one stage: LLM (+ CF encoder + projector) + LoRA (+ previous adapter).

    Freezing comes later (:func:`trainers.stages.apply_stage`): PEFT's ``disable_adapter()`` and
    ``load_adapter`` switch adapter parameters back to trainable. ``use_history_embeddings`` only applies
    with a placeholder template (``with_ids``): a text-only model has no CF encoder to embed history with."""
    if with_ids and model_args.cf_model_dir is None:
        raise ValueError(f"template {model_args.template!r} has CF placeholders: set cf_model_dir")
    if model_args.init_from:
        require_stage_complete(model_args.init_from)  # else its recipe and adapter may be missing or stale
    require_model_dir(model_args.llm_path, "llm_path", forbid_type=CF_MODEL_TYPE)
    if with_ids:
        require_model_dir(model_args.cf_model_dir, "cf_model_dir", model_type=CF_MODEL_TYPE)
    if model_args.use_history_embeddings and not with_ids:
        logger.warning("template %r is text-only: use_history_embeddings is ignored", model_args.template)
    model, tokenizer = build_cl3mrec(
        model_args.llm_path,
        cf_model_dir=model_args.cf_model_dir if with_ids else None,
        prompt_template=template if with_ids else None,
        text_prompt_template=None if with_ids else template,
        tokens_per_entity=model_args.tokens_per_entity,
        use_history_embeddings=model_args.use_history_embeddings and with_ids,
        max_history=args.max_history,
        answer_score=model_args.answer_score,
        **(cf_glue(model_args) if with_ids else {}),
        quantization=None if model_args.quantization == "none" else model_args.quantization,
        dtype=model_args.dtype,
        contrastive_weight=args.contrastive_weight,
        contrastive_temperature=args.contrastive_temperature,
    )
    model = add_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    if model_args.init_from:
        load_stage_adapter(model, model_args.init_from)
    elif args.stage != "lora":
        logger.warning("stage %s without init_from: LoRA starts from zero (no stage-lora adapter)", args.stage)
    return model, tokenizer


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


def build_text_views(peft_model, tokenizer, dataset_dict, model_args, data_args, args) -> TextViews:
    """The frozen base LLM's text view of every item (cached) and user, for the contrastive loss and report.

    Items count as valid when titled and warm (a train target); users are described by their last train history.
    Held-out splits are never read."""
    stats = read_stats(data_args.data_dir)
    titles = collect_item_titles(
        [split for name, split in dataset_dict.items() if name not in HELD_OUT_SPLITS], stats["num_items"]
    )
    items, has_text = item_text_table(
        peft_model.get_base_model().language_model,
        tokenizer,
        titles,
        data_args.text_cache_dir,
        model_args.llm_path,
        data_args.item_text_template,
        adapter_context=peft_model.disable_adapter(),
        bf16=args.bf16,
    )
    train = dataset_dict[data_args.train_split].select_columns(["user_id", "item_id", "timestamp", "history_item_ids"])
    warm = torch.zeros(stats["num_items"], dtype=torch.bool)
    warm[torch.as_tensor(train["item_id"], dtype=torch.long)] = True
    users, user_valid = user_text_table(
        items, has_text, np.asarray(train["user_id"]), np.asarray(train["timestamp"]), train["history_item_ids"],
        stats["num_users"], args.max_history,
    )
    return TextViews(items, has_text & warm, users, user_valid)


@dataclass
class StageSetup:
    """Everything one stage needs: the trainer, its processor and the eval rows (raw, and their split indices)."""

    trainer: CL3MRecTrainer
    processor: CL3MRecProcessor
    eval_raw: object
    eval_rows: np.ndarray


def build_stage(model_args, data_args, args) -> StageSetup:
    """Check the stage against the template, build model + data + text views, return a ready trainer."""
    template = load_template(model_args.template)
    with_ids = template_uses_ids(template)
    check_stage_settings(args.stage, with_ids, args.contrastive_weight, args.train_cf_encoder)
    set_seed(args.seed)
    dataset_dict = load_dataset_dict(data_args.data_dir)
    for split in (data_args.train_split, data_args.eval_split):
        if split not in dataset_dict:
            raise ValueError(f"{data_args.data_dir}: no split {split!r}; found {list(dataset_dict)}")
    model, tokenizer = build_stage_model(model_args, args, template, with_ids)
    config = model.get_base_model().config
    processor = CL3MRecProcessor.from_model_config(tokenizer, config, with_ids)

    train_raw, eval_raw = dataset_dict[data_args.train_split], dataset_dict[data_args.eval_split]
    seed = data_args.subsample_seed
    train_raw = train_raw.select(subsample_indices(len(train_raw), data_args.max_train_samples, seed, False))
    eval_rows = subsample_indices(len(eval_raw), data_args.max_eval_samples, seed, True)
    eval_raw = eval_raw.select(eval_rows)
    with args.main_process_first(desc="tokenising prompts"):
        train_set = tokenize_dataset(train_raw, processor) if args.do_train else None
        eval_set = tokenize_dataset(eval_raw, processor)

    text_views = None
    if with_ids:  # the contrastive loss needs them; the alignment report reads them for every CF stage
        text_views = build_text_views(model, tokenizer, dataset_dict, model_args, data_args, args)
    apply_stage(model, args.stage, args.train_cf_encoder)  # after disable_adapter(), which unfreezes adapters

    patience = args.early_stopping_patience
    trainer = CL3MRecTrainer(
        model=model,
        args=args,
        data_collator=CL3MRecCollator(processor),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=processor,
        callbacks=[EarlyStoppingCallback(patience)] if patience else None,
        text_views=text_views,
    )
    return StageSetup(trainer, processor, eval_raw, eval_rows)


def run_stage(model_args, data_args, args) -> dict:
    """Run one stage; return the eval metrics (``eval_auc``, ``eval_uauc``, …) also written to
    ``<output_dir>/eval_results.json``. Scores of the eval split go to ``<output_dir>/eval_scores.npy``
    (rows ``eval_rows.npy`` of the split, in order)."""
    require_empty_or_own(args.output_dir, STAGE_OUTPUT_FILES, "output_dir")
    if args.export_dir:  # replaced whole by the export
        require_empty_or_own(args.export_dir, EXPORT_FILES, "export_dir")
    if PartialState().is_main_process:
        clear_stage_complete(args.output_dir)  # unfinished until the very end
    setup = build_stage(model_args, data_args, args)
    trainer, processor, eval_raw = setup.trainer, setup.processor, setup.eval_raw
    alignment_before = trainer.alignment_report()
    if args.do_train:
        resume = resume_checkpoint(args.resume_from_checkpoint, args.output_dir, trainer.is_world_process_zero())
        attention = training_attention(trainer.model, model_args.train_attn_implementation, args.device.type)
        with attention, merged_frozen_lora(trainer.model):
            train_result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()

    prediction = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    metrics = {**prediction.metrics, **trainer.flush_metrics("eval")}
    metrics.update({f"eval_{key}": value for key, value in trainer.alignment_report().items()})
    metrics.update({f"eval_{key}_before_training": value for key, value in alignment_before.items()})
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        write_npy_atomic(Path(args.output_dir) / "eval_scores.npy", np.asarray(prediction.predictions, dtype=np.float64))
        write_npy_atomic(Path(args.output_dir) / "eval_rows.npy", setup.eval_rows)
    export_dir = None
    if args.do_train:
        report = ranking_report(eval_raw["user_id"], eval_raw["label"], prediction.predictions, eval_raw["warm"])
        export_dir = export(trainer, processor, args, report, data_args.eval_split, model_args, data_args.data_dir)
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
            logger.warning("resume_from_checkpoint: no complete checkpoint in %s yet; training from step 0", output_dir)
        return None if checkpoint is None else str(checkpoint)
    if not checkpoint_is_complete(Path(choice)):
        raise ValueError(
            f"resume_from_checkpoint={choice}: not a complete checkpoint (no readable trainer_state.json); "
            "use resume_from_checkpoint=true for the newest complete one"
        )
    return str(choice)


def training_summary(trainer, args, model_args, data_dir=None) -> dict:
    """``training_summary.json`` of a finished stage: the recipe so far (the previous stage's recipe, if it
    wrote one, + this stage with its template, train rows, epochs trained and, past ``lora``, λ and τ) and the
    data set's name from ``data_dir``'s ``stats.json``."""
    previous = Path(model_args.init_from or "") / "training_summary.json"
    recipe = json.loads(previous.read_text())["stage_recipe"] if model_args.init_from and previous.is_file() else []
    stage = {
        "stage": args.stage,
        "template": model_args.template,
        "train_rows": len(trainer.train_dataset),
        "epochs": round(float(trainer.state.epoch or 0.0), 3),
    }
    if args.stage != "lora":
        stage.update(contrastive_weight=args.contrastive_weight, contrastive_temperature=args.contrastive_temperature)
    summary = {"stage_recipe": recipe + [stage], "init_from": model_args.init_from}
    if data_dir is not None:
        source = read_stats(data_dir).get("source", "")
        summary.update(dataset_name=dataset_name_from_source(source), data_source=source)
    return summary


def export(trainer, processor, args, report: dict, eval_split: str, model_args, data_dir=None) -> Path:
    """Merge LoRA and save a plain model + processor + scoring pipeline + ``eval_results.json`` +
    ``training_summary.json`` + card into the export dir, atomically (main process; others wait). ``data_dir``'s ``stats.json`` names the data set."""
    export_dir = Path(args.export_dir or Path(args.output_dir) / "merged")
    if trainer.is_world_process_zero():
        summary = training_summary(trainer, args, model_args, data_dir)
        write_json_atomic(Path(args.output_dir) / "training_summary.json", summary)
        with staging_dir(export_dir) as staging:
            save_merged(trainer.accelerator.unwrap_model(trainer.model), processor, staging)
            write_json_atomic(staging / "eval_results.json", {eval_split: report})
            write_json_atomic(staging / "training_summary.json", summary)
        write_model_card(export_dir, default_split=eval_split)  # after the move: the card names its folder
        logger.info("merged model, eval results and card written to %s", export_dir)
    trainer.accelerator.wait_for_everyone()
    return export_dir


RELOAD_SCRIPT = """
import sys
import numpy as np
from datasets import load_from_disk
from transformers import pipeline
model_dir, data_dir, split, rows_file, out = sys.argv[1:6]
recommender = pipeline("cl3mrec-scoring", model=model_dir, trust_remote_code=True, device="cpu")
if any(name.split(".")[0] in ("modeling_cl3mrec", "trainers", "data_scripts") for name in sys.modules):
    sys.exit("a local cl3mrec package was imported: the remote-code path is not what ran")
records = load_from_disk(data_dir)[split].select(np.load(rows_file)).to_list()
np.save(out, np.array([result["score"] for result in recommender(records, batch_size=16)]))
"""
PIPELINE_KEYS = {"out_dir", "seed", "data", "cf", "llm", "defaults", "stages", "reload_atol"}


def reload_scores(model_dir: Path, data_dir: Path, split: str, rows_file: Path) -> np.ndarray:
    """Scores of an exported model through ``pipeline("cl3mrec-scoring", trust_remote_code=True)`` (AutoModel +
    AutoProcessor + the custom pipeline) in a fresh Python process that never imports this repository's
    packages (so the copied remote code is what runs)."""
    out = model_dir / "reload_scores.npy"
    command = [sys.executable, "-c", RELOAD_SCRIPT, str(model_dir), str(data_dir), split, str(rows_file), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        raise RuntimeError(f"reloading {model_dir} in a fresh process failed:\n{result.stderr[-3000:]}")
    return np.load(out)


def prepare_pipeline_inputs(spec: dict, out_dir: Path, seed: int) -> dict:
    """Synthetic data → pretrained CF encoder → tiny LLM (main process only); returns the CF report."""
    from data_scripts.synthetic import generate_synthetic

    from .cf_training import DEFAULT_MAX_HISTORY, TRAIN_DEFAULTS, load_cf_data, save_run, train_cf_model
    from .tiny_llm import build_tiny_llm, texts_from_dataset

    data_dir, cf_dir, llm_dir = out_dir / "data", out_dir / "cf", out_dir / "llm"
    generate_synthetic(data_dir, seed=seed, **spec.get("data", {}))
    cf_spec = spec.get("cf", {})
    model_fields = dict(cf_spec.get("model", {"encoder_type": "mf", "hidden_size": 16}))
    splits, num_users, num_items = load_cf_data(str(data_dir), model_fields.get("max_history", DEFAULT_MAX_HISTORY))
    cf_model, summary = train_cf_model(
        model_fields, {**TRAIN_DEFAULTS, **cf_spec.get("train", {})}, splits, num_users, num_items, seed
    )
    save_run(cf_model, summary, cf_dir)
    build_tiny_llm(llm_dir, arch=spec.get("llm", {}).get("arch", "llama"), texts=texts_from_dataset(data_dir), seed=seed)
    return {"valid_small_auc": summary["valid_small"]["auc"], "valid_small_uauc": summary["valid_small"]["uauc"]}


def run_pipeline(config_path: str) -> dict:
    """The whole recipe on synthetic data with a tiny LLM: data → CF pretraining → each stage of
    ``stages`` (each continues from the previous one) → export → reload in a fresh process → same scores.

    Results are also written to ``<out_dir>/pipeline_results.json``.
    """
    spec = load_yaml_file(config_path) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{config_path}: expected a mapping with out_dir and stages")
    unknown = sorted(set(spec) - PIPELINE_KEYS)
    if unknown or "stages" not in spec or "out_dir" not in spec:
        raise ValueError(f"{config_path}: needs out_dir and stages; unknown key(s) {unknown}; known {sorted(PIPELINE_KEYS)}")
    out_dir, seed = Path(spec["out_dir"]), int(spec.get("seed", 0))
    # Parse every stage first (fail fast); the TrainingArguments also set up the process state (use_cpu
    # included), so it must exist before PartialState() is asked which process is the main one.
    stages, previous = [], None
    for index, stage_spec in enumerate(spec["stages"]):
        stage_spec = dict(stage_spec)
        name = stage_spec.pop("name", stage_spec.get("stage", f"stage{index}"))
        values = {
            "seed": seed,
            "llm_path": str(out_dir / "llm"),
            "data_dir": str(out_dir / "data"),
            "cf_model_dir": str(out_dir / "cf"),
            "text_cache_dir": str(out_dir / "cache"),
            "init_from": previous,
            "do_train": True,
            **spec.get("defaults", {}),
            **stage_spec,
            "output_dir": str(out_dir / name),
        }
        stages.append((name, parse_config(values)))
        previous = values["output_dir"]
    state = stages[0][1][2].distributed_state
    results = {"cf": None, "stages": {}}
    if state.is_main_process:
        results["cf"] = prepare_pipeline_inputs(spec, out_dir, seed)
    state.wait_for_everyone()

    for name, (model_args, data_args, args) in stages:
        metrics = run_stage(model_args, data_args, args)
        results["stages"][name] = {key: value for key, value in metrics.items() if key.startswith("eval_")}

    if state.is_main_process:
        stage_dir = Path(args.output_dir)
        export_dir = Path(args.export_dir or stage_dir / "merged")
        expected = np.load(stage_dir / "eval_scores.npy")
        reloaded = reload_scores(export_dir, out_dir / "data", data_args.eval_split, stage_dir / "eval_rows.npy")
        difference = float(np.abs(expected - reloaded).max())
        results.update(
            export_dir=str(export_dir),
            reload_max_abs_diff=difference,
            reload_identical=bool(difference <= float(spec.get("reload_atol", 1e-4))),
        )
        write_json_atomic(out_dir / "pipeline_results.json", results)
    state.wait_for_everyone()
    return results


def train_command(args: argparse.Namespace) -> int:
    """``cl3mrec train --config configs/ml1m/<exp>.yaml [key=value ...]``."""
    model_args, data_args, training_args = parse_config(args.config, args.overrides)
    metrics = run_stage(model_args, data_args, training_args)
    logger.info("eval_auc %.4f eval_uauc %.4f", metrics.get("eval_auc", float("nan")), metrics.get("eval_uauc", float("nan")))
    return 0


def pipeline_command(args: argparse.Namespace) -> int:
    """``cl3mrec pipeline --config configs/smoke.yaml``: synthetic data → CF → tiny LLM → stages → reload check.

    The results JSON is the last line of stdout; everything printed on the way (Trainer's metric dumps and
    log dicts) goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        results = run_pipeline(args.config)
    if PartialState().is_main_process:
        print(json.dumps(results))  # the CLI's answer, on stdout
    return 0 if results.get("reload_identical", True) else 1


def register(subparsers) -> None:
    """Add ``train`` and ``pipeline`` to the ``cl3mrec`` CLI."""
    train = subparsers.add_parser("train", help="Run one CL3M-Rec training stage from a YAML config.")
    train.add_argument("--config", required=True, help="YAML with ModelArguments/DataArguments/TrainingArguments fields")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value or --key value overrides")
    train.set_defaults(func=train_command)
    pipeline = subparsers.add_parser("pipeline", help="Run the whole recipe end to end (smoke test).")
    pipeline.add_argument("--config", required=True, help="pipeline YAML, e.g. configs/smoke.yaml")
    pipeline.set_defaults(func=pipeline_command)
