"""Render and tokenise prompts once (`datasets.map`), and collate them into left-padded CL3M-Rec batches."""

import logging

import torch

from data_scripts.prompts import USER_TOKEN, render_prompt

logger = logging.getLogger(__name__)

KEPT_COLUMNS = ("input_ids", "user_id", "item_id", "history_item_ids", "label", "warm", "length")


def _prompt_template(config, with_ids: bool) -> str:
    name = "prompt_template" if with_ids else "text_prompt_template"
    template = getattr(config, name)
    if template is None:
        kind = "ID" if with_ids else "text"
        raise ValueError(f"CL3MRecConfig.{name} is not set; it is needed to tokenise {kind} prompts")
    if with_ids and not config.use_cf:
        raise ValueError("with_ids=True needs a CL3M-Rec config with a cf_config (placeholders are filled from it)")
    return template


def recent_history(history_item_ids, max_history: int) -> list[int]:
    """The `max_history` most recent ids (oldest first); `max_history=0` keeps none."""
    return list(history_item_ids)[-max_history:] if max_history > 0 else []


def tokenize_dataset(dataset, tokenizer, config, with_ids: bool, num_proc: int = 1):
    """Render each row with `config.prompt_template` (`with_ids`) or `config.text_prompt_template` and tokenise.

    Returns a `datasets.Dataset` with columns `input_ids`, `user_id`, `item_id`, `history_item_ids` (the
    `config.max_history` most recent), `label`, `warm`, `length` (tokens). `datasets` caches the result for
    datasets stored on disk, so repeated calls do not re-tokenise.
    """
    template = _prompt_template(config, with_ids)
    with_history_tokens = with_ids and config.use_history_embeddings
    needed = ("user_id", "item_id", "history_item_ids", "history_titles", "title", "label")
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset is missing column(s) {missing} needed for prompts")

    def tokenize(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        prompts = [
            render_prompt(template, row, config.max_history, config.tokens_per_entity, with_history_tokens)
            for row in rows
        ]
        encoded = tokenizer(prompts, add_special_tokens=True)
        return {
            "input_ids": encoded["input_ids"],
            "history_item_ids": [recent_history(row["history_item_ids"], config.max_history) for row in rows],
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
    """Left-pad tokenised rows into a CL3M-Rec batch.

    Output: `input_ids [B, T]`, `attention_mask [B, T]`, `labels [B]` (float) and, when the prompts carry
    CF placeholders, `user_ids [B]`, `item_ids [B]`, `history_item_ids [B, L]` (left-padded with 0, the
    `max_history` most recent, L >= 1).

    Args:
        tokenizer: the model's tokenizer (its `pad_token_id` pads `input_ids`).
        max_history: history length cap.
        with_ids: emit the CF id tensors; default: whether the tokenizer holds the `<|user_emb|>` placeholder.
    """

    def __init__(self, tokenizer, max_history: int = 10, with_ids: bool | None = None):
        if tokenizer.pad_token_id is None:
            raise ValueError("CL3MRecCollator needs a tokenizer with a pad token (build_cl3mrec sets one)")
        self.pad_token_id = tokenizer.pad_token_id
        self.max_history = max_history
        self.with_ids = USER_TOKEN in tokenizer.get_vocab() if with_ids is None else with_ids

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            ids = feature["input_ids"]
            input_ids[row, length - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, length - len(ids) :] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "label" in features[0]:
            batch["labels"] = torch.tensor([float(f["label"]) for f in features])
        if self.with_ids:
            histories = [recent_history(f["history_item_ids"], self.max_history) for f in features]
            history = torch.zeros((len(features), max(1, *(len(h) for h in histories))), dtype=torch.long)
            for row, ids in enumerate(histories):
                if ids:
                    history[row, history.shape[1] - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
            batch["user_ids"] = torch.tensor([f["user_id"] for f in features], dtype=torch.long)
            batch["item_ids"] = torch.tensor([f["item_id"] for f in features], dtype=torch.long)
            batch["history_item_ids"] = history
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
