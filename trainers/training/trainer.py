"""``CL3MRecTrainer``: ``transformers.Trainer`` + contrastive CF/text alignment + AUC/UAUC evaluation.

Shaped after TRL's ``RewardTrainer``: ``compute_loss`` computes the whole loss (BCE on the answer score
+ λ · the whole-table InfoNCE of :mod:`trainers.training.contrastive`: items both directions, users CF → text),
returns ``(loss, outputs)`` when asked, and logs each term through a per-mode metrics buffer that the overridden
:meth:`CL3MRecTrainer.log` averages (``loss/rec``, ``loss/contrastive`` and ``loss/contrastive_{item,user}``,
``contrastive/accuracy`` and ``contrastive/{item,user}_accuracy``, and ``fusion/weight`` / ``fusion/answer_weight``
with a score fusion). Evaluation returns the answer scores in row order with ``[label, user_id, warm]`` as label
ids, so Trainer's gathering (DDP included) keeps rows aligned and ``compute_metrics`` reports ``eval_auc``,
``eval_uauc``, ``eval_warm_auc``, … via ``ranking_report``.
Evaluation batches are length-sorted (longest first: little left padding, as in ``CL3MRecScorer``); the
predictions are put back in dataset order before anyone sees them. With ``args.share_prefix`` the rows of one user
context (same user and history) sit next to each other, in training (groups shuffled each epoch) and in evaluation,
so that each batch runs a shared prompt prefix once (see ``CL3MRecModel.forward``).
"""

import contextlib
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import EvalPrediction, Trainer

from ..inference.metrics import ranking_report
from ..llm_loading import unwrap_peft
from .contrastive import TextViews, contrastive_alignment, item_retrieval_recall
from .prompt_dataset import CROSS_FIT_COLUMNS, context_groups, grouped_order, length_sorted_order

MODEL_INPUT_KEYS = (
    "input_ids",
    "attention_mask",
    "user_ids",
    "item_ids",
    "history_item_ids",
    "labels",
    "prefix_input_ids",
    "prefix_attention_mask",
    "prefix_index",
    *CROSS_FIT_COLUMNS,
)
ROW_USER_KEY = "row_user_ids"  # [B] user id of each row, for UAUC (text-only batches carry no user_ids)
ROW_WARM_KEY = "row_warm"  # [B] bool, both user and item seen in train


class RowMetadataCollator:
    """Wrap a collator so every batch also carries ``row_user_ids`` and ``row_warm`` from the raw columns.

    The rows must keep the ``user_id`` and ``warm`` columns (``remove_unused_columns=False``). These keys
    never reach the model: :meth:`CL3MRecTrainer.compute_loss` passes only ``MODEL_INPUT_KEYS``.
    """

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        for key, column in ((ROW_USER_KEY, "user_id"), (ROW_WARM_KEY, "warm")):
            if features and column not in features[0]:
                raise ValueError(f"rows reaching the collator need a {column!r} column for evaluation metrics")
            batch[key] = torch.tensor([feature[column] for feature in features], dtype=torch.long)
        return batch


class LengthSortedSampler(Sampler[int]):
    """Dataset indices longest first (``length`` column): evaluation batches of similar length; with ``groups``
    (:func:`~trainers.training.prompt_dataset.context_groups`), the rows of a group next to each other, longest group
    first. The order is deterministic, so every DDP rank shards the same sequence and the gathered predictions
    follow it."""

    def __init__(self, lengths, groups=None):
        self.order = length_sorted_order(lengths) if groups is None else grouped_order(groups, lengths)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)


class ContextGroupedSampler(Sampler[int]):
    """Training order with the rows of each user context (same prompt prefix) next to each other; the groups come
    in a new random order each epoch (``seed + epoch``), rows of a group in dataset order. Batches cut from it share
    prefixes; a group may straddle two batches.

    Args:
        groups `[N]`: the context group of each row (:func:`~trainers.training.prompt_dataset.context_groups`).
        seed: the order of epoch e is a function of ``seed + e`` only, so a resumed run replays it.
        epoch: returns the current epoch when an iterator is made. The trainer passes its state's epoch, which is
            right after a mid-epoch resume too, where a ``set_epoch`` method would not be reached through DDP's
            batch-sampler wrappers.
    """

    def __init__(self, groups, seed: int, epoch: Callable[[], int]):
        self.groups = np.asarray(groups)
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        generator = np.random.default_rng(self.seed + self.epoch())
        return iter(grouped_order(self.groups, generator=generator))


def compute_ranking_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """AUC / UAUC (all, warm, cold) from scores ``[N]`` and label ids ``[N, 3]`` = (label, user_id, warm)."""
    scores = np.asarray(eval_prediction.predictions, dtype=np.float64).reshape(-1)
    targets = np.asarray(eval_prediction.label_ids)
    report = ranking_report(targets[:, 1], targets[:, 0], scores, targets[:, 2].astype(bool))
    metrics = {}
    for prefix, part in (("", report), ("warm_", report.get("warm") or {}), ("cold_", report.get("cold") or {})):
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):  # undefined metrics are None
                metrics[f"{prefix}{key}"] = float(value)
    return metrics


