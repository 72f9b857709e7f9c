"""Symmetric InfoNCE (trainers.contrastive) against a hand computation, with duplicate-id masking."""

import math

import pytest
import torch

from trainers.contrastive import info_nce, user_text_embeds


def hand_info_nce(cf, text, ids, temperature):
    """Loop-by-loop InfoNCE: for anchor i, candidates are j == i or ids[j] != ids[i]."""
    n = len(ids)

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    def direction(anchors, candidates):
        total, hits = 0.0, 0
        for i in range(n):
            allowed = [j for j in range(n) if j == i or ids[j] != ids[i]]
            logits = {j: cos(anchors[i], candidates[j]) / temperature for j in allowed}
            log_denominator = math.log(sum(math.exp(value) for value in logits.values()))
            total += log_denominator - logits[i]
            hits += max(logits, key=logits.get) == i
        return total / n, hits / n

    loss_a, acc_a = direction(cf, text)
    loss_b, acc_b = direction(text, cf)
    return (loss_a + loss_b) / 2, (acc_a + acc_b) / 2


@pytest.mark.parametrize("ids", [[1, 2, 3, 4, 5], [7, 7, 3, 9, 3]])
def test_info_nce_matches_hand_computation(ids):
    generator = torch.Generator().manual_seed(0)
    cf = torch.randn(len(ids), 6, generator=generator, dtype=torch.float64)
    text = torch.randn(len(ids), 6, generator=generator, dtype=torch.float64)
    result = info_nce(cf, text, torch.tensor(ids), temperature=0.3)
    expected_loss, expected_accuracy = hand_info_nce(cf, text, ids, 0.3)
    assert result.loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert result.accuracy.item() == pytest.approx(expected_accuracy)
    assert result.num_rows == len(ids)


def test_duplicates_are_not_false_negatives():
    """Two rows of the same item with identical text: masking keeps each other out of the denominator."""
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cf = text.clone()
    masked = info_nce(cf, text, torch.tensor([5, 5, 8]), temperature=0.1)
    unmasked = info_nce(cf, text, torch.tensor([5, 6, 8]), temperature=0.1)
    # Without masking the duplicate ties the positive (log 2 per duplicated row); with masking it vanishes.
    assert masked.loss.item() < 1e-3
    assert unmasked.loss.item() > 0.4
    assert masked.accuracy.item() == 1.0


def test_gradient_flows_and_valid_rows_are_dropped():
    cf = torch.randn(4, 3, requires_grad=True)
    text = torch.randn(4, 3)
    valid = torch.tensor([True, False, True, True])
    result = info_nce(cf, text, torch.tensor([1, 2, 3, 4]), 0.5, valid=valid)
    result.loss.backward()
    assert result.num_rows == 3
    assert cf.grad[1].abs().sum() == 0 and cf.grad[0].abs().sum() > 0


def test_no_negatives_gives_zero_loss_and_nan_accuracy():
    cf = torch.randn(2, 3, requires_grad=True)
    result = info_nce(cf, torch.randn(2, 3), torch.tensor([4, 4]), 0.1)
    assert result.loss.item() == 0.0 and math.isnan(result.accuracy.item())
    result.loss.backward()  # still part of the graph


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([1, 2]), 0.0)
    with pytest.raises(ValueError, match="equal shape"):
        info_nce(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([1, 2]), 0.1)


def test_user_text_is_mean_of_titled_history_items():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    has_text = torch.tensor([False, True, True, False])
    history = torch.tensor([[0, 1, 2], [0, 0, 3], [0, 0, 0]])
    user_text, valid = user_text_embeds(table, history, has_text)
    assert torch.allclose(user_text[0], torch.tensor([0.5, 1.0]))
    assert valid.tolist() == [True, False, False]
