"""Pseudo-labels, DACS's confidence weight (Γ) and the margins."""

from __future__ import annotations

import pytest
import torch

from training.pseudo_label import (
    confident_fraction,
    ignore_border_rows,
    pseudo_labels,
    pseudo_weight,
)


def test_pseudo_labels_are_argmax_and_max_softmax():
    logits = torch.tensor(
        [[[[2.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.5]]]], requires_grad=True
    )  # (1, 3, 1, 2)
    labels, confidence = pseudo_labels(logits)
    assert labels.tolist() == [[[0, 1]]]
    first = torch.exp(torch.tensor(2.0)) / (
        torch.exp(torch.tensor(2.0)) + 1 + torch.exp(torch.tensor(-1.0))
    )
    assert confidence[0, 0, 0].item() == pytest.approx(first.item())
    assert not confidence.requires_grad


def test_confident_fraction_counts_the_whole_batch():
    confidence = torch.tensor([[[0.99, 0.5], [0.968, 0.2]], [[0.97, 0.97], [0.97, 0.1]]])
    # 0.968 itself counts (DACS's >=): 1 + 1 + 3 = 5 of 8 pixels.
    assert confident_fraction(confidence).item() == pytest.approx(5 / 8)
    weight = pseudo_weight(confidence)
    assert weight.shape == confidence.shape and torch.allclose(
        weight, torch.full_like(weight, 5 / 8)
    )


def test_pseudo_weight_margins():
    confidence = torch.ones(2, 4, 3)
    valid = torch.ones(2, 1, 4, 3)
    valid[:, :, 0] = 0
    weight = pseudo_weight(confidence, valid_mask=valid)
    assert weight[:, 0].eq(0).all() and weight[:, 1:].eq(1).all()
    rows = ignore_border_rows(torch.ones(2, 10, 3), top=2, bottom=3)
    assert rows[:, :2].eq(0).all() and rows[:, 7:].eq(0).all() and rows[:, 2:7].eq(1).all()
    original = torch.ones(1, 5, 2)
    ignore_border_rows(original, top=1, bottom=1)
    assert original.eq(1).all()
