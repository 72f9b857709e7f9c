"""CFRecConfig validation, every collaborative encoder's interface, cold mapping and save/load."""

import pytest
import torch

from modeling_cl3mrec.collaborative_encoders import (
    ENCODER_CLASSES,
    CollaborativeEncoder,
    LightGCNEncoder,
    build_collaborative_encoder,
)
from modeling_cl3mrec.configuration_cf import CFRecConfig
from modeling_cl3mrec.modeling_cf import CFRecModel

NUM_USERS, NUM_ITEMS, D, L = 12, 20, 8, 4
ENCODERS = sorted(ENCODER_CLASSES)


def make_config(encoder_type, **kwargs):
    fields = dict(num_users=NUM_USERS, num_items=NUM_ITEMS, hidden_size=D, max_history=L, num_heads=2, dropout=0.0)
    return CFRecConfig(encoder_type=encoder_type, **{**fields, **kwargs})


def train_rows(seed=0, n=80):
    """Train rows over users 1..9 and items 1..15 (10, 11 and 16..19 stay cold)."""
    generator = torch.Generator().manual_seed(seed)
    users = torch.randint(1, 10, (n,), generator=generator)
    items = torch.randint(1, 16, (n,), generator=generator)
    labels = torch.randint(0, 2, (n,), generator=generator)
    return users, items, labels


def fitted_model(encoder_type, **kwargs):
    torch.manual_seed(0)
    model = CFRecModel(make_config(encoder_type, **kwargs)).eval()
    model.encoder.fit_train_statistics(*train_rows())
    with torch.no_grad():  # move the tables away from their init so row 0 must really change
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    model.encoder.refresh_cold_rows()
    return model


def batch(b=5):
    users = torch.tensor([1, 2, 3, 10, 0])[:b]
    items = torch.tensor([1, 5, 16, 2, 3])[:b]
    history = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 0], [0, 7, 17, 8], [0, 0, 0, 9]])[:b]
    return users, items, history


@pytest.mark.parametrize(
    "field, value",
    [
        ("encoder_type", "bpr"),
        ("num_users", 1),
        ("num_items", 0),
        ("hidden_size", 0),
        ("max_history", 0),
        ("num_heads", 3),  # does not divide hidden_size=8
        ("dropout", 1.0),
        ("graph_edges", "negative"),
        ("popularity_smoothing", -1.0),
        ("attention_hidden_sizes", [16, 0]),
        ("initializer_range", 0.0),
    ],
)
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=field if field != "num_heads" else "num_heads"):
        make_config("mf" if field != "encoder_type" else value, **({} if field == "encoder_type" else {field: value}))


def test_config_round_trips_through_dict():
    config = make_config("din", attention_hidden_sizes=[16, 4])
    again = CFRecConfig.from_dict(config.to_dict())
    assert again.encoder_type == "din" and again.attention_hidden_sizes == [16, 4]
    assert again.model_type == "cl3mrec_cf"


@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_shapes(encoder_type):
    model = fitted_model(encoder_type)
    encoder = model.encoder
    assert isinstance(encoder, CollaborativeEncoder)
    users, items, history = batch()
    user_emb, item_emb = encoder.encode(users, items, history)
    assert user_emb.shape == (5, D) and item_emb.shape == (5, D)
    logits = encoder.score(users, items, history)
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    assert encoder.encode_items(torch.tensor([[1, 2, 3], [4, 5, 0]])).shape == (2, 3, D)
    out = model(users, items, history, labels=torch.tensor([1, 0, 1, 0, 1]))
    assert out.loss.ndim == 0 and torch.equal(out.logits, logits)


@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_out_of_range_ids_raise(encoder_type):
    encoder = fitted_model(encoder_type).encoder
    users, items, history = batch()
    with pytest.raises(ValueError, match=f"user_ids contains id {NUM_USERS}, outside the table of size {NUM_USERS}"):
        encoder.score(torch.tensor([1, 2, 3, 4, NUM_USERS]), items, history)
    with pytest.raises(ValueError, match=f"item_ids contains id -1, outside the table of size {NUM_ITEMS}"):
        encoder.score(users, torch.tensor([1, 2, 3, 4, -1]), history)
    with pytest.raises(ValueError, match=f"id {NUM_ITEMS + 5}"):
        encoder.encode_items(torch.tensor([NUM_ITEMS + 5]))


