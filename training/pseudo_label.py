"""Teacher pseudo-labels and DACS's confidence weight (the CLUDA paper's Γ, eq. 4)."""

from __future__ import annotations

import torch
from torch import Tensor

PSEUDO_THRESHOLD = 0.968


def pseudo_labels(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Hard pseudo-labels and their confidence from teacher logits (no gradient).

    Args:
        teacher_logits: ``(B, K, H, W)``.

    Returns:
        ``(labels, confidence)``: ``argmax_k softmax`` as ``(B, H, W)`` int64 and ``max_k softmax``
        as ``(B, H, W)`` float.
    """
    probabilities = torch.softmax(teacher_logits.detach().float(), dim=1)
    confidence, labels = probabilities.max(dim=1)
    return labels, confidence


def confident_fraction(confidence: Tensor, threshold: float = PSEUDO_THRESHOLD) -> Tensor:
    """Fraction of pixels of the WHOLE batch whose confidence is ``>= threshold``.

    This is DACS's pseudo-weight ``q`` and the paper's Γ (eq. 4): eq. 4 writes ``>``, DACS ``>=``;
    they differ only for probabilities exactly equal to the threshold.

    Args:
        confidence: ``(B, H, W)`` max softmax probabilities.
        threshold: β = 0.968.

    Returns:
        Scalar tensor in [0, 1].
    """
    return (confidence >= threshold).float().mean()


def pseudo_weight(
    confidence: Tensor,
    threshold: float = PSEUDO_THRESHOLD,
    valid_mask: Tensor | None = None,
) -> Tensor:
    """DACS's per-pixel pseudo-label weight: the batch-level fraction broadcast to every pixel.

    Args:
        confidence: ``(B, H, W)``.
        threshold: confidence threshold β.
        valid_mask: ``(B, H, W)`` or ``(B, 1, H, W)``; pixels where it is 0 get weight 0 (HRDA's
            ``valid_pseudo_mask``, the crop-pseudo-margins of the target pipeline), or None.

    Returns:
        ``(B, H, W)`` float weights.
    """
    weight = confident_fraction(confidence, threshold).expand_as(confidence)
    if valid_mask is None:
        return weight.clone()
    if valid_mask.dim() == 4:
        valid_mask = valid_mask[:, 0]
    return weight * valid_mask.to(weight.dtype)


def ignore_border_rows(weight: Tensor, top: int = 15, bottom: int = 120) -> Tensor:
    """DAFormer's variant of the margins: zero the weight of the top and bottom image rows.

    Args:
        weight: ``(B, H, W)``.
        top: rows zeroed at the top (15 in the DAFormer config).
        bottom: rows zeroed at the bottom (120 in the DAFormer config).

    Returns:
        A new ``(B, H, W)`` tensor; the input is unchanged.
    """
    weight = weight.clone()
    if top > 0:
        weight[:, :top, :] = 0
    if bottom > 0:
        weight[:, -bottom:, :] = 0
    return weight
