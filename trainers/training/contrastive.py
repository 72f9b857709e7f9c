"""Contrastive alignment of the collaborative and the language view of users and items, over whole tables.

CL3M-Rec aligns the collaborative view of an entity (its CF features after the projector, in the LLM's
input-embedding space) with the language view of the same entity (the frozen LLM's mean-pooled hidden states
of its text). This is our reconstruction of the loss (the paper text is not public): the CLIP loss (Radford et
al., 2021), with three changes that make it learn on a recommendation batch:

* **Negatives are the whole table**, not the batch: the CF view of every item is one projector pass over the
  item table (no LLM pass) and the text view is cached, so each anchor competes against all ~3k items (users:
  all users) instead of 7 in-batch rows, and duplicate ids in a batch are no false negatives. For items the
  anchors are the whole table too (CLIP over all items every step: a ~3k x 3k similarity matrix, milliseconds),
  so the alignment sees every item each step instead of the ~8 a batch holds.
* **Matching spaces**: with ``config.alignment_dim > 0`` both views pass CLIP-style linear heads
  (:class:`modeling_cl3mrec.modeling_cl3mrec.CL3MRecAlignmentHeads`) into one space before the cosine; with 0 the
  two views are compared directly.
* **Centred views**: mean-pooled LLM states are anisotropic (any two ML-1M titles have cosine 0.93 under
  SmolLM2-135M), so the text tables and the CF item table are centred over their valid rows before the cosine;
  without it the item loss did not move from ln(number of items).

Items are aligned in both directions (CF → text and text → CF). Users are aligned CF → text only: a user's CF
view depends on the row (its history, for sequential encoders), so there is no user CF table to rank texts
against; the user text table is the mean text view of the items in the user's last train history. The user CF
anchors (a batch's few rows) are not centred: a batch mean of <= 8 rows would distort them more than it removes.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ContrastiveResult:
    """Loss and top-1 accuracy of one table InfoNCE call.

    Attributes:
        loss: scalar, mean over the anchors (and directions).
        accuracy: scalar in [0, 1], fraction of anchors whose positive scores highest in the whole candidate
            table; no gradient. ``nan`` when there were no anchors.
        num_rows: anchors that took part.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    num_rows: int


@dataclass
class TextViews:
    """The frozen LLM's text view of every entity, fixed for a run; stored **centred** (the mean of the valid rows
    subtracted). Mean-pooled LLM states are anisotropic: on ML-1M with SmolLM2-135M the mean title vector has norm
    40.3 of the rows' 41.6, every pair of titles has cosine 0.93 ± 0.03, and a cosine InfoNCE over them has almost
    nothing to tell apart; centred, the cosines are 0.00 ± 0.29.

    Attributes:
        items `[num_items, H]`: mean-pooled title representations (:func:`trainers.training.text_representations.item_text_table`).
        item_valid `[num_items]` bool: the item has a title and is warm (a cold item's CF row is the shared mean
            row, so it has no collaborative identity to align).
        users `[num_users, H]`: mean of ``items`` over the user's last train history (:func:`user_text_table`).
        user_valid `[num_users]` bool: the user has such a history.
    """

    items: torch.Tensor
    item_valid: torch.Tensor
    users: torch.Tensor
    user_valid: torch.Tensor

    def __post_init__(self):
        if self.item_valid.any():
            self.items = self.items - self.items[self.item_valid].mean(dim=0)
        if self.user_valid.any():
            self.users = self.users - self.users[self.user_valid].mean(dim=0)

    def to(self, device) -> "TextViews":
        return TextViews(*(tensor.to(device) for tensor in (self.items, self.item_valid, self.users, self.user_valid)))


def table_info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    candidate_valid: torch.Tensor | None = None,
) -> ContrastiveResult:
    """InfoNCE of each anchor against a whole candidate table, by cosine similarity.

    Shape:
        anchors: [A, D]; candidates: [N, D]; targets: [A] (row of each anchor's positive in ``candidates``);
        candidate_valid: [N] bool or None (invalid rows are no candidates; every target must be valid).

    Args:
        temperature: τ > 0; logits are ``cos(anchor, candidate) / τ``.
    """
    if temperature <= 0:
        raise ValueError(f"contrastive temperature must be > 0, got {temperature}")
    if anchors.dim() != 2 or candidates.dim() != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"table_info_nce needs anchors [A, D] and candidates [N, D], got {tuple(anchors.shape)} and "
            f"{tuple(candidates.shape)}"
        )
    if targets.shape != anchors.shape[:1]:
        raise ValueError(f"table_info_nce needs targets of shape [A]={anchors.shape[0]}, got {tuple(targets.shape)}")
    if anchors.shape[0] == 0:
        zero = anchors.sum() * 0.0 + candidates.sum() * 0.0
        return ContrastiveResult(zero, torch.full((), float("nan"), device=anchors.device), 0)
    logits = F.normalize(anchors.float(), dim=-1) @ F.normalize(candidates.float(), dim=-1).T / temperature  # [A, N]
    if candidate_valid is not None:
        if not bool(candidate_valid[targets].all()):
            raise ValueError("table_info_nce: a target row is marked invalid in candidate_valid")
        logits = logits.masked_fill(~candidate_valid[None, :], float("-inf"))
    loss = F.cross_entropy(logits, targets)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return ContrastiveResult(loss, accuracy, anchors.shape[0])


