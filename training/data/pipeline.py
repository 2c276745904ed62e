"""The training and validation pipelines of one sample (release_code.md §1.3).

Source: load → Resize (keep ratio) → RandomCrop with cat_max_ratio → RandomFlip → Pad.
Target: load, build ``valid_pseudo_mask`` at full resolution → Resize → RandomCrop → RandomFlip →
Pad; the mask follows every geometric step like a label.
Validation: load → Resize (keep ratio); the label keeps its stored resolution (mmseg evaluates
against the original label, the prediction being resized to it).

Images stay uint8 RGB here; the loader converts them to float 0..255 (the model normalises).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.classes import IGNORE_INDEX

from .datasets import Sample
from .errors import DatasetError
from .io import read_image, read_train_ids
from .transforms import (
    cat_max_ratio_crop_box,
    crop,
    hflip,
    pad_bottom_right,
    pseudo_margin_mask,
    random_crop_box,
    resize_keep_ratio,
)


@dataclass(frozen=True)
class TrainCrop:
    """One augmented training crop.

    Attributes:
        image: uint8 RGB crop_h×crop_w×3; padded pixels are 0 (the loader replaces them, see
            ``loader.py``).
        label: uint8 trainIds crop_h×crop_w, padded with 255; all 255 for an unlabelled sample.
        valid_mask: uint8 0/1 crop_h×crop_w (target only; padded with 0), else None.
        content_size: (height, width) of the crop before padding.
    """

    image: np.ndarray
    label: np.ndarray
    valid_mask: np.ndarray | None
    content_size: tuple[int, int]


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a sample's image and trainId label and check that their sizes agree.

    Args:
        sample: the files.

    Returns:
        ``(image, label)``: uint8 RGB H×W×3, and uint8 trainIds H×W or None when unlabelled.

    Raises:
        DatasetError: a file is unreadable or truncated, or the sizes differ (both files named).
    """
    image = read_image(sample.image)
    if sample.label is None:
        return image, None
    label = read_train_ids(sample.label)
    if image.shape[:2] != label.shape:
        raise DatasetError(
            f"image and label sizes differ: {sample.image} is {image.shape[1]}x{image.shape[0]}, "
            f"{sample.label} is {label.shape[1]}x{label.shape[0]}"
        )
    return image, label


def _flip_and_pad(
    image: np.ndarray,
    maps: list[np.ndarray],
    pad_values: list[int],
    flip_prob: float,
    crop_size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[np.ndarray], tuple[int, int]]:
    # The flip draw always happens (mmseg draws it even when prob is 0) to keep the stream aligned.
    if rng.random() < flip_prob:
        image, maps = hflip(image), [hflip(m) for m in maps]
    content_size = (image.shape[0], image.shape[1])
    image = pad_bottom_right(image, crop_size, 0)
    maps = [pad_bottom_right(m, crop_size, v) for m, v in zip(maps, pad_values, strict=True)]
    return image, maps, content_size


def source_train_crop(
    image: np.ndarray,
    label: np.ndarray,
    scale: tuple[int, int],
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    flip_prob: float,
    rng: np.random.Generator,
) -> TrainCrop:
    """Run the source pipeline on a decoded sample.

    Args:
        image: uint8 RGB H×W×3.
        label: uint8 trainIds H×W.
        scale: keep-ratio Resize box ((0, 0) = keep).
        crop_size: (height, width).
        cat_max_ratio: see :func:`transforms.cat_max_ratio_crop_box`.
        flip_prob: horizontal flip probability.
        rng: random stream (crop boxes, then the flip).

    Returns:
        The crop (no valid mask).
    """
    image, (label,) = resize_keep_ratio(image, [label], scale)
    box = cat_max_ratio_crop_box(label, crop_size, cat_max_ratio, rng)
    image, (label,), content_size = _flip_and_pad(
        crop(image, box), [crop(label, box)], [IGNORE_INDEX], flip_prob, crop_size, rng
    )
    return TrainCrop(image, label, None, content_size)


def target_train_crop(
    image: np.ndarray,
    label: np.ndarray | None,
    scale: tuple[int, int],
    crop_size: tuple[int, int],
    margins: tuple[int, int, int, int],
    flip_prob: float,
    rng: np.random.Generator,
) -> TrainCrop:
    """Run the target pipeline on a decoded sample.

    Args:
        image: uint8 RGB H×W×3.
        label: uint8 trainIds H×W (for oracle training and monitoring), or None.
        scale: keep-ratio Resize box ((0, 0) = keep).
        crop_size: (height, width).
        margins: (top, bottom, left, right) pseudo-label margins at the stored resolution.
        flip_prob: horizontal flip probability.
        rng: random stream (crop box, then the flip).

    Returns:
        The crop with its ``valid_mask``.
    """
    height, width = image.shape[:2]
    if label is None:
        label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    valid_mask = pseudo_margin_mask(height, width, margins)
    image, (label, valid_mask) = resize_keep_ratio(image, [label, valid_mask], scale)
    box = random_crop_box(image.shape[0], image.shape[1], crop_size, rng)
    image, (label, valid_mask), content_size = _flip_and_pad(
        crop(image, box),
        [crop(label, box), crop(valid_mask, box)],
        [IGNORE_INDEX, 0],
        flip_prob,
        crop_size,
        rng,
    )
    return TrainCrop(image, label, valid_mask, content_size)


def val_sample(image: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """Validation transform of an image (mmseg ``MultiScaleFlipAug`` with one scale, no flip).

    Args:
        image: uint8 RGB H×W×3.
        scale: keep-ratio Resize box ((0, 0) = keep).

    Returns:
        The resized uint8 RGB image.
    """
    resized, _ = resize_keep_ratio(image, [], scale)
    return resized
