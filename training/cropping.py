"""HRDA detail crops: random and entropy-based crop boxes, cropping by box and crop masks.

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


def random_crop_box(
    image_size: tuple[int, int],
    crop_size: tuple[int, int],
    generator: torch.Generator,
    divisible: int = 8,
) -> CropBox:
    """Draw HRDA's random detail-crop box.

    Each offset is ``randint(0, (H - h + 1) // divisible) * divisible`` with the upper bound
    exclusive, as in HRDA's ``get_crop_bbox``: for a 1024 image and a 512 crop the offsets are
    {0, 8, ..., 504}, so the last position 512 is never drawn (an inherited quirk kept for
    faithfulness). Where that range would be empty (a margin smaller than ``divisible - 1``), HRDA
    crashes; here the offset is 0.

    Args:
        image_size: ``(H, W)`` of the image the crop is taken from.
        crop_size: ``(h, w)`` of the crop.
        generator: source of the two random offsets.
        divisible: offsets are multiples of this number.

    Returns:
        ``(y1, y2, x1, x2)``; the whole image when it has the crop's size.
    """
    height, width = image_size
    crop_height, crop_width = crop_size
    if (height, width) == (crop_height, crop_width):
        return (0, height, 0, width)
    offsets = []
    for length, crop_length in ((height, crop_height), (width, crop_width)):
        choices = max((max(length - crop_length, 0) + 1) // divisible, 1)
        draw = torch.randint(0, choices, (1,), generator=generator, device=generator.device)
        offsets.append(int(draw.item()) * divisible)
    y1, x1 = offsets
    return (y1, y1 + crop_height, x1, x1 + crop_width)


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


def crop_mask(
    boxes: Boxes,
    batch_size: int,
    output_size: tuple[int, int],
    stride: float,
    device: torch.device | str | None = None,
) -> Tensor:
    """Indicator of the detail crop on a map ``stride`` times coarser than the image.

    Box coordinates are divided by ``stride`` and truncated to integers, as HRDA's ``scale_box``
    does for the scale-attention mask (stride ``output_stride / lr_scale`` = 8 for the LR logits of
    a 1024 crop) and for pasting HR logits (stride 4).

    Args:
        boxes: one shared box or one per image, in image pixels.
        batch_size: B.
        output_size: ``(h, w)`` of the map.
        stride: image pixels per map cell.
        device: device of the returned mask.

    Returns:
        Float mask of shape ``(B, 1, h, w)``: 1 inside the crop, 0 outside.
    """
    mask = torch.zeros(batch_size, 1, *output_size, device=device)
    for index, (y1, y2, x1, x2) in enumerate(boxes_per_image(boxes, batch_size)):
        mask[index, :, int(y1 / stride) : int(y2 / stride), int(x1 / stride) : int(x2 / stride)] = 1
    return mask


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
