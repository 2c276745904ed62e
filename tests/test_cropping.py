"""HRDA random crop boxes, cropping, crop masks and the entropy-based crop."""

from __future__ import annotations

import math

import pytest
import torch

from models.inference import slide_windows

from training.cropping import (
    crop,
    crop_per_image,
    entropy_crop_boxes,
    normalized_entropy,
)


def test_crop_and_crop_per_image():
    tensor = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6)
    assert torch.equal(crop(tensor, (1, 4, 2, 5)), tensor[:, :, 1:4, 2:5])
    per_image = crop_per_image(tensor, [(0, 2, 0, 3), (4, 6, 3, 6)])
    assert torch.equal(per_image[0], tensor[0, :, 0:2, 0:3])
    assert torch.equal(per_image[1], tensor[1, :, 4:6, 3:6])
    labels = tensor[:, 0]
    assert torch.equal(crop_per_image(labels, (1, 3, 1, 3)), labels[:, 1:3, 1:3])
    with pytest.raises(ValueError):
        crop_per_image(tensor, [(0, 2, 0, 2)])


def test_normalized_entropy_range():
    logits = torch.zeros(1, 19, 2, 2)
    logits[0, 3, 0, 0] = 100.0
    entropy = normalized_entropy(logits)
    assert entropy[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert entropy[0, 1, 1].item() == pytest.approx(1.0, abs=1e-6)


def confident_logits(batch_size, height, width, classes=5):
    logits = torch.zeros(batch_size, classes, height, width)
    logits[:, 0] = 20.0
    return logits


def test_entropy_crop_picks_the_hand_computed_window():
    # 8x8 logits, 32x32 image (x4), 16x16 crops at stride 8: 3x3 windows, y1, x1 in {0, 8, 16}.
    logits = confident_logits(2, 8, 8)
    logits[0, :, 5:8, 0:3] = 0.0  # uncertain block at image rows 20..32, columns 0..12
    logits[1, :, 0:2, 3:5] = 0.0  # uncertain block at image rows 0..8, columns 12..20
    boxes = entropy_crop_boxes(logits, image_size=(32, 32), crop_size=(16, 16))
    assert boxes == [(16, 32, 0, 16), (0, 16, 8, 24)]


def test_entropy_crop_ties_keep_the_first_window():
    boxes = entropy_crop_boxes(confident_logits(3, 8, 8), image_size=(32, 32), crop_size=(16, 16))
    assert boxes == [(0, 16, 0, 16)] * 3


def test_entropy_crop_matches_naive_window_means():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 16, 16, generator=generator) * 3
    boxes = entropy_crop_boxes(logits, image_size=(64, 64), crop_size=(32, 32))
    probabilities = torch.softmax(logits.double(), dim=1)
    entropy = -(probabilities * probabilities.log()).sum(1) / math.log(6)
    upsampled = entropy.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    windows = slide_windows(64, 64, 32, 16)
    assert len(windows) == 9
    for index in range(4):
        best, best_mean = None, -1.0
        for y1, y2, x1, x2 in windows:
            mean = upsampled[index, y1:y2, x1:x2].mean().item()
            if mean > best_mean:
                best, best_mean = (y1, y2, x1, x2), mean
        assert boxes[index] == best


def test_sliding_windows_end_flush_with_the_border():
    assert slide_windows(1024, 1024, 512, 256)[-1] == (512, 1024, 512, 1024)
    assert slide_windows(40, 30, 16, 8)[-1] == (24, 40, 14, 30)
