"""``training_summary.json`` of a finished stage: what the model card reports about how the model was trained.

The recipe so far (the previous stage's, if it wrote one, + this stage), each stage's hyper-parameters, the base
LLM (``base_model``: its Hub id, or ``base_model_folder``: only the name of a local folder), the framework versions
that trained it and the data set's name. Nothing in it names a local path except ``init_from`` and ``data_source``,
which the card and the upload (``cl3mrec push``) leave out.
"""

import enum
import json
from pathlib import Path

from data_scripts.io import read_stats

from ..hub.model_card import dataset_name_from_source, framework_versions, is_hub_id

# Training arguments a card lists per stage (CL3MRecTrainingArguments / TrainingArguments fields).
TRAINING_HYPERPARAMETERS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "bf16", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "contrastive_weight", "contrastive_temperature", "train_cf_encoder",
    "cf_cross_fit_folds",
)
MODEL_HYPERPARAMETERS = ("template", "max_history", "tokens_per_entity", "quantization")  # ModelArguments fields


def _plain(value):
    """A JSON scalar for the card: enums by value, lists joined with ``", "``."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return value


def stage_hyperparameters(args, model_args) -> dict:
    """``{"stage", <hyper-parameter>: value, "total_train_batch_size"}`` of one stage, in a fixed order."""
    values = {"stage": args.stage}
    values.update({name: _plain(getattr(model_args, name)) for name in MODEL_HYPERPARAMETERS})
    values.update({name: _plain(getattr(args, name)) for name in TRAINING_HYPERPARAMETERS})
    values["total_train_batch_size"] = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
    return values


def training_summary(trainer, args, model_args, data_dir=None) -> dict:
    """The stage's ``training_summary.json``: ``stage_recipe`` (per stage: template, train rows, epochs trained and,
    past ``lora``, λ and τ), ``hyperparameters`` (per stage, :func:`stage_hyperparameters`), ``base_model`` /
    ``base_model_folder``, ``framework_versions``, ``init_from`` and, from ``data_dir``'s ``stats.json``, the data
    set's name."""
    previous_path = Path(model_args.init_from or "") / "training_summary.json"
    previous = json.loads(previous_path.read_text()) if model_args.init_from and previous_path.is_file() else {}
    stage = {
        "stage": args.stage,
        "template": model_args.template,
        "train_rows": len(trainer.train_dataset),
        "epochs": round(float(trainer.state.epoch or 0.0), 3),
    }
    if args.stage != "lora":
        stage.update(contrastive_weight=args.contrastive_weight, contrastive_temperature=args.contrastive_temperature)
    summary = {
        "stage_recipe": previous.get("stage_recipe", []) + [stage],
        "hyperparameters": previous.get("hyperparameters", [])
        + [stage_hyperparameters(args, model_args)],
        "base_model": model_args.llm_path if is_hub_id(model_args.llm_path) else None,
        "base_model_folder": None if is_hub_id(model_args.llm_path) else Path(model_args.llm_path).name,
        "framework_versions": framework_versions(),
        "init_from": model_args.init_from,
    }
    if data_dir is not None:
        source = read_stats(data_dir).get("source", "")
        summary.update(dataset_name=dataset_name_from_source(source), data_source=source)
    return summary
