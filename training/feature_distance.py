"""DAFormer's ImageNet feature distance (FD) restricted to thing classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.classes import IGNORE_INDEX, NUM_CLASSES, THING_CLASSES


def downscale_label_ratio(
    label: Tensor,
    scale: int,
    min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Downscale a label map by ``scale``, keeping only cells dominated by one class.

    Each ``scale × scale`` cell takes its most frequent label (void counted as an extra class);
    the cell becomes ``ignore_index`` when that label is void or covers less than ``min_ratio`` of
    the cell. Same result as DAFormer's one-hot + average-pool version, computed one class at a
    time so no ``(B, K+1, H, W)`` one-hot map is built.

    Args:
        label: ``(B, 1, H, W)`` or ``(B, H, W)`` class ids; ``ignore_index`` marks void.
        scale: integer downscaling factor (> 1); ``H`` and ``W`` are floored to multiples of it.
        min_ratio: minimum share of the winning class (0.75).
        num_classes: number of real classes K.
        ignore_index: void label.

    Returns:
        ``(B, 1, H // scale, W // scale)`` int64 labels.
    """
    if scale <= 1:
        raise ValueError(f"scale must be > 1, got {scale}")
    if label.dim() == 3:
        label = label.unsqueeze(1)
    best_ratio = best_class = None
    for class_id in [*range(num_classes), ignore_index]:
        ratio = F.avg_pool2d((label == class_id).float(), kernel_size=scale)
        if best_ratio is None:
            best_ratio, best_class = ratio, torch.zeros_like(ratio, dtype=torch.long)
        else:
            # Strict ">" keeps the lowest class id on ties, as torch.max over one-hot channels.
            better = ratio > best_ratio
            best_ratio = torch.where(better, ratio, best_ratio)
            best_class = torch.where(better, torch.full_like(best_class, class_id), best_class)
    return best_class.masked_fill(best_ratio < min_ratio, ignore_index)


def thing_mask(labels: Tensor, thing_classes: Sequence[int] = THING_CLASSES) -> Tensor:
    """Boolean mask of pixels whose label is a thing class (same shape as ``labels``)."""
    return torch.isin(labels, torch.as_tensor(list(thing_classes), device=labels.device))


def feature_distance_loss(
    student_features: Tensor, imagenet_features: Tensor, mask: Tensor
) -> Tensor:
    """Mean over masked cells of the L2 distance (not squared) between two feature maps.

    On an empty mask DAFormer returns NaN (harmless there because no gradient flows); here the
    loss is an exact 0 that stays attached to the student's graph (its gradient is zero), so no NaN
    reaches the total loss or the logs. The FD weight λ is applied by the caller.

    Args:
        student_features: ``(B, C, h, w)`` student features (last backbone stage).
        imagenet_features: ``(B, C, h, w)`` frozen ImageNet features (detached here).
        mask: ``(B, h, w)`` or ``(B, 1, h, w)`` boolean cells to include.

    Returns:
        Scalar loss.
    """
    if mask.dim() == 4:
        mask = mask[:, 0]
    distance = torch.linalg.vector_norm(student_features - imagenet_features.detach(), dim=1)
    selected = distance[mask]
    if selected.numel() == 0:
        return distance.sum() * 0.0
    return selected.mean()


def thing_feature_distance(
    student_features: Tensor,
    imagenet_features: Tensor,
    source_labels: Tensor,
    thing_classes: Sequence[int] = THING_CLASSES,
    min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """FD on the cells whose downscaled source label is a thing class (DACS's ``calc_feat_dist``).

    The downscaling factor is ``label_width // feature_width`` (32 for DAFormer at 512², 64 for
    HRDA's LR features of a 1024² crop).

    Args:
        student_features: ``(B, C, h, w)``.
        imagenet_features: ``(B, C, h, w)``.
        source_labels: ``(B, 1, H, W)`` or ``(B, H, W)``.
        thing_classes: classes whose cells are compared.
        min_ratio: ``downscale_label_ratio``'s minimum class share.
        num_classes: number of real classes.
        ignore_index: void label.

    Returns:
        Scalar loss (without λ).
    """
    scale = source_labels.shape[-1] // student_features.shape[-1]
    small_labels = downscale_label_ratio(source_labels, scale, min_ratio, num_classes, ignore_index)
    return feature_distance_loss(
        student_features, imagenet_features, thing_mask(small_labels, thing_classes)
    )
