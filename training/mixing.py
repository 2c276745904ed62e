"""DACS domain mixing: ClassMix masks, mixing, colour jitter and Gaussian blur.

Images are RGB in 0..255 (normalisation lives in the model), so the de-normalise / re-normalise
steps around DACS's colour jitter become a division and multiplication by 255. The colour jitter
and blur reproduce kornia 0.5.8 (``ColorJitter`` and ``GaussianBlur2d``, which DACS uses), not
torchvision. Every random draw comes from an explicit ``torch.Generator``, made on the generator's
device and moved to the data's.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from models.classes import IGNORE_INDEX

_HSV_EPS = 1e-6


def class_mix_masks(
    source_labels: Tensor,
    generator: torch.Generator,
    exclude_ignore: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """ClassMix masks: per source image, the pixels of half of the batch's classes.

    For each image the candidate classes are the unique labels of the WHOLE source batch (DACS
    as used by DAFormer/HRDA/CLUDA; the original DACS uses the image's own classes). With ``n``
    candidates, ``k = ceil(n / 2)`` are chosen uniformly without replacement, and the mask is 1
    where the image's OWN label is one of them.

    ``exclude_ignore``: the release keeps ``ignore_index`` among the candidates (DAFormer issue
    #19, MIC issue #18), so the void "class" can take one of the ``k`` slots and, when chosen,
    pastes the source's void pixels over the target. ``True`` removes it from the candidates: void
    source pixels are then never pasted and ``k`` counts real classes only. ``False`` reproduces the
    release.

    Args:
        source_labels: ``(B, H, W)`` or ``(B, 1, H, W)`` source ground truth.
        generator: source of the class choices.
        exclude_ignore: drop ``ignore_index`` from the candidate classes.
        ignore_index: void label.

    Returns:
        ``(B, 1, H, W)`` boolean masks, True where the source pixel is pasted.
    """
    labels = source_labels[:, 0] if source_labels.dim() == 4 else source_labels
    classes = torch.unique(labels)
    if exclude_ignore:
        classes = classes[classes != ignore_index]
    num_classes = classes.numel()
    masks = []
    for image_labels in labels:
        order = torch.randperm(num_classes, generator=generator, device=generator.device)
        chosen = classes[order[: (num_classes + 1) // 2].to(classes.device)]
        masks.append(torch.isin(image_labels, chosen))
    return torch.stack(masks).unsqueeze(1)


def mix(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """``mask · source + (1 - mask) · target`` for images, labels or weights; returns a new tensor.

    Args:
        mask: ``(B, 1, H, W)`` boolean or 0/1.
        source: ``(B, C, H, W)``, ``(B, 1, H, W)`` or ``(B, H, W)``.
        target: same shape as ``source``.

    Returns:
        Tensor of ``source``'s shape.
    """
    selector = mask.bool()
    if source.dim() == 3:
        selector = selector[:, 0]
    return torch.where(selector, source, target)


class ColorJitterParameters(NamedTuple):
    """Per-image factors of kornia 0.5.8's ``ColorJitter`` (each ``(B,)``) and orders ``(B, 4)``.

    ``order[b]`` is a permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue. ``hue`` is a
    fraction of a full turn.
    """

    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor


def sample_color_jitter(
    batch_size: int, generator: torch.Generator, strength: float = 0.2
) -> ColorJitterParameters:
    """Draw kornia 0.5.8 ``ColorJitter(s, s, s, s)`` parameters independently for each image.

    Brightness, contrast and saturation factors are uniform in ``[max(0, 1 - s), 1 + s]``
    (brightness also capped at 2), hue in ``[-s, s]`` (within ±0.5), and each image gets its own
    random order, as DACS calls the augmentation once per image.

    Args:
        batch_size: B.
        generator: source of all draws.
        strength: s (DACS: 0.2).

    Returns:
        ``ColorJitterParameters`` on the generator's device.
    """
    device = generator.device

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch_size, generator=generator, device=device)

    factor_low = max(0.0, 1.0 - strength)
    return ColorJitterParameters(
        brightness=uniform(factor_low, min(1.0 + strength, 2.0)),
        contrast=uniform(factor_low, 1.0 + strength),
        saturation=uniform(factor_low, 1.0 + strength),
        hue=uniform(max(-strength, -0.5), min(strength, 0.5)),
        order=torch.stack(
            [torch.randperm(4, generator=generator, device=device) for _ in range(batch_size)]
        ),
    )


def rgb_to_hsv(image: Tensor) -> Tensor:
    """kornia 0.5.8 RGB→HSV of ``(*, 3, H, W)`` in [0, 1]; hue in radians [0, 2π)."""
    max_value, max_channel = image.max(dim=-3, keepdim=True)[0], image.argmax(dim=-3, keepdim=True)
    min_value = image.min(dim=-3, keepdim=True)[0]
    delta = max_value - min_value
    saturation = delta / (max_value + _HSV_EPS)
    safe_delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    red_gap, green_gap, blue_gap = (max_value - image).unbind(dim=-3)
    hue_candidates = torch.stack(
        [
            blue_gap - green_gap,
            2.0 * safe_delta[..., 0, :, :] + red_gap - blue_gap,
            4.0 * safe_delta[..., 0, :, :] + green_gap - red_gap,
        ],
        dim=-3,
    )
    hue = torch.gather(hue_candidates, dim=-3, index=max_channel) / safe_delta
    hue = 2 * math.pi * ((hue / 6.0) % 1.0)
    return torch.cat([hue, saturation, max_value], dim=-3)


def hsv_to_rgb(image: Tensor) -> Tensor:
    """kornia 0.5.8 HSV→RGB of ``(*, 3, H, W)``; hue in radians."""
    hue = image[..., 0, :, :] / (2 * math.pi)
    saturation = image[..., 1, :, :]
    value = image[..., 2, :, :]
    sector = torch.floor(hue * 6) % 6
    fraction = (hue * 6) % 6 - sector
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    sector = sector.long()
    table = torch.stack(
        (value, q, p, p, t, value, t, value, value, q, p, p, p, p, t, value, value, q), dim=-3
    )
    index = torch.stack([sector, sector + 6, sector + 12], dim=-3)
    return torch.gather(table, -3, index)


def _adjust(image: Tensor, operation: int, factor: Tensor) -> Tensor:
    if operation == 0:
        # kornia 0.5.8 shifts brightness additively by (factor - 1), unlike torchvision's scaling.
        return (image + (factor - 1)).clamp(0, 1)
    if operation == 1:
        return (image * factor).clamp(0, 1)
    hsv = rgb_to_hsv(image)
    hue, saturation, value = hsv.unbind(dim=-3)
    if operation == 2:
        saturation = (saturation * factor).clamp(0, 1)
    else:
        hue = torch.fmod(hue + factor * 2 * math.pi, 2 * math.pi)
    return hsv_to_rgb(torch.stack([hue, saturation, value], dim=-3))


def color_jitter(images: Tensor, parameters: ColorJitterParameters) -> Tensor:
    """Apply kornia 0.5.8 colour jitter with the given per-image parameters.

    Args:
        images: ``(B, 3, H, W)`` RGB in 0..255.
        parameters: from ``sample_color_jitter`` (any device).

    Returns:
        A new ``(B, 3, H, W)`` tensor in 0..255.
    """
    factors = torch.stack(
        [parameters.brightness, parameters.contrast, parameters.saturation, parameters.hue], dim=1
    ).to(device=images.device, dtype=images.dtype)
    jittered = []
    for image, image_factors, order in zip(
        images / 255.0, factors, parameters.order.tolist(), strict=True
    ):
        for operation in order:
            image = _adjust(image, operation, image_factors[operation])
        jittered.append(image)
    return torch.stack(jittered) * 255.0


def blur_kernel_size(length: int) -> int:
    """DACS's blur kernel size for an image side: ``floor(ceil(0.1 L) - 0.5 + ceil(0.1 L) mod 2)``.

    Always odd: 51 for 512, 103 for 1024.
    """
    tenth = math.ceil(0.1 * length)
    return int(math.floor(tenth - 0.5 + tenth % 2))


def _gaussian_kernels(size: int, sigma: Tensor) -> Tensor:
    offsets = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2
    if size % 2 == 0:
        offsets = offsets + 0.5
    kernels = torch.exp(-offsets.pow(2) / (2 * sigma.view(-1, 1).pow(2)))
    return kernels / kernels.sum(dim=1, keepdim=True)


def _padding(size: int) -> tuple[int, int]:
    front = (size - 1) // 2
    return front, size - 1 - front


def gaussian_blur(
    images: Tensor, sigma: Tensor, kernel_size: tuple[int, int] | None = None
) -> Tensor:
    """kornia 0.5.8 ``GaussianBlur2d`` with one σ per image (reflect border, normalised kernel).

    The 2-D kernel is the outer product of two 1-D Gaussians, so it is applied as a vertical then
    a horizontal pass, which gives the same result as the 2-D correlation with reflect padding.

    Args:
        images: ``(B, C, H, W)``.
        sigma: ``(B,)`` standard deviations, or a scalar tensor for all images.
        kernel_size: ``(ky, kx)``; default ``blur_kernel_size`` of each side (DACS's rule).

    Returns:
        A new ``(B, C, H, W)`` tensor.
    """
    batch_size, channels, height, width = images.shape
    if kernel_size is None:
        kernel_size = (blur_kernel_size(height), blur_kernel_size(width))
    sigma = sigma.to(device=images.device, dtype=images.dtype).expand(batch_size)
    size_y, size_x = kernel_size
    kernel_y = _gaussian_kernels(size_y, sigma).repeat_interleave(channels, dim=0)
    kernel_x = _gaussian_kernels(size_x, sigma).repeat_interleave(channels, dim=0)
    grouped = images.reshape(1, batch_size * channels, height, width)
    grouped = F.pad(grouped, (0, 0, *_padding(size_y)), mode="reflect")
    grouped = F.conv2d(grouped, kernel_y.view(-1, 1, size_y, 1), groups=batch_size * channels)
    grouped = F.pad(grouped, (*_padding(size_x), 0, 0), mode="reflect")
    grouped = F.conv2d(grouped, kernel_x.view(-1, 1, 1, size_x), groups=batch_size * channels)
    return grouped.view(batch_size, channels, height, width)


class StrongAugmentation(NamedTuple):
    """One iteration's strong augmentation: jitter parameters and blur σ per image, None if off."""

    color_jitter: ColorJitterParameters | None
    blur_sigma: Tensor | None


def sample_strong_augmentation(
    batch_size: int,
    generator: torch.Generator,
    jitter_strength: float = 0.2,
    jitter_probability: float = 0.2,
    blur: bool = True,
) -> StrongAugmentation:
    """Draw DACS's strong augmentation of the mixed images for one iteration.

    Two gates ``u, v ~ U(0, 1)`` are drawn first and shared by the batch: colour jitter is on when
    ``u > jitter_probability`` (so with probability 0.8 for 0.2 — DACS's semantics) and blur when
    ``blur`` and ``v > 0.5``. Then come the per-image jitter parameters and the per-image blur
    ``σ ~ U(0.15, 1.15)``.

    Args:
        batch_size: B.
        generator: source of all draws.
        jitter_strength: colour jitter strength s (0.2).
        jitter_probability: DACS's ``color_jitter_probability`` p (0.2).
        blur: whether blur may be applied at all.

    Returns:
        ``StrongAugmentation`` for ``apply_strong_augmentation``.
    """
    jitter_gate, blur_gate = torch.rand(2, generator=generator, device=generator.device).tolist()
    jitter = (
        sample_color_jitter(batch_size, generator, jitter_strength)
        if jitter_gate > jitter_probability
        else None
    )
    sigma = None
    if blur and blur_gate > 0.5:
        sigma = 0.15 + torch.rand(batch_size, generator=generator, device=generator.device)
    return StrongAugmentation(jitter, sigma)


def apply_strong_augmentation(images: Tensor, augmentation: StrongAugmentation) -> Tensor:
    """Colour jitter, then blur, as DACS's ``strong_transform``; ``(B, 3, H, W)`` 0..255 images."""
    if augmentation.color_jitter is not None:
        images = color_jitter(images, augmentation.color_jitter)
    if augmentation.blur_sigma is not None:
        images = gaussian_blur(images, augmentation.blur_sigma)
    return images
