"""Collaborative-filtering encoders behind one interface (:class:`CollaborativeEncoder`).

Shapes: ``B`` batch, ``L`` history length (left-padded with 0, most recent last), ``d`` hidden size.
Id 0 is padding and also the *cold row*: in-range ids never seen in train are mapped to row 0,
which :meth:`CollaborativeEncoder.refresh_cold_rows` sets to the mean of the warm rows.
"""

import math

import torch
from torch import nn
from transformers import initialization as init

from .configuration_cf import CFRecConfig


class BiasEmbedding(nn.Embedding):
    """A one-column embedding table holding per-id biases (initialised to zero)."""

    def __init__(self, num_embeddings: int):
        super().__init__(num_embeddings, 1)


class CollaborativeEncoder(nn.Module):
    """Base class: id validation, warm/cold bookkeeping and optional global/user/item biases.

    Subclasses implement :meth:`encode`, :meth:`encode_items` and :meth:`_interaction` (the bias-free
    logit); :meth:`score` adds the biases.
    """

    # Whether the user view of `encode` depends on the target item (DIN): then a prompt's user placeholder differs
    # per candidate, and prompt prefixes can be shared across rows only up to it.
    target_aware_user = False

    def __init__(self, config: CFRecConfig):
        super().__init__()
        self.config = config
        user_is_warm = torch.ones(config.num_users, dtype=torch.bool)
        item_is_warm = torch.ones(config.num_items, dtype=torch.bool)
        user_is_warm[0] = item_is_warm[0] = False
        self.register_buffer("user_is_warm", user_is_warm)
        self.register_buffer("item_is_warm", item_is_warm)
        if config.use_bias:
            self.global_bias = nn.Parameter(torch.zeros(1))
            self.user_bias = BiasEmbedding(config.num_users)
            self.item_bias = BiasEmbedding(config.num_items)

    # ----- ids -------------------------------------------------------------------------------
    @staticmethod
    def _check_ids(ids: torch.Tensor, size: int, name: str) -> None:
        if ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"{name} contains id {bad}, outside the table of size {size} (valid: 0..{size - 1})")

    def map_user_ids(self, user_ids: torch.Tensor) -> torch.LongTensor:
        """Validate ``user_ids [...]`` and map cold ids to row 0."""
        self._check_ids(user_ids, self.config.num_users, "user_ids")
        return torch.where(self.user_is_warm[user_ids], user_ids, torch.zeros_like(user_ids))

    def map_item_ids(self, item_ids: torch.Tensor, name: str = "item_ids") -> torch.LongTensor:
        """Validate ``item_ids [...]`` and map cold ids (and padding) to row 0."""
        self._check_ids(item_ids, self.config.num_items, name)
        return torch.where(self.item_is_warm[item_ids], item_ids, torch.zeros_like(item_ids))

    @torch.no_grad()
    def set_warm(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> None:
        """Mark the ids occurring in train (``[N]`` each) as warm; all others become cold."""
        self._check_ids(user_ids, self.config.num_users, "user_ids")
        self._check_ids(item_ids, self.config.num_items, "item_ids")
        self.user_is_warm.zero_()
        self.item_is_warm.zero_()
        self.user_is_warm[user_ids] = True
        self.item_is_warm[item_ids] = True
        self.user_is_warm[0] = self.item_is_warm[0] = False

    def fit_train_statistics(self, user_ids: torch.Tensor, item_ids: torch.Tensor, labels: torch.Tensor) -> None:
        """Read what the encoder needs from the train rows (``[N]`` each): warm flags here, more in subclasses."""
        self.set_warm(user_ids, item_ids)

    def _cold_tables(self):
        """``(table, is_warm)`` pairs whose row 0 must hold the mean of the warm rows."""
        pairs = []
        if self.config.use_bias:
            pairs += [(self.user_bias.weight, self.user_is_warm), (self.item_bias.weight, self.item_is_warm)]
        return pairs

    @torch.no_grad()
    def refresh_cold_rows(self) -> None:
        """Set row 0 of every id-indexed table to the mean of its warm rows (call after training)."""
        for table, is_warm in self._cold_tables():
            if is_warm.any():
                table[0] = table[is_warm].mean(dim=0)

    # ----- interface ------------------------------------------------------------------------
    def encode(self, user_ids, item_ids, history_item_ids):
        """Return ``(user_emb [B, d], item_emb [B, d])``."""
        raise NotImplementedError

    def encode_items(self, item_ids: torch.LongTensor) -> torch.FloatTensor:
        """Embed item ids of any shape ``[...]`` into ``[..., d]`` (history items for the projector)."""
        raise NotImplementedError

    def _interaction(self, user_ids, item_ids, history_item_ids) -> torch.FloatTensor:
        """Bias-free logit ``[B]``; ``user_ids``/``item_ids`` are raw (validated by :meth:`encode`)."""
        user_emb, item_emb = self.encode(user_ids, item_ids, history_item_ids)
        return (user_emb * item_emb).sum(-1)

    def user_bias_term(self, user_ids: torch.LongTensor) -> torch.FloatTensor:
        """Global + user bias of ``user_ids [...]`` → ``[...]`` (zeros for an encoder without biases)."""
        users = self.map_user_ids(user_ids)
        if not self.config.use_bias:
            return torch.zeros(users.shape, device=users.device)
        return self.global_bias + self.user_bias(users).squeeze(-1)

    def item_bias_term(self, item_ids: torch.LongTensor) -> torch.FloatTensor:
        """Item bias of ``item_ids [...]`` → ``[...]`` (zeros for an encoder without biases)."""
        items = self.map_item_ids(item_ids)
        if not self.config.use_bias:
            return torch.zeros(items.shape, device=items.device)
        return self.item_bias(items).squeeze(-1)

    def score(self, user_ids, item_ids, history_item_ids) -> torch.FloatTensor:
        """Logit of "liked", ``[B]``: the interaction plus the bias terms."""
        logits = self._interaction(user_ids, item_ids, history_item_ids)
        if self.config.use_bias:
            logits = logits + self.user_bias_term(user_ids) + self.item_bias_term(item_ids)
        return logits


class PopularityEncoder(CollaborativeEncoder):
    """Item popularity: the smoothed mean train label of the item, as a log-odds score. Not trained.

    ``item_log_odds[i] = logit((pos_i + s * p) / (n_i + s))`` with global positive rate ``p`` and
    smoothing ``s = config.popularity_smoothing``. ``encode`` returns a zero user embedding and the
    item's log-odds repeated ``d`` times (there is nothing collaborative to project).
    """

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        # A frozen parameter rather than a buffer, so a bias-free model still has a dtype to save with.
        self.item_log_odds = nn.Parameter(torch.zeros(config.num_items), requires_grad=False)

    @torch.no_grad()
    def fit_train_statistics(self, user_ids, item_ids, labels) -> None:
        super().fit_train_statistics(user_ids, item_ids, labels)
        labels = labels.float()
        counts = torch.bincount(item_ids, minlength=self.config.num_items).float()
        positives = torch.bincount(item_ids, weights=labels, minlength=self.config.num_items).float()
        prior, strength = labels.mean(), self.config.popularity_smoothing
        rate = ((positives + strength * prior) / (counts + strength).clamp_min(1e-8)).clamp(1e-4, 1 - 1e-4)
        self.item_log_odds.copy_(torch.logit(rate))

    def _cold_tables(self):
        return super()._cold_tables() + [(self.item_log_odds, self.item_is_warm)]

    def encode_items(self, item_ids):
        items = self.map_item_ids(item_ids)
        return self.item_log_odds[items].unsqueeze(-1).expand(*items.shape, self.config.hidden_size)

    def encode(self, user_ids, item_ids, history_item_ids):
        item_emb = self.encode_items(item_ids)
        self.map_user_ids(user_ids)
        return torch.zeros_like(item_emb), item_emb

    def _interaction(self, user_ids, item_ids, history_item_ids):
        return self.item_log_odds[self.map_item_ids(item_ids)]


class MFEncoder(CollaborativeEncoder):
    """Matrix factorisation: ``score = <p_u, q_i> (+ b + b_u + b_i)``.

    Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems", IEEE Computer 2009.
    """

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        self.user_embedding = nn.Embedding(config.num_users, config.hidden_size)
        self.item_embedding = nn.Embedding(config.num_items, config.hidden_size)

    def _cold_tables(self):
        return super()._cold_tables() + [
            (self.user_embedding.weight, self.user_is_warm),
            (self.item_embedding.weight, self.item_is_warm),
        ]

    def encode_items(self, item_ids):
        return self.item_embedding(self.map_item_ids(item_ids))  # [..., d]

    def encode(self, user_ids, item_ids, history_item_ids):
        return self.user_embedding(self.map_user_ids(user_ids)), self.encode_items(item_ids)  # [B, d] x2


class LightGCNEncoder(MFEncoder):
    """LightGCN: K rounds of symmetric-normalised propagation over the user-item graph, mean of layers.

    He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation", SIGIR 2020.

    The graph is kept as two saved buffers ``graph_user_ids [E]`` / ``graph_item_ids [E]`` (train
    positives, or all train rows with ``graph_edges="all"``); ``E = config.num_graph_edges``.
    Row 0 of the propagated tables is the mean of the propagated warm rows.
    """

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        self.register_buffer("graph_user_ids", torch.zeros(config.num_graph_edges, dtype=torch.long))
        self.register_buffer("graph_item_ids", torch.zeros(config.num_graph_edges, dtype=torch.long))

    @torch.no_grad()
    def set_graph(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> None:
        """Replace the graph by the (deduplicated) edges ``user_ids [E] – item_ids [E]``."""
        self._check_ids(user_ids, self.config.num_users, "user_ids")
        self._check_ids(item_ids, self.config.num_items, "item_ids")
        edges = torch.unique(torch.stack([user_ids.long(), item_ids.long()]), dim=1)
        self.graph_user_ids = edges[0].clone().to(self.user_is_warm.device)
        self.graph_item_ids = edges[1].clone().to(self.user_is_warm.device)
        self.config.num_graph_edges = int(edges.shape[1])

    def fit_train_statistics(self, user_ids, item_ids, labels) -> None:
        super().fit_train_statistics(user_ids, item_ids, labels)
        keep = labels > 0 if self.config.graph_edges == "positive" else torch.ones_like(labels, dtype=torch.bool)
        self.set_graph(user_ids[keep], item_ids[keep])

    def propagate(self):
        """Return the propagated tables ``(users [num_users, d], items [num_items, d])``."""
        users, items = self.user_embedding.weight, self.item_embedding.weight
        u, i = self.graph_user_ids, self.graph_item_ids
        user_degree = torch.bincount(u, minlength=self.config.num_users).clamp_min(1).float()
        item_degree = torch.bincount(i, minlength=self.config.num_items).clamp_min(1).float()
        weight = (user_degree[u] * item_degree[i]).rsqrt().unsqueeze(-1).to(users.dtype)  # [E, 1]
        user_layers, item_layers = [users], [items]
        for _ in range(self.config.num_layers):
            users, items = (
                torch.zeros_like(users).index_add(0, u, weight * items[i]),
                torch.zeros_like(items).index_add(0, i, weight * users[u]),
            )
            user_layers.append(users)
            item_layers.append(items)
        users = torch.stack(user_layers).mean(0)
        items = torch.stack(item_layers).mean(0)
        return self._with_cold_row(users, self.user_is_warm), self._with_cold_row(items, self.item_is_warm)

    @staticmethod
    def _with_cold_row(table: torch.Tensor, is_warm: torch.Tensor) -> torch.Tensor:
        if not is_warm.any():
            return table
        cold = table[is_warm].mean(0, keepdim=True)  # [1, d]
        return torch.cat([cold, table[1:]], dim=0)

    def encode_items(self, item_ids):
        return self.propagate()[1][self.map_item_ids(item_ids)]

    def encode(self, user_ids, item_ids, history_item_ids):
        users, items = self.propagate()
        return users[self.map_user_ids(user_ids)], items[self.map_item_ids(item_ids)]


class SASRecEncoder(MFEncoder):
    """SASRec: a causal transformer over the history; the user is the output at the last position.

    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. Item embeddings are shared
    between history and target; ``score = <h_L (+ p_u), q_i>``.
    """

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        d = config.hidden_size
        self.position_embedding = nn.Embedding(config.max_history, d)
        layer = nn.TransformerEncoderLayer(
            d, config.num_heads, dim_feedforward=d, dropout=config.dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.layer_norm = nn.LayerNorm(d)
        self.embedding_dropout = nn.Dropout(config.dropout)

    def encode_sequence(self, history_item_ids: torch.LongTensor) -> torch.FloatTensor:
        """``history_item_ids [B, L]`` (left-padded) → sequence representation ``[B, d]``."""
        history = history_item_ids[:, -self.config.max_history :]
        length = history.shape[1]
        padding = history == 0  # [B, L]
        positions = torch.arange(length, device=history.device) + self.config.max_history - length
        hidden = self.encode_items(history) * math.sqrt(self.config.hidden_size) + self.position_embedding(positions)
        hidden = self.embedding_dropout(hidden)
        # Causal mask + padded keys; every slot may attend to itself, so no row is fully masked (an
        # empty history reads the cold row 0 at the last slot).
        blocked = torch.ones(length, length, dtype=torch.bool, device=history.device).triu(1)
        blocked = (blocked | padding[:, None, :]) & ~torch.eye(length, dtype=torch.bool, device=history.device)
        blocked = blocked.repeat_interleave(self.config.num_heads, dim=0)  # [B * heads, L, L]
        hidden = self.blocks(hidden, mask=blocked)  # [B, L, d]
        return self.layer_norm(hidden[:, -1])

    def encode(self, user_ids, item_ids, history_item_ids):
        users = self.map_user_ids(user_ids)
        user_emb = self.encode_sequence(history_item_ids)
        if self.config.sasrec_use_user_embedding:
            user_emb = user_emb + self.user_embedding(users)
        return user_emb, self.encode_items(item_ids)


def _mlp(sizes, dropout: float) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.PReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class DINEncoder(MFEncoder):
    """DIN: target attention over the history (attention MLP on ``[h, t, h - t, h * t]``), then an MLP scorer.

    Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018. As in the paper,
    attention weights are not softmax-normalised; padding positions get weight 0. ``encode`` returns
    ``user_emb = p_u + interest`` (the target-aware user view) and ``item_emb = q_i``.
    """

    target_aware_user = True

    def __init__(self, config: CFRecConfig):
        super().__init__(config)
        d = config.hidden_size
        self.attention = _mlp([4 * d, *config.attention_hidden_sizes], config.dropout)
        self.attention_out = nn.Linear(([4 * d] + config.attention_hidden_sizes)[-1], 1)
        self.scorer = _mlp([4 * d, *config.mlp_hidden_sizes], config.dropout)
        self.scorer_out = nn.Linear(([4 * d] + config.mlp_hidden_sizes)[-1], 1)

    def interest(self, history_item_ids: torch.LongTensor, item_emb: torch.FloatTensor) -> torch.FloatTensor:
        """``history_item_ids [B, L]``, target ``item_emb [B, d]`` → attention-pooled interest ``[B, d]``."""
        history = history_item_ids[:, -self.config.max_history :]
        hist_emb = self.encode_items(history)  # [B, L, d]
        target = item_emb.unsqueeze(1).expand_as(hist_emb)
        features = torch.cat([hist_emb, target, hist_emb - target, hist_emb * target], dim=-1)  # [B, L, 4d]
        weights = self.attention_out(self.attention(features)).squeeze(-1)  # [B, L]
        weights = weights.masked_fill(history == 0, 0.0)
        return (weights.unsqueeze(-1) * hist_emb).sum(1) / self.config.max_history  # fixed scale: pad-invariant

    def _parts(self, user_ids, item_ids, history_item_ids):
        user_emb = self.user_embedding(self.map_user_ids(user_ids))
        item_emb = self.encode_items(item_ids)
        return user_emb, self.interest(history_item_ids, item_emb), item_emb

    def encode(self, user_ids, item_ids, history_item_ids):
        user_emb, interest, item_emb = self._parts(user_ids, item_ids, history_item_ids)
        return user_emb + interest, item_emb

    def _interaction(self, user_ids, item_ids, history_item_ids):
        user_emb, interest, item_emb = self._parts(user_ids, item_ids, history_item_ids)
        features = torch.cat([user_emb, interest, item_emb, interest * item_emb], dim=-1)  # [B, 4d]
        return self.scorer_out(self.scorer(features)).squeeze(-1)


ENCODER_CLASSES = {
    "popularity": PopularityEncoder,
    "mf": MFEncoder,
    "lightgcn": LightGCNEncoder,
    "sasrec": SASRecEncoder,
    "din": DINEncoder,
}


def build_collaborative_encoder(config: CFRecConfig) -> CollaborativeEncoder:
    """Build the encoder named by ``config.encoder_type`` (weights initialised by :func:`init_cf_weights`)."""
    encoder = ENCODER_CLASSES[config.encoder_type](config)
    encoder.apply(lambda module: init_cf_weights(module, config.initializer_range))
    return encoder


@torch.no_grad()
def init_cf_weights(module: nn.Module, std: float) -> None:
    """Initialise one CF module; skips tensors transformers marked as loaded (``_is_hf_initialized``).

    Call it from a ``PreTrainedModel._init_weights`` that contains an encoder, so loaded tables are kept.
    """
    if isinstance(module, BiasEmbedding):
        init.zeros_(module.weight)
    elif isinstance(module, nn.Embedding):
        init.normal_(module.weight, std=std)
    elif isinstance(module, nn.MultiheadAttention):
        init.xavier_uniform_(module.in_proj_weight)
        init.zeros_(module.in_proj_bias)
    elif isinstance(module, nn.Linear):
        init.xavier_uniform_(module.weight)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, nn.PReLU):
        init.constant_(module.weight, 0.25)
    elif isinstance(module, CollaborativeEncoder) and module.config.use_bias:
        init.zeros_(module.global_bias)
