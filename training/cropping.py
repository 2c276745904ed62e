"""HRDA detail crops in training: entropy-based crop boxes and cropping by box.

The random detail crop and the crop mask belong to the segmentor
(``models.segmentor.random_crop_box``), which draws them inside ``forward_train``.

A crop box is ``(y1, y2, x1, x2)`` in pixels of the tensor it was drawn for (end exclusive), as in
HRDA. Functions that accept ``boxes`` take either one box shared by the whole batch (HRDA's random
crop) or a sequence with one box per image (the entropy crop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.inference import slide_windows

CropBox = tuple[int, int, int, int]
Boxes = CropBox | Sequence[CropBox]


def crop(tensor: Tensor, box: CropBox) -> Tensor:
    """Crop the last two dimensions of ``tensor`` (any leading shape) to ``box``; returns a view."""
    y1, y2, x1, x2 = box
    return tensor[..., y1:y2, x1:x2]


def _is_single_box(boxes: Boxes) -> bool:
    return len(boxes) == 4 and all(isinstance(value, int) for value in boxes)


def boxes_per_image(boxes: Boxes, batch_size: int) -> list[CropBox]:
    """Expand one shared box to ``batch_size`` copies, or check a per-image list's length."""
    if _is_single_box(boxes):
        return [tuple(boxes)] * batch_size  # type: ignore[list-item]
    per_image = [tuple(box) for box in boxes]  # type: ignore[union-attr]
    if len(per_image) != batch_size:
        raise ValueError(f"got {len(per_image)} crop boxes for a batch of {batch_size}")
    return per_image  # type: ignore[return-value]


def crop_per_image(tensor: Tensor, boxes: Boxes) -> Tensor:
    """Crop image ``b`` of ``tensor`` (shape ``(B, ..., H, W)``) to its own box.

    All boxes must have the same size. Returns a new tensor of shape ``(B, ..., h, w)`` (a view
    when one box is shared).
    """
    if _is_single_box(boxes):
        return crop(tensor, boxes)  # type: ignore[arg-type]
    per_image = boxes_per_image(boxes, tensor.shape[0])
    return torch.stack([crop(image, box) for image, box in zip(tensor, per_image, strict=True)])


def normalized_entropy(logits: Tensor) -> Tensor:
    """Per-pixel entropy of ``softmax(logits)`` divided by ``log K``, in [0, 1].

    The release divides by ``K log K`` instead; a constant factor changes no crop choice.

    Args:
        logits: ``(B, K, h, w)``.

    Returns:
        ``(B, h, w)``.
    """
    probabilities = torch.softmax(logits.detach().float(), dim=1)
    return torch.special.entr(probabilities).sum(dim=1) / torch.log(
        torch.tensor(float(logits.shape[1]), device=logits.device)
    )


def entropy_crop_boxes(
    logits: Tensor,
    image_size: tuple[int, int],
    crop_size: tuple[int, int],
    stride: tuple[int, int] | None = None,
) -> list[CropBox]:
    """Pick, per image, the detail crop with the highest mean prediction entropy (CLUDA app. 7.4).

    The entropy map is nearest-upsampled to the image size, the candidate windows are HRDA's
    sliding windows (``models.inference.slide_windows``) of the crop size (stride half the crop by default), and each image keeps the
    window with the largest mean entropy; on ties the first window in row-major order wins (the
    release's strict ``>``). Unlike the release, the entropy map is never written to while windows
    are compared, and any batch size works.

    Args:
        logits: ``(B, K, h, w)`` student LR logits of the mixed images (detached here).
        image_size: ``(H, W)`` of the full-resolution image the crop is taken from.
        crop_size: ``(h_crop, w_crop)`` in image pixels.
        stride: window stride; default ``crop_size // 2``.

    Returns:
        One ``(y1, y2, x1, x2)`` box per image.
    """
    if stride is None:
        stride = (crop_size[0] // 2, crop_size[1] // 2)
    entropy = F.interpolate(
        normalized_entropy(logits).unsqueeze(1), size=image_size, mode="nearest"
    )
    candidates = slide_windows(image_size[0], image_size[1], crop_size, stride)
    window_means = torch.stack([crop(entropy, box).mean(dim=(1, 2, 3)) for box in candidates])
    best = window_means.argmax(dim=0)
    return [candidates[int(index)] for index in best]
