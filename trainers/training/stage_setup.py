"""Everything one training stage needs before ``trainer.train()``: checked settings, data, model, text views.

:func:`build_stage` is the library API of a stage (the CLI only parses arguments and calls it through
:func:`trainers.training.stage_run.run_stage`): it checks the stage against the template, draws the subsamples,
tokenises, builds the model (:func:`trainers.training.stage_model.build_stage_model`), the text views of the contrastive
loss, freezes per stage and returns a ready :class:`trainers.training.trainer.CL3MRecTrainer`.
"""

from dataclasses import dataclass

import numpy as np
import torch
from transformers import EarlyStoppingCallback, set_seed

from data_scripts.io import load_dataset_dict, read_stats
from modeling_cl3mrec import CL3MRecProcessor
from modeling_cl3mrec.processing_cl3mrec import template_uses_ids

from ..llm_loading import unwrap_peft
from ..prompt_templates import load_template
from .contrastive import TextViews, user_text_table
from .cross_fitting import add_cross_fitted_columns, cross_fit_split
from .prompt_dataset import CL3MRecCollator, tokenize_dataset
from .stage_model import build_stage_model
from .stages import apply_stage, check_stage_settings
from .text_representations import collect_item_titles, item_text_table
from .trainer import CL3MRecTrainer

HELD_OUT_SPLITS = ("test",)  # never read during training (no titles, no tuning)


def subsample_indices(num_rows: int, size: int | None, seed: int, keep_order: bool) -> np.ndarray:
    """Row indices of a random subsample of ``size`` rows (all rows when ``None`` or larger);
    ``keep_order`` sorts them so the original row order survives."""
    if size is None or size >= num_rows:
        return np.arange(num_rows)
    indices = np.random.default_rng(seed).choice(num_rows, size=size, replace=False)
    return np.sort(indices) if keep_order else indices


def build_text_views(peft_model, processor, dataset_dict, stats: dict, model_args, data_args, args) -> TextViews:
    """The frozen base LLM's text view of every item (cached) and user, for the contrastive loss and report.

    Items count as valid when titled and warm (a train target); users are described by their last train history,
    the processor's ``max_history`` most recent items as in the prompt. Held-out splits are never read. ``stats``
    (the data's ``stats.json``) sizes the tables."""
    titles = collect_item_titles(
        [split for name, split in dataset_dict.items() if name not in HELD_OUT_SPLITS], stats["num_items"]
    )
    items, has_text = item_text_table(
        peft_model.get_base_model().language_model,
        processor.tokenizer,
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
        stats["num_users"], processor.recent_history,
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
    check_stage_settings(
        args.stage, with_ids, args.contrastive_weight, args.train_cf_encoder,
        args.cf_cross_fit_folds, model_args.use_history_embeddings,
    )  # fmt: skip
    set_seed(args.seed)
    dataset_dict = load_dataset_dict(data_args.data_dir)
    for split in (data_args.train_split, data_args.eval_split):
        if split not in dataset_dict:
            raise ValueError(f"{data_args.data_dir}: no split {split!r}; found {list(dataset_dict)}")
    stats = read_stats(data_args.data_dir)  # id space: the CF model must match it; the text tables are its size
    model, tokenizer = build_stage_model(model_args, args, template, with_ids, stats)
    config = model.get_base_model().config
    processor = CL3MRecProcessor.from_model_config(tokenizer, config, with_ids, max_history=model_args.max_history)

    train_raw, eval_raw = dataset_dict[data_args.train_split], dataset_dict[data_args.eval_split]
    seed = data_args.subsample_seed
    train_rows = subsample_indices(len(train_raw), data_args.max_train_samples, seed, False)
    train_raw = train_raw.select(train_rows)
    if args.cf_cross_fit_folds and args.do_train:
        base = unwrap_peft(model)
        inputs = cross_fit_split(
            base.cf_encoder, base.config.cf_features, model_args.cf_model_dir, dataset_dict, data_args.train_split,
            args.cf_cross_fit_folds, args.seed, processor.recent_history,
        )  # fmt: skip
        train_raw = add_cross_fitted_columns(train_raw, inputs, train_rows)
    eval_rows = subsample_indices(len(eval_raw), data_args.max_eval_samples, seed, True)
    eval_raw = eval_raw.select(eval_rows)
    with args.main_process_first(desc="tokenising prompts"):
        train_set = tokenize_dataset(train_raw, processor) if args.do_train else None
        eval_set = tokenize_dataset(eval_raw, processor)

    text_views = None
    if with_ids:  # the contrastive loss needs them; the alignment report reads them for every CF stage
        text_views = build_text_views(model, processor, dataset_dict, stats, model_args, data_args, args)
    apply_stage(model, args.stage, args.train_cf_encoder, args.contrastive_weight)  # after disable_adapter(), which unfreezes adapters

    patience = args.early_stopping_patience
    prefix_parts = unwrap_peft(model).shared_prefix_parts if args.share_prefix else None
    trainer = CL3MRecTrainer(
        model=model,
        args=args,
        data_collator=CL3MRecCollator(processor, prefix_parts),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=processor,
        callbacks=[EarlyStoppingCallback(patience)] if patience else None,
        text_views=text_views,
    )
    return StageSetup(trainer, processor, eval_raw, eval_rows)