def project_entities(model, cf_features: torch.Tensor) -> torch.Tensor:
    """The CF view of entities: projector output averaged over the entity's k tokens, `[..., f]` → `[..., H]`."""
    return model.projector(cf_features).mean(dim=-2)


def to_alignment_space(model, cf_view: torch.Tensor | None, text_view: torch.Tensor | None):
    """Both views through the model's alignment heads (identity when ``config.alignment_dim == 0``)."""
    if model.alignment_heads is None:
        return cf_view, text_view
    return model.alignment_heads(cf_view, text_view)


def item_alignment_tables(model, views: TextViews) -> tuple[torch.Tensor, torch.Tensor]:
    """CF and text views of every item in the alignment space: ``(cf [num_items, D], text [num_items, D])``. The CF
    view is centred over the valid items like the text view (the projector's output shares a large common part
    too)."""
    all_items = torch.arange(views.items.shape[0], device=views.items.device)
    cf_items = project_entities(model, model.item_features(all_items))  # [N, H]
    cf_items = cf_items - cf_items[views.item_valid].mean(dim=0)
    return to_alignment_space(model, cf_items, views.items)


def contrastive_alignment(
    model, views: TextViews, user_ids: torch.Tensor, user_features: torch.Tensor, temperature: float
) -> dict[str, ContrastiveResult]:
    """The item-level (all valid items, both directions) and user-level (the batch's users, CF → text) table
    InfoNCE for one step.

    Args:
        model: the (unwrapped) ``CL3MRecModel`` or a PEFT model around it (attributes reach the trained copies).
        user_ids `[B]`: the batch's users; each distinct valid user is one anchor.
        user_features `[B, f]`: the rows' CF user features (``CL3MRecOutput.cf_user_embeds``).
    """
    cf_items, text_items = item_alignment_tables(model, views)  # [N, D] each
    items = views.item_valid.nonzero().squeeze(-1)
    item_cf_to_text = table_info_nce(cf_items[items], text_items, items, temperature, views.item_valid)
    item_text_to_cf = table_info_nce(text_items[items], cf_items, items, temperature, views.item_valid)
    item = ContrastiveResult(
        0.5 * (item_cf_to_text.loss + item_text_to_cf.loss),
        0.5 * (item_cf_to_text.accuracy + item_text_to_cf.accuracy),
        item_cf_to_text.num_rows,
    )

    first_rows = _first_row_per_id(user_ids)
    first_rows = first_rows[views.user_valid[user_ids[first_rows]]]
    users = user_ids[first_rows]
    user_cf, user_text = to_alignment_space(model, project_entities(model, user_features[first_rows]), views.users)
    user = table_info_nce(user_cf, user_text, users, temperature, views.user_valid)
    return {"item": item, "user": user}


def _first_row_per_id(ids: torch.Tensor) -> torch.Tensor:
    """Indices `[U]` of the first row of each distinct id in ``ids [B]``."""
    unique, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((unique.shape[0],), ids.shape[0], dtype=torch.long, device=ids.device)
    return first.scatter_reduce(0, inverse, torch.arange(ids.shape[0], device=ids.device), reduce="amin")


@torch.no_grad()
def item_retrieval_recall(model, views: TextViews, k: int = 10) -> dict[str, float]:
    """Full-table retrieval of each valid item's own title from its CF view (in the alignment space).

    Returns ``{"item_recall@k": fraction of valid items whose title ranks in the top k among all valid items,
    "item_recall@k_chance": k / number of valid items, "items": number of valid items}``.
    """
    cf_items, text_items = item_alignment_tables(model, views)
    valid = views.item_valid.nonzero().squeeze(-1)
    similarity = F.normalize(cf_items[valid].float(), dim=-1) @ F.normalize(text_items[valid].float(), dim=-1).T
    own = similarity.diagonal().unsqueeze(1)  # [V, 1]
    rank = (similarity > own).sum(dim=1)  # 0 = own title ranks first
    count = int(valid.numel())
    return {
        f"item_recall@{k}": float((rank < k).float().mean()) if count else float("nan"),
        f"item_recall@{k}_chance": k / count if count else float("nan"),
        "items": count,
    }


def user_text_table(
    item_text: torch.Tensor,
    item_has_text: torch.Tensor,
    user_ids: np.ndarray,
    timestamps: np.ndarray,
    histories: list,
    num_users: int,
    recent_history: Callable[[Sequence], list],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's text view: the mean text view of the items in the user's **last** history (latest row).

    Args:
        item_text `[num_items, H]`, item_has_text `[num_items]` bool: the item text table.
        user_ids `[R]`, timestamps `[R]`, histories (R lists of item ids, oldest first): rows of a train split.
        recent_history: the history cut the prompt uses (``CL3MRecProcessor.recent_history``).

    Returns:
        ``(users [num_users, H], valid [num_users] bool)`` — a user without a titled history item is invalid.
    """
    users = torch.zeros(num_users, item_text.shape[1], dtype=item_text.dtype)
    valid = torch.zeros(num_users, dtype=torch.bool)
    order = np.lexsort((np.arange(len(user_ids)), np.asarray(timestamps)))  # by time; file order breaks ties
    latest = {int(user_ids[row]): row for row in order}
    for user, row in latest.items():
        recent = torch.as_tensor(recent_history(histories[row]), dtype=torch.long)
        recent = recent[item_has_text[recent]] if recent.numel() else recent
        if recent.numel():
            users[user] = item_text[recent].mean(dim=0)
            valid[user] = True
    return users, valid
