"""The language view of every item: mean-pooled hidden states of its title under the frozen base LLM.

Computed once per (LLM, text template, item-title table) for the whole item table ``[num_items, H]``
and cached on disk as safetensors, keyed by a hash of the LLM config, its weights (a SHA-256 of the weight files,
so a new LLM saved at the same path gets a new cache entry), the template and a fingerprint of the titles.
A user's text representation is the mean over the history items
(:func:`trainers.training.contrastive.user_text_table`), so it needs no cache of its own.
"""

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic_io import staging_file
from ..model_dirs import weights_fingerprint

logger = logging.getLogger(__name__)

DEFAULT_ITEM_TEXT_TEMPLATE = "{title}"


def collect_item_titles(splits: Iterable[datasets.Dataset], num_items: int) -> list[str | None]:
    """The title of every item id ``0..num_items-1`` found in ``splits`` (targets and histories).

    Returns:
        A list of length ``num_items``; ``None`` where no split names the item (and for padding 0).

    Raises:
        ValueError: an item id outside ``[1, num_items)``.
    """
    titles: list[str | None] = [None] * num_items
    for split in splits:
        table = split.select_columns(["item_id", "title", "history_item_ids", "history_titles"]).with_format("arrow")[:]
        ids = np.concatenate(
            [table["item_id"].to_numpy(), pc.list_flatten(table["history_item_ids"]).to_numpy(zero_copy_only=False)]
        )
        names = table["title"].to_pylist() + pc.list_flatten(table["history_titles"]).to_pylist()
        if ids.size and (ids.min() < 1 or ids.max() >= num_items):
            bad = int(ids.min()) if ids.min() < 1 else int(ids.max())
            raise ValueError(f"item id {bad} outside [1, {num_items}) in columns item_id/history_item_ids")
        unique_ids, first = np.unique(ids, return_index=True)
        for item_id, index in zip(unique_ids.tolist(), first.tolist()):
            if titles[item_id] is None:
                titles[item_id] = names[index]
    return titles


def cache_key(llm_config: dict, weights: str, template: str, titles: list[str | None], bf16: bool = False) -> str:
    """A hex digest naming the cached table: LLM config + weights fingerprint + template + title fingerprint
    (+ whether bf16 autocast computed it)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(llm_config, sort_keys=True, default=str).encode())
    digest.update(str(weights).encode())
    digest.update(template.encode())
    digest.update(b"bf16" if bf16 else b"fp32")
    digest.update(json.dumps(titles).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def encode_texts(
    language_model: nn.Module, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 64, bf16: bool = False
) -> torch.Tensor:
    """Mean-pooled last hidden states (after the final norm) of ``texts``.

    Args:
        language_model: an ``AutoModelForCausalLM``; only its decoder (``get_decoder()``) runs, so no
            vocabulary projection is computed.
        bf16: run under bf16 autocast (about 3x faster on CPU).

    Returns:
        FloatTensor [len(texts), H] (float32, on CPU).
    """
    decoder = language_model.get_decoder()
    device = next(decoder.parameters()).device
    was_training = decoder.training
    decoder.eval()
    can_pad = tokenizer.pad_token is not None
    batch_size = batch_size if can_pad else 1
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=can_pad,
            truncation=True,
            max_length=max_length,
            add_special_tokens=False,
        ).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1)  # [b, T, 1]
        pooled = (hidden.float() * mask.float()).sum(dim=1) / mask.float().sum(dim=1).clamp(min=1.0)  # [b, H]
        chunks.append(pooled.float().cpu())
    decoder.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0, 0)


def item_text_table(
    language_model: nn.Module,
    tokenizer,
    titles: list[str | None],
    cache_dir: str | Path,
    llm_path: str,
    template: str = DEFAULT_ITEM_TEXT_TEMPLATE,
    adapter_context=None,
    bf16: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The text representation of every item, from the disk cache when present.

    Only the main process computes and writes the cache; the others wait and read it
    (``PartialState().main_process_first()``), so this is safe under ``accelerate launch``.

    Args:
        titles: from :func:`collect_item_titles`, length ``num_items``.
        adapter_context: a context manager that turns LoRA adapters off (``peft_model.disable_adapter()``)
            so the *base* LLM is encoded; ``None`` when the model has no adapters.
        bf16: encode under bf16 autocast (part of the cache key).

    Returns:
        (table [num_items, H] float32, has_text [num_items] bool); rows without a title are zero.
    """
    config = language_model.config.to_dict()
    key = cache_key(config, weights_fingerprint(llm_path), template, titles, bf16)
    path = Path(cache_dir) / f"item_text_{key}.safetensors"
    with PartialState().main_process_first():
        if path.exists():
            try:
                tensors = load_file(str(path))
                logger.info("loaded item text representations %s from %s", tuple(tensors["table"].shape), path)
                return tensors["table"], tensors["has_text"].bool()
            except (SafetensorError, OSError, KeyError) as error:  # damaged outside cl3mrec: computed again
                logger.warning("%s: unreadable text-representation cache (%s); computing it again", path, error)
        if not PartialState().is_main_process:
            raise FileNotFoundError(f"the main process did not write the text-representation cache {path}")
        has_text = torch.tensor([title is not None for title in titles], dtype=torch.bool)
        texts = [template.format(title=title) for title in titles if title is not None]
        with adapter_context if adapter_context is not None else contextlib.nullcontext():
            pooled = encode_texts(language_model, tokenizer, texts, bf16=bf16)
        table = torch.zeros(len(titles), pooled.shape[-1] if texts else config.get("hidden_size", 0))
        table[has_text] = pooled
        with staging_file(path) as temporary:
            save_file({"table": table.contiguous(), "has_text": has_text.to(torch.uint8)}, str(temporary))
        logger.info("computed item text representations %s for %d titled items -> %s", tuple(table.shape), len(texts), path)
        return table, has_text
