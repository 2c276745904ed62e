"""ImageNet feature distance: downscale_label_ratio and the masked L2 distance."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from training.feature_distance import (
    downscale_label_ratio,
    feature_distance_loss,
    thing_feature_distance,
)


def naive_downscale(label, scale, min_ratio, ignore_index=255):
    batch_size, height, width = label.shape
    values = label.tolist()
    out = torch.full((batch_size, 1, height // scale, width // scale), ignore_index)
    for b in range(batch_size):
        for row in range(height // scale):
            for column in range(width // scale):
                counts = Counter(
                    values[b][y][x]
                    for y in range(row * scale, (row + 1) * scale)
                    for x in range(column * scale, (column + 1) * scale)
                )
                # Most frequent first; on ties a real class before void, then the lowest id.
                winner, count = min(
                    counts.items(), key=lambda item: (-item[1], item[0] == ignore_index, item[0])
                )
                if winner != ignore_index and count / (scale * scale) >= min_ratio:
                    out[b, 0, row, column] = winner
    return out


def test_downscale_label_ratio_matches_cell_counts():
    generator = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 16, 12), generator=generator)
    label[0, :8, :4] = 7  # a pure cell block
    label[1, 4:8, 4:8] = 255
    label[1, 8:12, 0:4] = 13
    label[1, 8, 0] = 255  # 15/16 of the cell is class 13
    for min_ratio in (0.75, 0.3):
        expected = naive_downscale(label, 4, min_ratio)
        assert torch.equal(downscale_label_ratio(label.unsqueeze(1), 4, min_ratio), expected)
    result = downscale_label_ratio(label, 4)
    assert result[0, 0, 0, 0] == 7 and result[1, 0, 1, 1] == 255 and result[1, 0, 2, 0] == 13


def test_feature_distance_is_mean_l2_over_masked_cells():
    student = torch.zeros(1, 2, 1, 3, requires_grad=True)
    imagenet = torch.tensor([[[[3.0, 1.0, 0.0]], [[4.0, 0.0, 0.0]]]])
    mask = torch.tensor([[[True, True, False]]])
    loss = feature_distance_loss(student, imagenet, mask)
    assert loss.item() == pytest.approx((5.0 + 1.0) / 2)
    loss.backward()
    assert student.grad[0, :, 0, 2].eq(0).all()


def test_empty_mask_gives_zero_not_nan():
    student = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = feature_distance_loss(
        student, torch.randn(2, 4, 3, 3), torch.zeros(2, 3, 3, dtype=torch.bool)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None and student.grad.eq(0).all()


def test_thing_feature_distance_uses_thing_cells_only():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :4, :4] = 13  # car (thing)
    labels[:, 4:, 4:] = 11  # person (thing), but mixed below the ratio
    labels[:, 4:6, 4:] = 2
    student = torch.zeros(1, 1, 2, 2)
    imagenet = torch.tensor([[[[2.0, 7.0], [7.0, 7.0]]]])
    # Only the car cell (0, 0) passes: distance 2.
    assert thing_feature_distance(student, imagenet, labels).item() == pytest.approx(2.0)
