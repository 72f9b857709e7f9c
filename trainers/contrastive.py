"""Symmetric in-batch InfoNCE between projected CF embeddings and LLM text representations.

CL3M-Rec aligns the collaborative view of an entity (its CF embedding after the projector, in the
LLM token space) with the language view of the same entity (the frozen LLM's mean-pooled hidden
states of its text). This is our reconstruction of the loss (the paper text is not public); it is the
CLIP loss (Radford et al., 2021) with duplicate ids masked out of the negatives.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ContrastiveResult:
    """Loss and in-batch top-1 accuracy of one InfoNCE call.

    Attributes:
        loss: scalar, mean of the two directions (CF → text and text → CF).
        accuracy: scalar in [0, 1], fraction of (row, direction) pairs whose positive scores highest
            among the unmasked candidates; no gradient.
        num_rows: rows that took part (rows flagged invalid are dropped).
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    num_rows: int


def info_nce(
    cf_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    ids: torch.Tensor,
    temperature: float,
    valid: torch.Tensor | None = None,
) -> ContrastiveResult:
    """Symmetric InfoNCE with cosine similarity and duplicate-aware negatives.

    Row ``i`` of ``cf_embeds`` and row ``i`` of ``text_embeds`` describe the same entity ``ids[i]``.
    Every other row is a negative, except rows with the same id: an entity that occurs twice in a
    batch (the same item rated by two users) would otherwise be its own false negative, so such
    off-diagonal pairs are removed from the softmax.

    Shape:
        cf_embeds: [B, H] (projected CF embeddings); text_embeds: [B, H]; ids: [B] (int);
        valid: [B] bool or None (rows without a text representation are dropped).

    Args:
        temperature: τ > 0; logits are ``cos(cf_i, text_j) / τ``.

    Returns:
        A :class:`ContrastiveResult`. With fewer than 2 valid distinct ids there are no negatives:
        the loss is ``0`` (kept in the graph) and the accuracy ``nan``.
    """
    if temperature <= 0:
        raise ValueError(f"contrastive temperature must be > 0, got {temperature}")
    if cf_embeds.shape != text_embeds.shape or cf_embeds.dim() != 2:
        raise ValueError(
            f"info_nce needs cf_embeds and text_embeds of equal shape [B, H], got "
            f"{tuple(cf_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    if ids.shape != cf_embeds.shape[:1]:
        raise ValueError(f"info_nce needs ids of shape [B]={cf_embeds.shape[0]}, got {tuple(ids.shape)}")
    if valid is not None:
        cf_embeds, text_embeds, ids = cf_embeds[valid], text_embeds[valid], ids[valid]
    num_rows = cf_embeds.shape[0]
    if num_rows < 2 or torch.unique(ids).numel() < 2:
        zero = cf_embeds.sum() * 0.0 + text_embeds.sum() * 0.0
        return ContrastiveResult(zero, torch.tensor(float("nan")), num_rows)

    cf = F.normalize(cf_embeds.float(), dim=-1)  # [B, H]
    text = F.normalize(text_embeds.float(), dim=-1)  # [B, H]
    logits = cf @ text.T / temperature  # [B, B]; rows: CF anchors, columns: text candidates
    same_id = ids[:, None] == ids[None, :]  # [B, B]
    false_negative = same_id & ~torch.eye(num_rows, dtype=torch.bool, device=ids.device)
    logits = logits.masked_fill(false_negative, float("-inf"))
    targets = torch.arange(num_rows, device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    with torch.no_grad():
        hits = (logits.argmax(dim=1) == targets).float().mean() + (logits.argmax(dim=0) == targets).float().mean()
    return ContrastiveResult(loss, hits / 2, num_rows)


def user_text_embeds(
    item_text_table: torch.Tensor, history_item_ids: torch.Tensor, item_has_text: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's text representation: the mean of the text representations of the history items.

    Shape:
        item_text_table: [num_items, H] (row 0 unused: padding); history_item_ids: [B, L], 0 = padding;
        item_has_text: [num_items] bool or None (items without a title are left out of the mean).

    Returns:
        (user_text [B, H], valid [B] bool) — a user with no history has no text representation.
    """
    mask = history_item_ids > 0  # [B, L]
    if item_has_text is not None:
        mask = mask & item_has_text[history_item_ids]
    mask = mask.unsqueeze(-1).to(item_text_table.dtype)  # [B, L, 1]
    summed = (item_text_table[history_item_ids] * mask).sum(dim=1)  # [B, H]
    counts = mask.sum(dim=1)  # [B, 1]
    return summed / counts.clamp(min=1.0), counts.squeeze(-1) > 0
