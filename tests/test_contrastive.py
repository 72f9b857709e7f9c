"""Table InfoNCE (trainers.training.contrastive) against a hand computation, the user text table, and an alignment that
learns: full-table item retrieval from the CF view rises well above chance when only the contrastive loss trains."""

import math

import numpy as np
import pytest
import torch

from trainers.training.contrastive import (
    TextViews,
    contrastive_alignment,
    item_retrieval_recall,
    table_info_nce,
    user_text_table,
)


def hand_table_info_nce(anchors, candidates, targets, temperature, valid):
    """Loop-by-loop InfoNCE over the valid candidates."""

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    total, hits = 0.0, 0
    for anchor, target in zip(anchors, targets):
        logits = {j: cos(anchor, candidates[j]) / temperature for j in range(len(candidates)) if valid[j]}
        total += math.log(sum(math.exp(value) for value in logits.values())) - logits[target]
        hits += max(logits, key=logits.get) == target
    return total / len(targets), hits / len(targets)


def test_table_info_nce_matches_hand_computation():
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    candidates = torch.randn(9, 6, generator=generator, dtype=torch.float64)
    targets = [2, 5, 0, 8]
    valid = torch.tensor([True, True, True, False, True, True, False, True, True])
    result = table_info_nce(anchors, candidates, torch.tensor(targets), 0.3, valid)
    expected_loss, expected_accuracy = hand_table_info_nce(anchors, candidates, targets, 0.3, valid.tolist())
    assert result.loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert result.accuracy.item() == pytest.approx(expected_accuracy)
    assert result.num_rows == 4


def test_invalid_candidates_leave_the_softmax():
    """An invalid candidate identical to the anchor takes no probability mass away from the positive."""
    anchors = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    masked = table_info_nce(anchors, candidates, torch.tensor([0]), 0.05, torch.tensor([True, False, True]))
    unmasked = table_info_nce(anchors, candidates, torch.tensor([0]), 0.05)
    assert masked.loss.item() < 1e-3
    assert unmasked.loss.item() == pytest.approx(math.log(2), abs=1e-3)


def test_gradient_flows_and_bad_arguments_raise():
    anchors = torch.randn(3, 4, requires_grad=True)
    result = table_info_nce(anchors, torch.randn(5, 4), torch.tensor([0, 1, 2]), 0.5)
    result.loss.backward()
    assert anchors.grad.abs().sum() > 0
    empty = table_info_nce(torch.zeros(0, 4, requires_grad=True), torch.randn(5, 4), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.loss.item() == 0.0 and math.isnan(empty.accuracy.item())
    with pytest.raises(ValueError, match="temperature"):
        table_info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError, match=r"anchors \[A, D\]"):
        table_info_nce(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="invalid"):
        table_info_nce(torch.randn(1, 3), torch.randn(2, 3), torch.tensor([1]), 0.1, torch.tensor([True, False]))


def test_user_text_is_mean_over_the_latest_history():
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0], [4.0, 4.0]])
    has_text = torch.tensor([False, True, True, False, True])
    user_ids = np.array([1, 1, 2, 3])
    timestamps = np.array([20, 10, 5, 5])  # user 1's latest row is the first one
    histories = [[4, 1, 2], [4], [3], []]
    users, valid = user_text_table(items, has_text, user_ids, timestamps, histories, 5, lambda history: history[-2:])
    assert torch.allclose(users[1], torch.tensor([0.5, 1.0]))  # items 1 and 2: the 2 most recent of row 0
    assert valid.tolist() == [False, True, False, False, False]  # user 2: untitled item only; user 3: no history


@pytest.mark.parametrize("alignment_dim", [0, 16])
def test_alignment_learns_full_table_retrieval(make_cl3mrec, alignment_dim):
    """Only the projector (+ heads) train on the contrastive loss: item recall@3 over the whole table rises."""
    model, _ = make_cl3mrec(cf_features="embedding_bias", alignment_dim=alignment_dim)
    num_items, hidden = model.config.cf_config.num_items, model.config.text_config.hidden_size
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a CF table with structure, and text views that are a fixed function of it
        model.cf_encoder.item_embedding.weight.copy_(torch.randn(num_items, 8, generator=generator))
        model.cf_encoder.item_bias.weight.copy_(torch.randn(num_items, 1, generator=generator))
    mixing = torch.randn(9, hidden, generator=generator)
    features = model.item_features(torch.arange(num_items)).detach()
    item_text = torch.tanh(features @ mixing)
    valid = torch.ones(num_items, dtype=torch.bool)
    valid[0] = False
    views = TextViews(item_text, valid, torch.randn(model.config.cf_config.num_users, hidden), torch.ones(6, dtype=torch.bool))
    views.user_valid[0] = False
    before = item_retrieval_recall(model, views, k=3)["item_recall@3"]

    trainable = [*model.projector.parameters()] + ([*model.alignment_heads.parameters()] if alignment_dim else [])
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    model.train()
    losses = []
    for step in range(40):
        item_ids = torch.randint(1, num_items, (4,), generator=generator)
        user_ids = torch.randint(1, 6, (4,), generator=generator)
        user_features, _ = model.cf_features(user_ids, item_ids, torch.zeros(4, 1, dtype=torch.long))
        results = contrastive_alignment(model, views, user_ids, user_features, temperature=0.1)
        loss = results["item"].loss + results["user"].loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = item_retrieval_recall(model, views, k=3)
    assert after["item_recall@3_chance"] == pytest.approx(3 / 12)
    assert after["item_recall@3"] >= 0.9 > before
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_text_views_are_centred_over_valid_rows():
    items = torch.tensor([[10.0, 1.0], [10.0, 3.0], [99.0, 99.0]])
    users = torch.tensor([[5.0, 5.0], [7.0, 5.0]])
    views = TextViews(items, torch.tensor([True, True, False]), users, torch.tensor([True, True]))
    assert torch.allclose(views.items[:2], torch.tensor([[0.0, -1.0], [0.0, 1.0]]))
    assert torch.allclose(views.users, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    assert items[0, 0] == 10.0  # the caller's tensors are left alone
