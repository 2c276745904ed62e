"""Geometric transforms of the training pipelines, as pure NumPy/OpenCV functions.

They reproduce mmseg 0.16 / mmcv 1.3.7 (release_code.md §1.3): keep-ratio ``Resize`` with mmcv's
``imrescale`` rounding (bilinear images, nearest labels), ``RandomCrop`` with ``cat_max_ratio``,
horizontal ``RandomFlip``, ``Pad`` to the crop size at the bottom and right. Randomness comes from
an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.classes import IGNORE_INDEX
from models.inference import rescale_size as rescale_to_box

from .config import NO_RESIZE

# (y1, y2, x1, x2) as in mmseg; y2/x2 may pass the border of an image smaller than the crop.
Box = tuple[int, int, int, int]

# Crop attempts of the cat_max_ratio rule, as in the reference loop.
CAT_MAX_RATIO_ATTEMPTS = 10


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Size of a keep-ratio resize into the box ``scale`` (mmcv ``rescale_size``).

    The same rule as inference (:func:`models.inference.rescale_size`), in (width, height) order:
    GTA's 1914×1052 gives 1280×704 at (1280, 720) and 2560×1407 at (2560, 1440).

    Args:
        width: image width.
        height: image height.
        scale: (long side, short side) box in either order; :data:`NO_RESIZE` keeps the size.

    Returns:
        (new width, new height).
    """
    if tuple(scale) == NO_RESIZE:
        return width, height
    new_height, new_width = rescale_to_box(height, width, scale)
    return new_width, new_height


def resize_keep_ratio(
    image: np.ndarray, label_maps: list[np.ndarray], scale: tuple[int, int]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Resize an image bilinearly and its label maps with nearest neighbour to the same size.

    Args:
        image: H×W×3 uint8.
        label_maps: H×W uint8 maps (labels, valid-pseudo masks) aligned with the image.
        scale: keep-ratio box, see :func:`rescale_size`.

    Returns:
        The resized image and maps (the inputs themselves when the size does not change).
    """
    height, width = image.shape[:2]
    new_width, new_height = rescale_size(width, height, scale)
    if (new_width, new_height) == (width, height):
        return image, label_maps
    image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    maps = [
        cv2.resize(m, (new_width, new_height), interpolation=cv2.INTER_NEAREST) for m in label_maps
    ]
    return image, maps


def random_crop_box(
    height: int, width: int, crop_size: tuple[int, int], rng: np.random.Generator
) -> Box:
    """Draw a crop box uniformly (mmseg ``RandomCrop.get_crop_bbox``).

    Args:
        height: image height.
        width: image width.
        crop_size: (crop height, crop width).
        rng: random stream; draws the row offset, then the column offset.

    Returns:
        (y1, y2, x1, x2) with ``y2 - y1 = crop height`` (may pass the border of a smaller image).
    """
    offset_y = int(rng.integers(0, max(height - crop_size[0], 0) + 1))
    offset_x = int(rng.integers(0, max(width - crop_size[1], 0) + 1))
    return offset_y, offset_y + crop_size[0], offset_x, offset_x + crop_size[1]


def crop_is_balanced(label_crop: np.ndarray, cat_max_ratio: float) -> bool:
    """The ``cat_max_ratio`` test: more than one class, none covering ``cat_max_ratio`` or more.

    Args:
        label_crop: uint8 trainIds of a candidate crop (255 = ignore, not counted).
        cat_max_ratio: the largest allowed share of one class among the labelled pixels.

    Returns:
        Whether the crop is accepted.
    """
    counts = np.bincount(label_crop.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    present = counts[counts > 0]
    return present.size > 1 and present.max() / present.sum() < cat_max_ratio


def cat_max_ratio_crop_box(
    label: np.ndarray, crop_size: tuple[int, int], cat_max_ratio: float, rng: np.random.Generator
) -> Box:
    """Draw a source crop box under the ``cat_max_ratio`` rule (mmseg ``RandomCrop.__call__``).

    Up to 10 candidate boxes are tested; the first accepted one is returned. When all 10 fail, the
    reference's loop has already drawn an 11th box after the 10th test, and uses it untested; this
    function does the same, so the random stream matches the reference's sequence of draws.

    Args:
        label: uint8 trainIds H×W of the resized image.
        crop_size: (crop height, crop width).
        cat_max_ratio: 1.0 or more disables the rule (a single box is drawn).
        rng: random stream.

    Returns:
        (y1, y2, x1, x2).
    """
    height, width = label.shape
    box = random_crop_box(height, width, crop_size, rng)
    if cat_max_ratio >= 1.0:
        return box
    for _ in range(CAT_MAX_RATIO_ATTEMPTS):
        if crop_is_balanced(crop(label, box), cat_max_ratio):
            break
        box = random_crop_box(height, width, crop_size, rng)
    return box


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """Crop the first two axes of ``array`` to ``box`` (a view, no copy)."""
    y1, y2, x1, x2 = box
    return array[y1:y2, x1:x2]


def hflip(array: np.ndarray) -> np.ndarray:
    """Mirror the columns of an H×W or H×W×C array (a view, no copy)."""
    return array[:, ::-1]


def pad_bottom_right(array: np.ndarray, size: tuple[int, int], value: int) -> np.ndarray:
    """Pad at the bottom and right to at least ``size`` (mmcv ``impad`` with a shape).

    Args:
        array: H×W or H×W×C.
        size: (height, width) to reach.
        value: fill value.

    Returns:
        A contiguous array of shape ``max(H, size[0]) × max(W, size[1]) (× C)``.
    """
    height, width = array.shape[:2]
    out_height, out_width = max(height, size[0]), max(width, size[1])
    if (out_height, out_width) == (height, width):
        return np.ascontiguousarray(array)
    out = np.full((out_height, out_width, *array.shape[2:]), value, dtype=array.dtype)
    out[:height, :width] = array
    return out


def pseudo_margin_mask(height: int, width: int, margins: tuple[int, int, int, int]) -> np.ndarray:
    """HRDA's ``valid_pseudo_mask``: ones, with the image margins set to 0.

    Built at the stored image resolution before any resize, so that it then follows the image
    through Resize, RandomCrop and RandomFlip like a label.

    Args:
        height: image height.
        width: image width.
        margins: (top, bottom, left, right) in pixels; zeros disable a side.

    Returns:
        uint8 array H×W of 0/1.
    """
    top, bottom, left, right = margins
    mask = np.ones((height, width), dtype=np.uint8)
    # Negative-index slices need the > 0 guards: mask[-0:] would be the whole image.
    if top > 0:
        mask[:top] = 0
    if bottom > 0:
        mask[-bottom:] = 0
    if left > 0:
        mask[:, :left] = 0
    if right > 0:
        mask[:, -right:] = 0
    return mask
