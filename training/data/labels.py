"""Label tables of the supported datasets and their vectorised conversion to Cityscapes trainIds.

The id → trainId maps are those of the reference conversion scripts (release_code.md §1.2,
``tools/convert_datasets/{gta,synthia,cityscapes}.py``); every id outside a map becomes 255.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models.classes import IGNORE_INDEX, NUM_CLASSES


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of the official Cityscapes label table (cityscapesscripts ``labels.py``)."""

    id: int
    name: str
    train_id: int
    color: tuple[int, int, int]


# The official table, ids 0..33 (the license plate, id -1, never appears in label PNGs). trainId 255
# marks the classes that are not evaluated.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel(0, "unlabeled", 255, (0, 0, 0)),
    CityscapesLabel(1, "ego vehicle", 255, (0, 0, 0)),
    CityscapesLabel(2, "rectification border", 255, (0, 0, 0)),
    CityscapesLabel(3, "out of roi", 255, (0, 0, 0)),
    CityscapesLabel(4, "static", 255, (0, 0, 0)),
    CityscapesLabel(5, "dynamic", 255, (111, 74, 0)),
    CityscapesLabel(6, "ground", 255, (81, 0, 81)),
    CityscapesLabel(7, "road", 0, (128, 64, 128)),
    CityscapesLabel(8, "sidewalk", 1, (244, 35, 232)),
    CityscapesLabel(9, "parking", 255, (250, 170, 160)),
    CityscapesLabel(10, "rail track", 255, (230, 150, 140)),
    CityscapesLabel(11, "building", 2, (70, 70, 70)),
    CityscapesLabel(12, "wall", 3, (102, 102, 156)),
    CityscapesLabel(13, "fence", 4, (190, 153, 153)),
    CityscapesLabel(14, "guard rail", 255, (180, 165, 180)),
    CityscapesLabel(15, "bridge", 255, (150, 100, 100)),
    CityscapesLabel(16, "tunnel", 255, (150, 120, 90)),
    CityscapesLabel(17, "pole", 5, (153, 153, 153)),
    CityscapesLabel(18, "polegroup", 255, (153, 153, 153)),
    CityscapesLabel(19, "traffic light", 6, (250, 170, 30)),
    CityscapesLabel(20, "traffic sign", 7, (220, 220, 0)),
    CityscapesLabel(21, "vegetation", 8, (107, 142, 35)),
    CityscapesLabel(22, "terrain", 9, (152, 251, 152)),
    CityscapesLabel(23, "sky", 10, (70, 130, 180)),
    CityscapesLabel(24, "person", 11, (220, 20, 60)),
    CityscapesLabel(25, "rider", 12, (255, 0, 0)),
    CityscapesLabel(26, "car", 13, (0, 0, 142)),
    CityscapesLabel(27, "truck", 14, (0, 0, 70)),
    CityscapesLabel(28, "bus", 15, (0, 60, 100)),
    CityscapesLabel(29, "caravan", 255, (0, 0, 90)),
    CityscapesLabel(30, "trailer", 255, (0, 0, 110)),
    CityscapesLabel(31, "train", 16, (0, 80, 100)),
    CityscapesLabel(32, "motorcycle", 17, (0, 0, 230)),
    CityscapesLabel(33, "bicycle", 18, (119, 11, 32)),
)

CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    label.id: label.train_id for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX
}

# gta.py maps the same 19 Cityscapes label ids (GTA5 labels are palette PNGs of Cityscapes ids).
GTA_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

# synthia.py. The entries for terrain (16), truck (18) and train (20) are kept as in the reference
# although RAND-CITYSCAPES has no such pixels: Synthia trains 16 of the 19 classes.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip


@dataclass(frozen=True)
class LabelTable:
    """How one dataset's raw label values map to trainIds.

    Attributes:
        name: dataset name used in messages.
        id_to_train_id: raw value → trainId (0..18 or 255).
        known_ids: every raw value the dataset documents, mapped or not. Values outside this set are
            reported as unknown (they still become 255).
    """

    name: str
    id_to_train_id: Mapping[int, int]
    known_ids: frozenset[int]


# 255 is accepted as a known void value of the 8-bit Cityscapes-id files: tools that write the
# license plate (id -1) into an 8-bit PNG store it as 255.
CITYSCAPES_TABLE = LabelTable(
    "Cityscapes", CITYSCAPES_ID_TO_TRAIN_ID, frozenset(range(34)) | {IGNORE_INDEX}
)
GTA_TABLE = LabelTable("GTA5", GTA_ID_TO_TRAIN_ID, frozenset(range(34)) | {IGNORE_INDEX})
# RAND-CITYSCAPES documents the ids 0 (void) .. 22 (lane marking).
SYNTHIA_TABLE = LabelTable("Synthia", SYNTHIA_ID_TO_TRAIN_ID, frozenset(range(23)))


def convert_to_train_ids(ids: np.ndarray, table: LabelTable) -> tuple[np.ndarray, dict[int, int]]:
    """Map raw label values to trainIds with a lookup table (no per-pixel Python).

    Args:
        ids: integer array H×W of raw label values (uint8, uint16 or wider).
        table: the dataset's label table.

    Returns:
        A pair ``(train_ids, unknown)``: uint8 array H×W of trainIds (255 = ignore), and
        ``{raw value: pixel count}`` for the values outside ``table.known_ids`` (empty when all are
        known).
    """
    if ids.dtype in (np.uint8, np.uint16):
        # 8/16-bit labels: a bincount over the value range and a direct lookup table are much
        # faster than the sort inside np.unique on megapixel labels.
        counts = np.bincount(ids.ravel(), minlength=1)
        lookup = np.full(counts.size, IGNORE_INDEX, dtype=np.uint8)
        for value, train_id in table.id_to_train_id.items():
            if value < counts.size:
                lookup[value] = train_id
        train_ids = lookup[ids]
        values = np.flatnonzero(counts)
        value_counts = counts[values]
    else:
        values, inverse, value_counts = np.unique(ids, return_inverse=True, return_counts=True)
        mapped = np.array(
            [table.id_to_train_id.get(int(v), IGNORE_INDEX) for v in values], dtype=np.uint8
        )
        train_ids = mapped[inverse].reshape(ids.shape)
    unknown = {
        int(value): int(count)
        for value, count in zip(values, value_counts, strict=True)
        if int(value) not in table.known_ids
    }
    return train_ids, unknown


def class_pixel_counts(train_ids: np.ndarray) -> dict[int, int]:
    """Count the pixels of each trainId, as the reference statistics do.

    Args:
        train_ids: uint8 array H×W of trainIds (255 = ignore).

    Returns:
        ``{trainId: count}`` in ascending trainId order, listing only classes with a count > 0
        (the layout of one entry of ``sample_class_stats.json``, without its ``file`` key).
    """
    counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    return {int(class_id): int(count) for class_id, count in enumerate(counts) if count > 0}
