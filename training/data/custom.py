"""The mapping file of a custom dataset (``dataset.json``) and its parsing.

A custom dataset is any folder of images with single-channel label PNGs, described by a small JSON
file at its root (see docs/custom_data.md)::

    {
      "splits": {"train": {"images": "images/train", "labels": "labels/train"},
                 "val":   {"images": "images/val",   "labels": "labels/val"}},
      "image_suffix": ".jpg",
      "label_suffix": ".png",
      "id_to_train_id": {"0": 255, "1": 0, "2": 13}
    }

Instead of ``id_to_train_id`` the file may give ``"classes": ["void", "road", "car", ...]``: the
label value i is the i-th name, matched to the 19 Cityscapes class names (case, ``_`` and ``-``
ignored); names that are not Cityscapes classes map to 255. ``splits`` defaults to one ``train``
split with ``images/`` and ``labels/``; a split without ``labels`` is unlabelled (a target's train
split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES

from .errors import DatasetError
from .labels import LabelTable

CUSTOM_SPEC_FILE = "dataset.json"
TRAIN_IDS_SUFFIX = "_labelTrainIds.png"

_ALLOWED_KEYS = {"splits", "image_suffix", "label_suffix", "id_to_train_id", "classes"}


@dataclass(frozen=True)
class CustomSplit:
    """Folders of one split, relative to the dataset folder (``labels`` None = unlabelled)."""

    images: str
    labels: str | None


@dataclass(frozen=True)
class CustomDatasetSpec:
    """A parsed ``dataset.json``.

    Attributes:
        splits: split name → folders.
        image_suffix: images are the files ending with it; the rest of the name is the sample stem.
        label_suffix: the raw label of stem s is ``<labels>/<same sub-folder>/<s><label_suffix>``.
        table: raw label value → trainId.
        ignored_class_names: names of a ``classes`` list that are not Cityscapes classes (→ 255).
    """

    splits: dict[str, CustomSplit]
    image_suffix: str
    label_suffix: str
    table: LabelTable
    ignored_class_names: tuple[str, ...] = ()


def _normalise_class_name(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _parse_table(spec: dict[str, Any], spec_path: Path) -> tuple[LabelTable, tuple[str, ...]]:
    has_map, has_classes = "id_to_train_id" in spec, "classes" in spec
    if has_map == has_classes:
        raise DatasetError(
            f"{spec_path}: give exactly one of 'id_to_train_id' (label value -> trainId) or "
            "'classes' (list of class names, index = label value)"
        )
    name = f"custom dataset {spec_path.parent.name}"
    if has_map:
        raw_map = spec["id_to_train_id"]
        if not isinstance(raw_map, dict) or not raw_map:
            raise DatasetError(f"{spec_path}: 'id_to_train_id' must be a non-empty object")
        id_to_train_id: dict[int, int] = {}
        for key, train_id in raw_map.items():
            try:
                value = int(key)
            except ValueError:
                raise DatasetError(f"{spec_path}: label value {key!r} is not an integer") from None
            if not 0 <= value <= 65535:
                raise DatasetError(f"{spec_path}: label value {value} is outside 0..65535")
            if not isinstance(train_id, int) or not (
                0 <= train_id < NUM_CLASSES or train_id == IGNORE_INDEX
            ):
                raise DatasetError(
                    f"{spec_path}: trainId {train_id!r} for label value {value} must be an integer "
                    f"in 0..{NUM_CLASSES - 1} or {IGNORE_INDEX} (ignore)"
                )
            id_to_train_id[value] = train_id
        return LabelTable(name, id_to_train_id, frozenset(id_to_train_id)), ()
    classes = spec["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"{spec_path}: 'classes' must be a non-empty list of class names")
    cityscapes_index = {_normalise_class_name(c): i for i, c in enumerate(CITYSCAPES_CLASSES)}
    id_to_train_id = {}
    ignored = []
    for value, class_name in enumerate(classes):
        train_id = cityscapes_index.get(_normalise_class_name(class_name))
        if train_id is None:
            ignored.append(class_name)
            id_to_train_id[value] = IGNORE_INDEX
        else:
            id_to_train_id[value] = train_id
    return LabelTable(name, id_to_train_id, frozenset(id_to_train_id)), tuple(ignored)


def load_custom_spec(folder: Path) -> CustomDatasetSpec:
    """Read and validate ``<folder>/dataset.json``.

    Args:
        folder: the custom dataset folder.

    Returns:
        The parsed specification.

    Raises:
        DatasetError: the file is missing, not valid JSON, or has unknown keys or bad values.
    """
    spec_path = folder / CUSTOM_SPEC_FILE
    if not spec_path.is_file():
        raise DatasetError(
            f"custom dataset {folder} has no {CUSTOM_SPEC_FILE}; expected layout:\n"
            f"  {folder}/\n    {CUSTOM_SPEC_FILE}\n    images/...\n    labels/...\n"
            "(see docs/custom_data.md)"
        )
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot parse {spec_path}: {error}") from error
    if not isinstance(spec, dict):
        raise DatasetError(f"{spec_path}: the top level must be a JSON object")
    unknown_keys = set(spec) - _ALLOWED_KEYS
    if unknown_keys:
        raise DatasetError(
            f"{spec_path}: unknown keys {sorted(unknown_keys)}; valid keys: {sorted(_ALLOWED_KEYS)}"
        )
    raw_splits = spec.get("splits", {"train": {"images": "images", "labels": "labels"}})
    if not isinstance(raw_splits, dict) or "train" not in raw_splits:
        raise DatasetError(f"{spec_path}: 'splits' must be an object with at least a 'train' split")
    splits = {}
    for split_name, folders in raw_splits.items():
        if not isinstance(folders, dict) or not isinstance(folders.get("images"), str):
            raise DatasetError(
                f"{spec_path}: split {split_name!r} needs an 'images' folder "
                "(and optionally 'labels')"
            )
        labels = folders.get("labels")
        if labels is not None and not isinstance(labels, str):
            raise DatasetError(f"{spec_path}: split {split_name!r}: 'labels' must be a folder name")
        splits[split_name] = CustomSplit(folders["images"], labels)
    image_suffix = spec.get("image_suffix", ".png")
    label_suffix = spec.get("label_suffix", ".png")
    if not (isinstance(image_suffix, str) and image_suffix and isinstance(label_suffix, str)):
        raise DatasetError(
            f"{spec_path}: 'image_suffix' and 'label_suffix' must be non-empty strings"
        )
    if not label_suffix.lower().endswith(".png") or label_suffix.endswith(TRAIN_IDS_SUFFIX):
        raise DatasetError(
            f"{spec_path}: 'label_suffix' must end with '.png' and not with '{TRAIN_IDS_SUFFIX}' "
            "(that name is reserved for the converted files)"
        )
    table, ignored = _parse_table(spec, spec_path)
    return CustomDatasetSpec(splits, image_suffix, label_suffix, table, ignored)
