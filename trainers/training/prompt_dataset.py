"""Tokenise a dataset's prompts once (`datasets.map`) with a `CL3MRecProcessor`, order rows so that rows sharing a
prompt prefix meet in one batch, and collate them into CL3M-Rec batches (whole left-padded prompts, or shared
prefixes + suffixes)."""

import numpy as np
import torch

from modeling_cl3mrec import CL3MRecProcessor

# Made by trainers.training.cross_fitting; named as the CL3MRecModel.forward arguments they feed.
CROSS_FIT_COLUMNS = ("cf_user_features", "cf_item_features", "cf_logits")
KEPT_COLUMNS = ("input_ids", "user_id", "item_id", "history_item_ids", "label", "warm", "length", *CROSS_FIT_COLUMNS)


def tokenize_dataset(dataset, processor, num_proc: int = 1):
    """Render and tokenise every row once with ``processor`` (a ``CL3MRecProcessor``).

    Returns a `datasets.Dataset` with columns `input_ids`, `user_id`, `item_id`, `history_item_ids` (the
    processor's `max_history` most recent), `label`, `warm`, `length` (tokens), and the cross-fitted CF inputs
    (:data:`CROSS_FIT_COLUMNS`) where the rows carry them. `datasets` caches the result for
    datasets stored on disk, so repeated calls do not re-tokenise.
    """
    needed = ("user_id", "item_id", "history_item_ids", "history_titles", "title", "label")
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset is missing column(s) {missing} needed for prompts")

    def tokenize(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        encoded = processor.encode(rows)
        return {
            "input_ids": encoded["input_ids"],
            "history_item_ids": encoded["history_item_ids"],
            "length": [len(ids) for ids in encoded["input_ids"]],
            "warm": batch["warm"] if "warm" in batch else [True] * len(rows),
        }

    removed = [c for c in dataset.column_names if c not in KEPT_COLUMNS]
    return dataset.map(
        tokenize,
        batched=True,
        batch_size=512,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=removed,
        desc="Tokenising prompts",
    )


class CL3MRecCollator:
    """Pad tokenised rows into a CL3M-Rec batch with the processor, plus `labels [B]` (float).

    Output: `input_ids [B, T]`, `attention_mask [B, T]` (left-padded whole prompts; see `CL3MRecProcessor.pad`),
    `labels [B]` and, for prompts with CF placeholders, `user_ids [B]`, `item_ids [B]`, `history_item_ids [B, L]`;
    rows with cross-fitted CF inputs add `cf_user_features [B, f]`, `cf_item_features [B, f]`, `cf_logits [B]`.
    With `prefix_parts` (the model's `shared_prefix_parts`), rows with the same user context share one prompt
    prefix: `prefix_input_ids [G, P]`, `prefix_attention_mask [G, P]`, `prefix_index [B]`, and `input_ids` /
    `attention_mask` hold the right-padded suffixes (`CL3MRecProcessor.pad_shared_prefix`) — for a batch whose
    padded token count (`G·P + B·S`) that cuts by at least `min_saving` of the whole prompts' (`B·T`); other batches
    (few repeated contexts: sharing would cost an extra decoder call for nothing) and prompts that cannot be split
    (see `CL3MRecProcessor.split_shared_prefix`) stay whole prompts.
    """

    def __init__(self, processor, prefix_parts: tuple[str, ...] | None = None, min_saving: float = 0.1):
        self.processor = processor
        self.prefix_parts = prefix_parts
        self.min_saving = min_saving

    def _shared_split(self, features: list[dict]):
        """`CL3MRecProcessor.split_shared_prefix` of the batch when it is to be shared, else None."""
        if self.prefix_parts is None:
            return None
        try:
            split = prefixes, suffixes, _ = self.processor.split_shared_prefix(features, self.prefix_parts)
        except ValueError:
            return None
        shared = len(prefixes) * max(map(len, prefixes)) + len(suffixes) * max(map(len, suffixes))
        whole = len(features) * max(len(feature["input_ids"]) for feature in features)
        return split if shared <= (1 - self.min_saving) * whole else None

    def _pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        split = self._shared_split(features)
        if split is not None:
            return dict(self.processor.pad_shared_prefix(features, split=split))
        return dict(self.processor.pad(features, padding_side="left"))  # the model reads position -1

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._pad(features)
        if "label" in features[0]:
            batch["labels"] = torch.tensor([float(f["label"]) for f in features])
        if CROSS_FIT_COLUMNS[0] in features[0]:
            for name in CROSS_FIT_COLUMNS:
                batch[name] = torch.tensor([feature[name] for feature in features], dtype=torch.float32)
        return batch


def length_sorted_order(lengths) -> list[int]:
    """Row indices longest first; rows of equal length keep their order (deterministic on every rank)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def length_grouped_batches(lengths, batch_size: int, groups=None) -> list[list[int]]:
    """Row indices in batches of similar length (longest first), so padding is minimal when scoring; with `groups`
    (:func:`context_groups`), the rows of a group next to each other (:func:`grouped_order`), so that batches share
    prompt prefixes (a group may straddle two batches)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = length_sorted_order(lengths) if groups is None else grouped_order(groups, lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def context_groups(dataset, recent_history=None) -> np.ndarray:
    """Group id `[N]` of each tokenised row: rows with the same `CL3MRecProcessor.context_key` (user and recent
    history) have the same prompt prefix. Ids number groups in order of first appearance. For rows not tokenised yet
    (whole histories), `recent_history` (`CL3MRecProcessor.recent_history`) cuts each history as the prompt will."""
    histories = dataset["history_item_ids"]
    if recent_history is not None:
        histories = map(recent_history, histories)
    columns = zip(dataset["user_id"], histories)
    keys = (CL3MRecProcessor.context_key({"user_id": user, "history_item_ids": history}) for user, history in columns)
    ids: dict[tuple, int] = {}
    return np.fromiter((ids.setdefault(key, len(ids)) for key in keys), dtype=np.int64, count=len(dataset))


def grouped_order(groups, lengths=None, generator: np.random.Generator | None = None) -> list[int]:
    """Row indices with the rows of each group next to each other, so that batches cut from the order share
    prefixes. With `generator`, groups come in random order (training); else longest group first by its longest
    row (scoring: little padding), rows within a group longest first. Deterministic for a given input."""
    groups = np.asarray(groups)
    lengths = np.zeros(len(groups)) if lengths is None else np.asarray(lengths)
    rows_by_length = np.argsort(-lengths, kind="stable")
    members: dict[int, list[int]] = {}
    for row in rows_by_length:
        members.setdefault(int(groups[row]), []).append(int(row))
    keys = list(members)  # first appearance in length order: longest group first
    if generator is not None:
        keys = [keys[i] for i in generator.permutation(len(keys))]
    return [row for key in keys for row in members[key]]
