"""Resize rounding, the cat_max_ratio crop rule, flips, padding and the pseudo-label margins."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.config import DAFORMER_GTA, DAFORMER_SYNTHIA, HRDA_GTA, HRDA_SYNTHIA
from training.data.pipeline import source_train_crop, target_train_crop
from training.data.transforms import (
    cat_max_ratio_crop_box,
    crop_is_balanced,
    pseudo_margin_mask,
    rescale_size,
)


class ScriptedRng:
    """Stands in for numpy.random.Generator: returns scripted offsets and flip draws."""

    def __init__(self, offsets: list[int], flips: list[float] | None = None) -> None:
        self.offsets = list(offsets)
        self.flips = list(flips or [])
        self.integer_calls: list[tuple[int, int]] = []

    def integers(self, low: int, high: int) -> int:
        self.integer_calls.append((low, high))
        return self.offsets.pop(0)

    def random(self) -> float:
        return self.flips.pop(0)


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((1914, 1052), DAFORMER_GTA.source_scale, (1280, 704)),
        ((1914, 1052), HRDA_GTA.source_scale, (2560, 1407)),
        ((1280, 760), DAFORMER_SYNTHIA.source_scale, (1280, 760)),
        ((1280, 760), HRDA_SYNTHIA.source_scale, (2560, 1520)),
        ((2048, 1024), DAFORMER_GTA.target_scale, (1024, 512)),
        ((2048, 1024), HRDA_GTA.target_scale, (2048, 1024)),
        ((480, 264), (0, 0), (480, 264)),
    ],
)
def test_rescale_size_uses_mmcv_rounding(
    size: tuple[int, int], scale: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert rescale_size(*size, scale) == expected


def test_crop_balance_rule() -> None:
    def crop_of(counts: dict[int, int]) -> np.ndarray:
        return np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in counts.items()])

    assert crop_is_balanced(crop_of({1: 70, 2: 30}), 0.75)
    assert not crop_is_balanced(crop_of({1: 75, 2: 25}), 0.75)  # strictly below 75 %
    assert not crop_is_balanced(crop_of({1: 50, 255: 50}), 0.75)  # one class only
    assert crop_is_balanced(crop_of({1: 60, 2: 40, 255: 900}), 0.75)  # ignore pixels not counted
    assert not crop_is_balanced(crop_of({255: 10}), 0.75)


def test_cat_max_ratio_keeps_the_first_balanced_box() -> None:
    label = np.zeros((4, 20), dtype=np.uint8)
    label[:, 15:] = 1  # columns 15..19 hold class 1
    # Crop 4x4: offsets 0 and 5 see one class; offset 13 sees 2 columns of 0 and 2 of 1.
    rng = ScriptedRng([0, 0, 0, 5, 0, 13, 0, 14])
    box = cat_max_ratio_crop_box(label, (4, 4), 0.75, rng)
    assert box == (0, 4, 13, 17)
    assert rng.integer_calls == [(0, 1), (0, 17)] * 3


def test_cat_max_ratio_uses_the_box_drawn_after_ten_failures() -> None:
    label = np.zeros((4, 20), dtype=np.uint8)
    offsets = [value for k in range(11) for value in (0, k)]  # 11 boxes, all on class 0 only
    rng = ScriptedRng(offsets)
    box = cat_max_ratio_crop_box(label, (4, 4), 0.75, rng)
    # The reference tests 10 boxes and keeps the one drawn after the 10th failed test.
    assert box == (0, 4, 10, 14)
    assert len(rng.integer_calls) == 22 and not rng.offsets


def test_cat_max_ratio_disabled_draws_one_box() -> None:
    rng = ScriptedRng([0, 3])
    assert cat_max_ratio_crop_box(np.zeros((4, 20), np.uint8), (4, 4), 1.0, rng) == (0, 4, 3, 7)


def test_pseudo_margin_mask() -> None:
    mask = pseudo_margin_mask(10, 12, (2, 3, 1, 4))
    expected = np.zeros((10, 12), dtype=np.uint8)
    expected[2:7, 1:8] = 1
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(pseudo_margin_mask(5, 6, (0, 0, 0, 0)), 1)


def coordinate_image(height: int, width: int) -> np.ndarray:
    """RGB image whose R channel is the column and G channel the row of each pixel."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([columns, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("flip", [False, True])