class CL3MRecTrainer(Trainer):
    """Trainer for every CL3M-Rec stage; freezing is done beforehand by :func:`trainers.training.stages.apply_stage`.

    Args:
        text_views: the LLM text view of every item and user (:class:`trainers.training.contrastive.TextViews`); required
            when ``args.contrastive_weight > 0``.
        Other arguments as ``transformers.Trainer``; ``data_collator`` is wrapped in
        :class:`RowMetadataCollator` and ``compute_metrics`` defaults to :func:`compute_ranking_metrics`.
    """

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(self, *args, text_views: TextViews | None = None, **kwargs):
        kwargs.setdefault("compute_metrics", compute_ranking_metrics)
        if kwargs.get("data_collator") is None:
            raise ValueError("CL3MRecTrainer needs a data_collator (trainers.training.prompt_dataset.CL3MRecCollator)")
        kwargs["data_collator"] = RowMetadataCollator(kwargs["data_collator"])
        super().__init__(*args, **kwargs)
        if self.args.contrastive_weight > 0 and text_views is None:
            raise ValueError("contrastive_weight > 0 needs text_views (the LLM text representation of every entity)")
        self.text_views = text_views
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}

    @contextlib.contextmanager
    def whole_prompts(self):
        """Collate whole prompts for the block (no shared prefixes): compiled decoder layers need them, as each
        layer's KV-cache entry would make dynamo compile a graph per layer."""
        collator = self.data_collator.collator  # the CL3MRecCollator this trainer wraps
        prefix_parts, collator.prefix_parts = collator.prefix_parts, None
        try:
            yield
        finally:
            collator.prefix_parts = prefix_parts

    def create_optimizer(self, model=None):
        """Trainer's optimizer, with the residual-fusion weight in a group of its own at ``args.fusion_learning_rate``
        (no weight decay); the LR schedule scales it like every other group."""
        is_new = self.optimizer is None
        optimizer = super().create_optimizer(model)
        fusion = [
            param
            for name, param in (self.model if model is None else model).named_parameters()
            if param.requires_grad and "score_fusion" in name
        ]
        if is_new and fusion:
            moved = {id(param) for param in fusion}
            for group in optimizer.param_groups:
                group["params"] = [param for param in group["params"] if id(param) not in moved]
            optimizer.add_param_group({"params": fusion, "lr": self.args.fusion_learning_rate, "weight_decay": 0.0})
        return optimizer

    def _record(self, name: str, value: torch.Tensor) -> None:
        """Buffer ``value`` (a detached scalar tensor) for the current mode; no device sync on the step path."""
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][name].append(value.detach().float().reshape(()))

    def _views_on(self, device) -> TextViews:
        if self.text_views.items.device != device:
            self.text_views = self.text_views.to(device)
        return self.text_views

    def _contrastive(self, model, outputs, inputs: dict) -> torch.Tensor:
        """Mean of the item-level and user-level table InfoNCE; logs their losses and top-1 accuracies."""
        views = self._views_on(outputs.cf_user_embeds.device)
        results = contrastive_alignment(
            self.accelerator.unwrap_model(model),
            views,
            inputs["user_ids"],
            outputs.cf_user_embeds,
            self.args.contrastive_temperature,
        )
        device = outputs.cf_user_embeds.device
        loss = torch.stack([result.loss for result in results.values()]).mean()
        for kind, result in results.items():
            self._record(f"contrastive/{kind}_accuracy", result.accuracy.to(device))
            self._record(f"loss/contrastive_{kind}", result.loss)
        accuracies = torch.stack([result.accuracy for result in results.values()]).to(device)
        self._record("contrastive/accuracy", accuracies.nanmean())
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``loss = BCE(score, label) + λ · InfoNCE`` (λ = ``args.contrastive_weight``); per-batch mean.

        Only ``MODEL_INPUT_KEYS`` reach the model; row metadata stays behind for evaluation.
        """
        model_inputs = {key: inputs[key] for key in MODEL_INPUT_KEYS if inputs.get(key) is not None}
        if "labels" not in model_inputs:
            raise ValueError("CL3MRecTrainer.compute_loss needs 'labels' in the batch")
        # Stage cie freezes the LLM: the prompt before the first CF placeholder needs no autograd graph.
        outputs = model(**model_inputs, frozen_prefix=self.args.stage == "cie")
        loss = outputs.loss
        self._record("loss/rec", loss)
        fusion = unwrap_peft(self.accelerator.unwrap_model(model)).score_fusion
        if fusion is not None:
            self._record("fusion/weight", fusion.weight)
            if fusion.answer_weight is not None:
                self._record("fusion/answer_weight", fusion.answer_weight)
        if self.args.contrastive_weight > 0:
            if outputs.cf_user_embeds is None:
                raise ValueError("contrastive_weight > 0 but the batch has no CF placeholders (text-only template?)")
            contrastive = self._contrastive(model, outputs, model_inputs)
            self._record("loss/contrastive", contrastive)
            loss = loss + self.args.contrastive_weight * contrastive
        return (loss, outputs) if return_outputs else loss

    def floating_point_ops(self, inputs: dict) -> int:
        """The base class's count, plus each shared prompt prefix of a shared batch once (the base class reads only
        ``input_ids``: the suffixes there)."""
        flos = super().floating_point_ops(inputs)
        if inputs.get("prefix_input_ids") is not None:
            flos += super().floating_point_ops({"input_ids": inputs["prefix_input_ids"]})
        return flos

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Return ``(loss, scores [B], targets [B, 3] = (label, user_id, warm))`` — only the score is kept."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        targets = torch.stack([inputs["labels"].long(), inputs[ROW_USER_KEY], inputs[ROW_WARM_KEY]], dim=-1)
        return loss, outputs.logits.detach().float(), targets

    def _shares_prefix(self, dataset) -> bool:
        columns = getattr(dataset, "column_names", ())
        return self.args.share_prefix and "user_id" in columns and "history_item_ids" in columns

    def _get_train_sampler(self, train_dataset=None):
        """:class:`ContextGroupedSampler` with ``args.share_prefix`` (and the default ``train_sampling_strategy``,
        ``"random"``: another strategy asked for explicitly wins), else Trainer's sampler."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self._shares_prefix(dataset) and self.args.train_sampling_strategy == "random":
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
            # state.epoch is whole at an epoch's start and e + fraction after a mid-epoch resume.
            return ContextGroupedSampler(context_groups(dataset), seed, lambda: int(self.state.epoch + 1e-6))
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        """Length-sorted evaluation order when the rows carry a ``length`` column (tokenised prompts), grouped by
        user context with ``args.share_prefix``, for every world size and train sampling strategy (Trainer's
        ``group_by_length`` would shuffle eval rows)."""
        if eval_dataset is not None and "length" in getattr(eval_dataset, "column_names", ()):
            groups = context_groups(eval_dataset) if self._shares_prefix(eval_dataset) else None
            return LengthSortedSampler(eval_dataset["length"], groups)
        return super()._get_eval_sampler(eval_dataset)

    def evaluation_loop(self, dataloader, *args, **kwargs):
        """Trainer's loop over length-sorted batches, with predictions and label ids put back in dataset order."""
        output = super().evaluation_loop(dataloader, *args, **kwargs)
        sampler = self._get_eval_sampler(dataloader.dataset)
        if not isinstance(sampler, LengthSortedSampler) or output.predictions is None:
            return output
        order = np.asarray(sampler.order)
        if len(output.predictions) != len(order):
            raise RuntimeError(
                f"evaluation returned {len(output.predictions)} predictions for {len(order)} rows "
                "(eval_do_concat_batches=False?); cannot put them back in row order"
            )
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        label_ids = output.label_ids[inverse] if output.label_ids is not None else None
        return output._replace(predictions=output.predictions[inverse], label_ids=label_ids)

    def alignment_report(self, k: int = 10) -> dict[str, float]:
        """Full-table item retrieval from the CF view (``align_item_recall@k`` and its chance level), or ``{}``
        without text views or CF placeholders."""
        model = self.accelerator.unwrap_model(self.model)
        if self.text_views is None or getattr(model.get_base_model(), "projector", None) is None:
            return {}
        views = self._views_on(self.args.device)
        was_training = model.training
        model.eval()
        try:
            report = item_retrieval_recall(model.get_base_model(), views, k)
        finally:
            model.train(was_training)
        return {f"align_{key}": value for key, value in report.items()}

    def flush_metrics(self, mode: str) -> dict[str, float]:
        """Averages of the buffered loss terms of ``mode`` over steps, then processes (``eval_`` prefixed for
        eval); empties the buffer. Every rank must call it (one gather per term)."""
        metrics = {}
        for key, values in self._metrics[mode].items():  # same keys in the same order on every rank
            local_mean = torch.stack(values).nanmean().reshape(1)  # NaN: e.g. no valid user row in a batch
            value = self.accelerator.gather(local_mean).nanmean()
            if not torch.isnan(value):
                metrics[key] = value.item()
        self._metrics[mode].clear()
        return {f"eval_{key}": value for key, value in metrics.items()} if mode == "eval" else metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Merge the averaged loss terms of the current mode into ``logs`` (TRL's per-mode buffer).

        ``logs`` is updated in place, so the dict ``evaluate()`` returns carries them too."""
        logs.update(self.flush_metrics("train" if self.model.training else "eval"))
        super().log(logs, start_time)
