"""MIC's block masking of target images (masked image consistency)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.classes import IMAGENET_MEAN


def block_mask(
    batch_size: int,
    image_size: tuple[int, int],
    generator: torch.Generator,
    block_size: int = 64,
    mask_ratio: float = 0.7,
    device: torch.device | str | None = None,
) -> Tensor:
    """MIC's random block mask: each block is kept with probability ``1 - mask_ratio``.

    A ``(B, 1, round(H / b), round(W / b))`` uniform field (Python's ``round``, as MIC) is
    thresholded with ``> mask_ratio`` and nearest-upsampled to ``(H, W)``.

    Args:
        batch_size: B.
        image_size: ``(H, W)``.
        generator: source of the uniform field (drawn on the generator's device).
        block_size: block edge in pixels (64 for HRDA crops, 32 at DAFormer's 512).
        mask_ratio: probability that a block is masked (0.7).
        device: device of the returned mask (default: the generator's).

    Returns:
        ``(B, 1, H, W)`` float mask, 1 = keep, 0 = masked.
    """
    height, width = image_size
    field_shape = (batch_size, 1, round(height / block_size), round(width / block_size))
    field = torch.rand(field_shape, generator=generator, device=generator.device)
    keep = (field > mask_ratio).float()
    return F.interpolate(keep, size=image_size, mode="nearest").to(device or generator.device)


def mask_images(images: Tensor, mask: Tensor, fill: Sequence[float] = IMAGENET_MEAN) -> Tensor:
    """Replace masked pixels of 0..255 RGB images by ``fill`` (the ImageNet mean colour).

    MIC multiplies the normalised image by the mask, so masked pixels become 0 after
    normalisation, i.e. the mean colour; with normalisation inside the model the same image is the
    RGB one filled with the mean.

    Args:
        images: ``(B, 3, H, W)`` RGB in 0..255.
        mask: ``(B, 1, H, W)``, 1 = keep.
        fill: RGB value written where the mask is 0.

    Returns:
        A new ``(B, 3, H, W)`` tensor.
    """
    fill_value = torch.as_tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return torch.where(mask.bool(), images, fill_value)