def test_margins_follow_crop_and_flip(flip: bool) -> None:
    height, width, margins = 40, 60, (3, 12, 2, 5)
    image = coordinate_image(height, width)
    label = (np.arange(height * width).reshape(height, width) % 19).astype(np.uint8)
    rng = ScriptedRng([20, 33], [0.2 if flip else 0.9])
    out = target_train_crop(image, label, (0, 0), (16, 24), margins, 0.5, rng)
    columns, rows = out.image[..., 0].astype(int), out.image[..., 1].astype(int)
    expected_columns = np.arange(33, 57)[::-1] if flip else np.arange(33, 57)
    np.testing.assert_array_equal(columns[0], expected_columns)
    np.testing.assert_array_equal(rows[:, 0], np.arange(20, 36))
    # The mask is 1 exactly where the original pixel lies inside the margins.
    inside = (rows >= 3) & (rows < height - 12) & (columns >= 2) & (columns < width - 5)
    np.testing.assert_array_equal(out.valid_mask, inside.astype(np.uint8))
    np.testing.assert_array_equal(out.label, label[rows, columns])


def test_margins_are_built_before_the_resize() -> None:
    # HRDA's margins at full resolution, halved by DAFormer's resize: 30 -> 15 rows, 240 -> 120.
    image = np.zeros((1024, 2048, 3), dtype=np.uint8)
    rng = ScriptedRng([0, 0], [0.9])
    out = target_train_crop(image, None, (1024, 512), (512, 512), (30, 240, 30, 30), 0.5, rng)
    column = out.valid_mask[:, 100]
    assert column[:15].max() == 0 and column[15:392].min() == 1 and column[392:].max() == 0
    assert out.valid_mask[100, :15].max() == 0 and out.valid_mask[100, 15] == 1
    np.testing.assert_array_equal(out.label, 255)  # unlabelled target


def test_padding_values_and_content_size() -> None:
    image = np.full((10, 12, 3), 200, dtype=np.uint8)
    label = np.ones((10, 12), dtype=np.uint8)
    out = source_train_crop(image, label, (0, 0), (16, 16), 1.0, 0.5, ScriptedRng([0, 0], [0.9]))
    assert out.image.shape == (16, 16, 3) and out.label.shape == (16, 16)
    assert out.content_size == (10, 12)
    assert (out.image[10:] == 0).all() and (out.image[:, 12:] == 0).all()
    assert (out.label[10:] == 255).all() and (out.label[:, 12:] == 255).all()
    assert (out.label[:10, :12] == 1).all()
    target = target_train_crop(
        image, label, (0, 0), (16, 16), (0, 0, 0, 0), 0.5, ScriptedRng([0, 0], [0.9])
    )
    np.testing.assert_array_equal(target.valid_mask[:10, :12], 1)
    assert target.valid_mask[10:].max() == 0 and target.valid_mask[:, 12:].max() == 0


def test_source_pipeline_resizes_labels_with_nearest_neighbour() -> None:
    image = np.zeros((1052, 1914, 3), dtype=np.uint8)
    label = np.zeros((1052, 1914), dtype=np.uint8)
    label[:, 957:] = 13
    rng = np.random.default_rng(0)
    out = source_train_crop(image, label, (1280, 720), (512, 512), 0.75, 0.5, rng)
    assert out.image.shape == (512, 512, 3)
    assert set(np.unique(out.label)) <= {0, 13}  # no interpolated label values
