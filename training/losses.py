"""Segmentation losses with mmsegmentation 0.16 semantics, and HRDA's fused + detail loss."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from models.classes import IGNORE_INDEX
from training.cropping import Boxes, crop_per_image


def segmentation_ce(
    logits: Tensor,
    labels: Tensor,
    pixel_weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Pixel-wise cross-entropy as mmseg 0.16's decode-head loss computes it.

    The logits are resized bilinearly (``align_corners=False``) to the label size; the per-pixel
    loss (0 on ignored pixels) is multiplied by ``pixel_weight`` and averaged over ALL pixels,
    ignored ones included, so ignored pixels dilute the mean rather than leave it.

    Args:
        logits: ``(B, K, h, w)``.
        labels: ``(B, H, W)`` or ``(B, 1, H, W)`` class ids; ``ignore_index`` marks void pixels.
        pixel_weight: ``(B, H, W)`` or ``(B, 1, H, W)`` per-pixel weights (the pseudo-label
            confidence weight on mixed images), or None for weight 1.
        ignore_index: label of pixels that contribute 0.

    Returns:
        Scalar loss.
    """
    if labels.dim() == 4:
        labels = labels[:, 0]
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, labels.long(), reduction="none", ignore_index=ignore_index)
    if pixel_weight is not None:
        if pixel_weight.dim() == 4:
            pixel_weight = pixel_weight[:, 0]
        loss = loss * pixel_weight.to(loss.dtype)
    return loss.mean()


class HRDASegmentationLoss(NamedTuple):
    """HRDA's training loss and its two unweighted parts (for logging)."""

    total: Tensor
    fused: Tensor
    detail: Tensor


def hrda_segmentation_loss(
    fused_logits: Tensor,
    detail_logits: Tensor,
    labels: Tensor,
    crop_boxes: Boxes,
    pixel_weight: Tensor | None = None,
    detail_weight: float = 0.1,
    ignore_index: int = IGNORE_INDEX,
) -> HRDASegmentationLoss:
    """``(1 - detail_weight) * CE(fused) + detail_weight * CE(HR detail)`` as HRDA trains.

    The fused logits are compared with the whole label; the detail (HR-crop) logits with the label
    and the pixel weight cropped to the detail box. HRDA's ``lr_loss_weight`` is 0 in every CLUDA
    config, so there is no LR term.

    Args:
        fused_logits: ``(B, K, h, w)`` fused LR+HR logits.
        detail_logits: ``(B, K, h_crop, w_crop)`` logits of the HR detail crop.
        labels: ``(B, H, W)`` or ``(B, 1, H, W)``.
        crop_boxes: detail-crop box(es) in label pixels, one shared or one per image.
        pixel_weight: ``(B, H, W)`` or ``(B, 1, H, W)``, or None.
        detail_weight: HRDA's ``hr_loss_weight`` (0.1).
        ignore_index: label of void pixels.

    Returns:
        ``HRDASegmentationLoss(total, fused, detail)``.
    """
    fused = segmentation_ce(fused_logits, labels, pixel_weight, ignore_index)
    detail_weight_map = None if pixel_weight is None else crop_per_image(pixel_weight, crop_boxes)
    detail = segmentation_ce(
        detail_logits, crop_per_image(labels, crop_boxes), detail_weight_map, ignore_index
    )
    return HRDASegmentationLoss((1 - detail_weight) * fused + detail_weight * detail, fused, detail)