@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_cold_ids_score_like_row_zero(encoder_type):
    encoder = fitted_model(encoder_type).encoder
    assert not encoder.user_is_warm[10] and not encoder.item_is_warm[17] and encoder.item_is_warm[1]
    history = torch.tensor([[0, 1, 2, 3]] * 2)
    cold = encoder.score(torch.tensor([10, 11]), torch.tensor([17, 19]), history)
    zero = encoder.score(torch.tensor([0, 0]), torch.tensor([0, 0]), history)
    assert torch.allclose(cold, zero)
    warm = encoder.score(torch.tensor([1, 1]), torch.tensor([1, 19]), history)
    assert not torch.allclose(warm[0], warm[1])


def test_refresh_cold_rows_sets_mean_of_warm_rows():
    encoder = fitted_model("mf").encoder
    warm_users = encoder.user_embedding.weight[encoder.user_is_warm]
    assert torch.allclose(encoder.user_embedding.weight[0], warm_users.mean(0))
    assert torch.allclose(encoder.encode_items(torch.tensor([18])), encoder.item_embedding.weight[encoder.item_is_warm].mean(0))
    assert torch.allclose(encoder.item_bias.weight[0], encoder.item_bias.weight[encoder.item_is_warm].mean(0))


def test_lightgcn_graph_and_propagated_cold_row():
    encoder = fitted_model("lightgcn", graph_edges="positive", num_layers=2).encoder
    users, items, labels = train_rows()
    expected_edges = {(u, i) for u, i, y in zip(users.tolist(), items.tolist(), labels.tolist()) if y == 1}
    stored = set(zip(encoder.graph_user_ids.tolist(), encoder.graph_item_ids.tolist()))
    assert stored == expected_edges and encoder.config.num_graph_edges == len(expected_edges)
    user_table, item_table = encoder.propagate()
    assert torch.allclose(item_table[0], item_table[encoder.item_is_warm].mean(0))
    assert not torch.allclose(item_table[1:], encoder.item_embedding.weight[1:])  # propagation did something
    all_edges = fitted_model("lightgcn", graph_edges="all").encoder
    assert all_edges.config.num_graph_edges == len(set(zip(users.tolist(), items.tolist())))


def test_popularity_orders_items_by_smoothed_rate():
    model = CFRecModel(make_config("popularity", use_bias=False, popularity_smoothing=0.0))
    users = torch.tensor([1, 2, 3, 1, 2, 3, 1])
    items = torch.tensor([1, 1, 1, 2, 2, 2, 3])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    model.encoder.fit_train_statistics(users, items, labels)
    scores = model.encoder.score(torch.tensor([1, 1, 1]), torch.tensor([1, 2, 3]), torch.zeros(3, L, dtype=torch.long))
    assert scores[0] > scores[1] > scores[2]
    assert scores[1] == pytest.approx(torch.logit(torch.tensor(1 / 3)).item(), abs=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_sasrec_is_left_padding_invariant_and_uses_history():
    encoder = fitted_model("sasrec").encoder
    users, items = torch.tensor([1, 1, 1]), torch.tensor([2, 2, 2])
    history = torch.tensor([[0, 0, 0, 0, 5, 7], [0, 0, 0, 0, 5, 7], [0, 0, 0, 0, 9, 7]])
    scores = encoder.score(users, items, history)
    short = encoder.score(users[:1], items[:1], torch.tensor([[0, 0, 5, 7]]))  # L truncates to max_history
    assert torch.allclose(scores[0], short[0], atol=1e-6)
    assert not torch.allclose(scores[0], scores[2])


def test_din_ignores_padding_length():
    encoder = fitted_model("din").encoder
    long = encoder.score(torch.tensor([1]), torch.tensor([2]), torch.tensor([[0, 0, 5, 7]]))
    short = encoder.score(torch.tensor([1]), torch.tensor([2]), torch.tensor([[0, 5, 7]]))
    other = encoder.score(torch.tensor([1]), torch.tensor([2]), torch.tensor([[0, 9, 7]]))
    assert torch.allclose(long, short, atol=1e-6) and not torch.allclose(long, other)


@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_save_load_round_trip(tmp_path, encoder_type):
    import modeling_cl3mrec  # noqa: F401  (registers AutoModel)
    from transformers import AutoModel

    model = fitted_model(encoder_type, use_bias=encoder_type != "popularity")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    users, items, history = batch()
    expected = model(users, items, history).logits
    for loaded in (CFRecModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        loaded.eval()
        assert isinstance(loaded, CFRecModel)
        assert torch.equal(loaded.encoder.user_is_warm, model.encoder.user_is_warm)
        assert torch.allclose(loaded(users, items, history).logits, expected, atol=1e-6)


def test_builder_returns_configured_class():
    encoder = build_collaborative_encoder(make_config("lightgcn", num_layers=3))
    assert isinstance(encoder, LightGCNEncoder) and encoder.graph_user_ids.shape == (0,)
