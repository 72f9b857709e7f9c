"""Tokenise a dataset's prompts once (`datasets.map`) with a `CL3MRecProcessor`, order rows so that rows sharing a
prompt prefix meet in one batch, and collate them into CL3M-Rec batches (whole left-padded prompts, or shared
prefixes + suffixes)."""

import numpy as np
import torch

KEPT_COLUMNS = ("input_ids", "user_id", "item_id", "history_item_ids", "label", "warm", "length")


def tokenize_dataset(dataset, processor, num_proc: int = 1):
    """Render and tokenise every row once with ``processor`` (a ``CL3MRecProcessor``).

    Returns a `datasets.Dataset` with columns `input_ids`, `user_id`, `item_id`, `history_item_ids` (the
    processor's `max_history` most recent), `label`, `warm`, `length` (tokens). `datasets` caches the result for
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
    `labels [B]` and, for prompts with CF placeholders, `user_ids [B]`, `item_ids [B]`, `history_item_ids [B, L]`.
    With `share_prefix`, rows with the same user context share one prompt prefix: `prefix_input_ids [G, P]`,
    `prefix_attention_mask [G, P]`, `prefix_index [B]`, and `input_ids` / `attention_mask` hold the right-padded
    suffixes (`CL3MRecProcessor.pad_shared_prefix`; `share_user=False` keeps the user placeholder out of the prefix,
    for CF encoders whose user view depends on the target item) — for a batch whose padded token count
    (`G·P + B·S`) that cuts by at least `min_saving` of the whole prompts' (`B·T`); other batches (few repeated
    contexts: sharing would cost an extra decoder call for nothing) and prompts that cannot be split (see
    `CL3MRecProcessor.pad_shared_prefix`) stay whole prompts.
    """

    def __init__(self, processor, share_prefix: bool = False, share_user: bool = True, min_saving: float = 0.1):
        self.processor = processor
        self.share_prefix = share_prefix
        self.share_user = share_user
        self.min_saving = min_saving

    def _pad(self, features: list[dict]) -> dict[str, torch.Tensor]:
        whole = dict(self.processor.pad(features, padding_side="left"))  # the model reads position -1
        if not self.share_prefix:
            return whole
        try:
            shared = dict(self.processor.pad_shared_prefix(features, share_user=self.share_user))
        except ValueError:
            return whole
        shared_tokens = shared["prefix_input_ids"].numel() + shared["input_ids"].numel()
        return shared if shared_tokens <= (1 - self.min_saving) * whole["input_ids"].numel() else whole

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._pad(features)
        if "label" in features[0]:
            batch["labels"] = torch.tensor([float(f["label"]) for f in features])
        return batch


def length_sorted_order(lengths) -> list[int]:
    """Row indices longest first; rows of equal length keep their order (deterministic on every rank)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def length_grouped_batches(lengths, batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (longest first), so padding is minimal when scoring."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = length_sorted_order(lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def context_groups(dataset) -> np.ndarray:
    """Group id `[N]` of each tokenised row: rows with the same user and recent history (`user_id`,
    `history_item_ids`) have the same prompt prefix. Ids number groups in order of first appearance."""
    keys = zip(dataset["user_id"], map(tuple, dataset["history_item_ids"]))
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


def grouped_batches(groups, lengths, batch_size: int) -> list[list[int]]:
    """Scoring batches of `batch_size` rows cut from :func:`grouped_order` (a group may straddle two batches)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = grouped_order(groups, lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
