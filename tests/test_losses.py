"""mmseg-0.16 cross-entropy and HRDA's fused + detail loss against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import hrda_segmentation_loss, segmentation_ce


def naive_ce(logits, labels, weight=None, ignore_index=255):
    """Loop over pixels in float64; ignored pixels add 0 but count in the mean."""
    batch_size, classes, height, width = logits.shape
    scores_all, labels_all = logits.tolist(), labels.tolist()
    weights_all = None if weight is None else weight.tolist()
    total = 0.0
    for b in range(batch_size):
        for y in range(height):
            for x in range(width):
                label = labels_all[b][y][x]
                if label == ignore_index:
                    continue
                scores = [scores_all[b][k][y][x] for k in range(classes)]
                peak = max(scores)
                log_norm = peak + math.log(sum(math.exp(s - peak) for s in scores))
                pixel = log_norm - scores[label]
                total += pixel * (1.0 if weights_all is None else weights_all[b][y][x])
    return total / (batch_size * height * width)


def make_batch(seed=0, size=(5, 6)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, *size, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, *size), generator=generator)
    labels[0, 0, :3] = 255
    weight = torch.rand(2, *size, generator=generator, dtype=torch.float64)
    return logits, labels, weight


def test_ce_matches_naive_loop_with_ignore_and_weight():
    logits, labels, weight = make_batch()
    assert segmentation_ce(logits, labels).item() == pytest.approx(
        naive_ce(logits, labels), rel=1e-12
    )
    assert segmentation_ce(logits, labels, weight).item() == pytest.approx(
        naive_ce(logits, labels, weight), rel=1e-12
    )
    # (B, 1, H, W) labels and weights are accepted as mmseg passes them.
    value = segmentation_ce(logits, labels.unsqueeze(1), weight.unsqueeze(1)).item()
    assert value == pytest.approx(naive_ce(logits, labels, weight), rel=1e-12)


def test_ignored_pixels_count_in_the_mean():
    logits = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    labels = torch.tensor([[[0, 255]]])
    assert segmentation_ce(logits, labels).item() == pytest.approx(math.log(2) / 2)


def test_logits_are_upsampled_bilinearly_without_aligned_corners():
    logits, labels, weight = make_batch(size=(8, 12))
    small = logits[:, :, ::2, ::2].contiguous()
    upsampled = F.interpolate(small, size=(8, 12), mode="bilinear", align_corners=False)
    expected = naive_ce(upsampled, labels, weight)
    assert segmentation_ce(small, labels, weight).item() == pytest.approx(expected, rel=1e-12)
    corners = F.interpolate(small, size=(8, 12), mode="bilinear", align_corners=True)
    assert naive_ce(corners, labels, weight) != pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("boxes", [(2, 6, 4, 8), [(0, 4, 0, 4), (4, 8, 8, 12)]])
def test_hrda_loss_combines_fused_and_cropped_detail(boxes):
    logits, labels, weight = make_batch(seed=1, size=(8, 12))
    detail = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    loss = hrda_segmentation_loss(logits, detail, labels, boxes, weight)
    per_image = boxes if isinstance(boxes, list) else [boxes, boxes]
    cropped_labels = torch.stack(
        [labels[b, y1:y2, x1:x2] for b, (y1, y2, x1, x2) in enumerate(per_image)]
    )
    cropped_weight = torch.stack(
        [weight[b, y1:y2, x1:x2] for b, (y1, y2, x1, x2) in enumerate(per_image)]
    )
    detail_up = F.interpolate(detail, size=(4, 4), mode="bilinear", align_corners=False)
    expected_fused = naive_ce(logits, labels, weight)
    expected_detail = naive_ce(detail_up, cropped_labels, cropped_weight)
    assert loss.fused.item() == pytest.approx(expected_fused, rel=1e-12)
    assert loss.detail.item() == pytest.approx(expected_detail, rel=1e-12)
    assert loss.total.item() == pytest.approx(
        0.9 * expected_fused + 0.1 * expected_detail, rel=1e-12
    )
    unweighted = hrda_segmentation_loss(logits, detail, labels, boxes)
    assert unweighted.detail.item() == pytest.approx(naive_ce(detail_up, cropped_labels), rel=1e-12)
