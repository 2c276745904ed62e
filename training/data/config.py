"""Data pipeline settings: one frozen dataclass and the named presets.

Numbers follow release_code.md §1.3 (pipelines) and §2 (rare class sampling).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SOURCE_KINDS: tuple[str, ...] = ("gta", "synthia", "cityscapes", "custom", "synthetic")
TARGET_KINDS: tuple[str, ...] = ("cityscapes", "custom", "synthetic")

# Keep-ratio scale meaning "use the image at its stored size".
NO_RESIZE: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class RareClassSamplingConfig:
    """Rare class sampling of the source domain (release_code.md §2).

    Attributes:
        enabled: draw a class first, then a file containing it; off: uniform epochs of the source.
        temperature: T of ``softmax((1 - f_c) / T)``.
        min_pixels: a file is eligible for class c if it holds more than this many c pixels, counted
            at the original label resolution.
        min_crop_ratio: re-crop (up to 10 times) until the crop holds more than
            ``min_pixels * min_crop_ratio`` pixels of c; 0 disables the re-crop loop.
    """

    enabled: bool = True
    temperature: float = 0.01
    min_pixels: int = 3000
    min_crop_ratio: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    """Everything that defines the training and validation data.

    Attributes:
        source: labelled source domain: ``gta``, ``synthia``, ``cityscapes``, ``custom`` or
            ``synthetic`` (the generated GTA-format domain under ``<data root>/synthetic``).
        target: unlabelled target domain: ``cityscapes``, ``custom`` or ``synthetic`` (the generated
            Cityscapes-format domain). Validation uses the target's ``val`` split.
        source_dir: folder of the source under the data root; "" = the kind's default (``gta``,
            ``synthia``, ``cityscapes``). Required for ``custom``. For ``synthetic`` it is the
            folder holding both generated domains (default ``synthetic``: ``synthetic/gta`` and
            ``synthetic/cityscapes``).
        target_dir: same for the target.
        source_scale: mmcv keep-ratio ``img_scale`` (long side, short side) of the source Resize;
            ``(0, 0)`` keeps the stored size.
        target_scale: same for the target training images.
        val_scale: same for validation images (the label keeps its stored size).
        crop_size: (height, width) of the training crops of both domains.
        cat_max_ratio: source crops are redrawn (10 tries) until no class covers this share of the
            labelled pixels; 1.0 disables the rule. The target crop never uses it.
        flip_prob: horizontal flip probability, drawn independently per crop.
        rcs: rare class sampling of the source.
        pseudo_margins: (top, bottom, left, right) rows/columns of the target's
            ``valid_pseudo_mask`` set to 0, at the target's stored resolution, before any resize;
            ``(0, 0, 0, 0)`` gives an all-ones mask.
        batch_size: crops per domain per step and per process (2 source + 2 target in the papers).
        num_workers: data-loader worker processes per rank. The sample stream does not depend on
            it (randomness is derived from the sample index), so it is a speed setting only.
        synthetic_seed: seed of the generated dataset when a domain is ``synthetic``.
    """

    source: str = "gta"
    target: str = "cityscapes"
    source_dir: str = ""
    target_dir: str = ""
    source_scale: tuple[int, int] = (1280, 720)
    target_scale: tuple[int, int] = (1024, 512)
    val_scale: tuple[int, int] = (1024, 512)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    rcs: RareClassSamplingConfig = RareClassSamplingConfig()
    pseudo_margins: tuple[int, int, int, int] = (30, 240, 30, 30)
    batch_size: int = 2
    num_workers: int = 4
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in SOURCE_KINDS:
            raise ValueError(f"data.source must be one of {SOURCE_KINDS}, got {self.source!r}")
        if self.target not in TARGET_KINDS:
            raise ValueError(f"data.target must be one of {TARGET_KINDS}, got {self.target!r}")
        if self.source == "custom" and not self.source_dir:
            raise ValueError("data.source = 'custom' needs data.source_dir (the dataset folder)")
        if self.target == "custom" and not self.target_dir:
            raise ValueError("data.target = 'custom' needs data.target_dir (the dataset folder)")
        if min(self.crop_size) <= 0:
            raise ValueError(f"data.crop_size must be positive, got {self.crop_size}")
        if min(self.pseudo_margins) < 0:
            raise ValueError(f"data.pseudo_margins must be >= 0, got {self.pseudo_margins}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"data.flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ValueError("data.batch_size must be >= 1 and data.num_workers >= 0")


# DAFormer (release_code.md §1.3, 512 column). The reference's "cpl v1" zeroes the top 15 and bottom
# 120 rows of the 512-high target crop; as that crop spans the whole 1024×512 target, margins of 30
# and 240 rows at full resolution, halved by the Resize, are exactly the same pixels (and it has no
# left/right margins).
DAFORMER_GTA = DataConfig(
    source="gta",
    source_scale=(1280, 720),
    target_scale=(1024, 512),
    val_scale=(1024, 512),
    crop_size=(512, 512),
    rcs=RareClassSamplingConfig(min_crop_ratio=0.5),
    pseudo_margins=(30, 240, 0, 0),
)
DAFORMER_SYNTHIA = dataclasses.replace(DAFORMER_GTA, source="synthia", source_scale=(1280, 760))

# HRDA (1024 column, "cpl v2" margins). HRDA's min_crop_ratio is 2.0 because its inputs have twice
# the resolution, 4x the pixels. The reference config uses 1 worker; 4 only changes speed here.
HRDA_GTA = DataConfig(
    source="gta",
    source_scale=(2560, 1440),
    target_scale=(2048, 1024),
    val_scale=(2048, 1024),
    crop_size=(1024, 1024),
    rcs=RareClassSamplingConfig(min_crop_ratio=2.0),
    pseudo_margins=(30, 240, 30, 30),
)
HRDA_SYNTHIA = dataclasses.replace(HRDA_GTA, source="synthia", source_scale=(2560, 1520))

# The synthetic dataset (480×264 source, 512×256 target) at its stored size: the same relative
# geometry as HRDA's target (crop = half the width, full height) at a CPU-friendly size.
# - min_pixels keeps GTA's eligibility threshold as a share of the image: 3000 px of a 1914×1052
#   label is 0.149 %, i.e. 189 px of 480×264; 190.
# - min_crop_ratio: the reference's value follows the pixel-count factor of its Resize (DAFormer 0.5
#   at 0.45x the original pixels, HRDA 2.0 at 1.8x); the toy pipeline keeps the stored size: 1.0.
# - margins: the HRDA margins (30, 240, 30, 30) of a 1024-row image, scaled to 256 rows.
TOY = DataConfig(
    source="synthetic",
    target="synthetic",
    source_scale=NO_RESIZE,
    target_scale=NO_RESIZE,
    val_scale=NO_RESIZE,
    crop_size=(256, 256),
    rcs=RareClassSamplingConfig(min_pixels=190, min_crop_ratio=1.0),
    pseudo_margins=(8, 60, 8, 8),
    num_workers=1,
)

DATA_PRESETS: dict[str, DataConfig] = {
    "daformer_gta": DAFORMER_GTA,
    "daformer_synthia": DAFORMER_SYNTHIA,
    "hrda_gta": HRDA_GTA,
    "hrda_synthia": HRDA_SYNTHIA,
    "toy": TOY,
}
