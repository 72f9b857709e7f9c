"""Tokenise a dataset's prompts once (`datasets.map`) with a `CL3MRecProcessor`, and collate them into left-padded
CL3M-Rec batches."""

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
    """Pad tokenised rows into a CL3M-Rec batch with the processor (left padding), plus `labels [B]` (float).

    Output: `input_ids [B, T]`, `attention_mask [B, T]`, `labels [B]` and, for prompts with CF placeholders,
    `user_ids [B]`, `item_ids [B]`, `history_item_ids [B, L]` (see `CL3MRecProcessor.pad`).
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.processor.pad(features, padding_side="left"))  # the model reads position -1
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
