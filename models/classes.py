"""The 19 Cityscapes evaluation classes (trainIds 0..18), their palette and shared constants."""

from __future__ import annotations

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

NUM_CLASSES: int = len(CITYSCAPES_CLASSES)
IGNORE_INDEX: int = 255

# DAFormer's "fdist_classes": the thing classes used by ImageNet feature distance and, in CLUDA,
# to separate thing from stuff pixels in the contrastive loss.
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
STUFF_CLASSES: tuple[int, ...] = tuple(c for c in range(NUM_CLASSES) if c not in THING_CLASSES)

# Synthia has no terrain, truck or train: mIoU16 leaves them out, mIoU13 also wall, fence and pole.
SYNTHIA_MISSING_CLASSES: tuple[int, ...] = (9, 14, 16)
MIOU13_EXTRA_EXCLUDED: tuple[int, ...] = (3, 4, 5)

# ImageNet normalisation in the 0..255 RGB range (mmseg's img_norm_cfg).
IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
