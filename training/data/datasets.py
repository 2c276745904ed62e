"""Readers of the official folder layouts (release_code.md §1.1) and of custom datasets.

A reader only lists files: which image goes with which label, where ``prepare`` writes the trainId
label and where the class statistics live. Decoding happens in the pipeline (pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .custom import TRAIN_IDS_SUFFIX, load_custom_spec
from .errors import DatasetError
from .labels import CITYSCAPES_TABLE, GTA_TABLE, SYNTHIA_TABLE, LabelTable

DEFAULT_DIRS: dict[str, str] = {
    "gta": "gta",
    "synthia": "synthia",
    "cityscapes": "cityscapes",
}

LAYOUTS: dict[str, str] = {
    "gta": (
        "gta/\n"
        "  images/00001.png ...\n"
        "  labels/00001.png ...   (palette PNGs of Cityscapes label ids; prepare adds\n"
        "                          00001_labelTrainIds.png)"
    ),
    "synthia": (
        "synthia/\n"
        "  RGB/0000000.png ...\n"
        "  GT/LABELS/0000000.png ...   (16-bit multi-channel PNGs; prepare adds\n"
        "                               0000000_labelTrainIds.png)"
    ),
    "cityscapes": (
        "cityscapes/\n"
        "  leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        "  gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (prepare adds\n"
        "                                                  ..._gtFine_labelTrainIds.png)"
    ),
    "custom": (
        "<name>/\n"
        "  dataset.json   (folders, suffixes and the label value -> trainId map;\n"
        "                  see docs/custom_data.md)\n"
        "  images/...\n"
        "  labels/..."
    ),
}

_CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
_CITYSCAPES_RAW_SUFFIX = "_gtFine_labelIds.png"
_CITYSCAPES_TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
_MAX_LISTED = 20


@dataclass(frozen=True)
class Sample:
    """One image and its labels.

    Attributes:
        image: the image file.
        label: the trainId label (written by ``prepare``); None for an unlabelled split.
        raw_label: the file ``prepare`` converts into ``label``; None when unlabelled.
    """

    image: Path
    label: Path | None
    raw_label: Path | None


@dataclass(frozen=True)
class DatasetSplit:
    """The files of one split of one dataset.

    Attributes:
        name: display name, e.g. ``gta`` or ``cityscapes/val``.
        root: the dataset folder; the class statistics JSON files live here.
        samples: sorted by image path.
        table: raw label value → trainId.
        raw_reader: how raw labels are decoded: ``pil`` or ``synthia`` (16-bit, OpenCV).
        with_stats: whether ``prepare`` writes class statistics for this split (the reference
            counts GTA and Synthia in full, Cityscapes only for ``train``).
        ignored_class_names: custom class names mapped to 255 (reported by ``prepare``).
    """

    name: str
    root: Path
    samples: tuple[Sample, ...]
    table: LabelTable
    raw_reader: str
    with_stats: bool
    ignored_class_names: tuple[str, ...] = ()

    @property
    def labelled(self) -> bool:
        """Whether the split has labels."""
        return bool(self.samples) and self.samples[0].label is not None


def _describe_found(folder: Path) -> str:
    """List what exists at the nearest existing ancestor of ``folder``."""
    existing = folder
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"nothing: {folder} does not exist"
    entries = sorted(existing.iterdir())
    shown = [f"{entry.name}/" if entry.is_dir() else entry.name for entry in entries[:_MAX_LISTED]]
    more = f" ... ({len(entries) - _MAX_LISTED} more)" if len(entries) > _MAX_LISTED else ""
    listing = ", ".join(shown) if shown else "(empty)"
    return f"{existing}/ contains: {listing}{more}"


def missing_folder_error(folder: Path, kind: str) -> DatasetError:
    """Build the error for a missing dataset folder: the expected layout and what was found.

    Args:
        folder: the folder that should exist.
        kind: key of :data:`LAYOUTS`.

    Returns:
        The error to raise.
    """
    indented = "\n".join("    " + line for line in LAYOUTS[kind].splitlines())
    return DatasetError(
        f"missing folder {folder}\n  expected layout:\n{indented}\n"
        f"  found: {_describe_found(folder)}"
    )


def _require_dir(folder: Path, kind: str) -> None:
    if not folder.is_dir():
        raise missing_folder_error(folder, kind)


def _files_with_suffix(folder: Path, suffix: str) -> list[Path]:
    """Files under ``folder`` (recursive) whose name ends with ``suffix``, hidden ones excluded."""
    return sorted(
        path
        for path in folder.rglob(f"*{suffix}")
        if path.is_file() and not path.name.startswith(".")
    )


def _paired_samples(
    image_dir: Path,
    label_dir: Path | None,
    image_suffix: str,
    raw_suffix: str,
    train_ids_suffix: str,
) -> tuple[Sample, ...]:
    """Pair every image with its raw and trainId labels by replacing the suffix (mmseg's rule)."""
    samples = []
    for image in _files_with_suffix(image_dir, image_suffix):
        if label_dir is None:
            samples.append(Sample(image, None, None))
            continue
        relative = image.relative_to(image_dir)
        stem = relative.name[: -len(image_suffix)]
        label_folder = label_dir / relative.parent
        samples.append(
            Sample(
                image,
                label_folder / f"{stem}{train_ids_suffix}",
                label_folder / f"{stem}{raw_suffix}",
            )
        )
    return tuple(samples)


def _no_images_error(folder: Path, suffix: str, kind: str) -> DatasetError:
    indented = "\n".join("    " + line for line in LAYOUTS[kind].splitlines())
    return DatasetError(
        f"no '*{suffix}' images under {folder}\n  expected layout:\n{indented}\n"
        f"  found: {_describe_found(folder)}"
    )


def scan_gta(folder: Path) -> DatasetSplit:
    """List a GTA5 dataset (``images/NNNNN.png`` with ``labels/NNNNN.png``).

    Args:
        folder: the ``gta`` folder.

    Returns:
        The whole folder as one split (the reference trains on all of it).

    Raises:
        DatasetError: a folder is missing or holds no images.
    """
    _require_dir(folder, "gta")
    _require_dir(folder / "images", "gta")
    _require_dir(folder / "labels", "gta")
    samples = _paired_samples(
        folder / "images", folder / "labels", ".png", ".png", TRAIN_IDS_SUFFIX
    )
    if not samples:
        raise _no_images_error(folder / "images", ".png", "gta")
    return DatasetSplit(folder.name, folder, samples, GTA_TABLE, "pil", with_stats=True)


def scan_synthia(folder: Path) -> DatasetSplit:
    """List a Synthia RAND-CITYSCAPES dataset (``RGB/`` with ``GT/LABELS/``).

    Args:
        folder: the ``synthia`` folder.

    Returns:
        The whole folder as one split.

    Raises:
        DatasetError: a folder is missing or holds no images.
    """
    _require_dir(folder, "synthia")
    _require_dir(folder / "RGB", "synthia")
    _require_dir(folder / "GT" / "LABELS", "synthia")
    samples = _paired_samples(
        folder / "RGB", folder / "GT" / "LABELS", ".png", ".png", TRAIN_IDS_SUFFIX
    )
    if not samples:
        raise _no_images_error(folder / "RGB", ".png", "synthia")
    return DatasetSplit(folder.name, folder, samples, SYNTHIA_TABLE, "synthia", with_stats=True)


def scan_cityscapes(folder: Path, split: str) -> DatasetSplit:
    """List one split of Cityscapes: ``leftImg8bit/<split>/<city>/`` and ``gtFine/<split>/<city>/``.

    Args:
        folder: the ``cityscapes`` folder.
        split: ``train`` or ``val``.

    Returns:
        The split; class statistics are kept for ``train`` only, as in the reference.

    Raises:
        DatasetError: a folder is missing or holds no images.
    """
    _require_dir(folder, "cityscapes")
    image_dir = folder / "leftImg8bit" / split
    label_dir = folder / "gtFine" / split
    _require_dir(image_dir, "cityscapes")
    _require_dir(label_dir, "cityscapes")
    samples = _paired_samples(
        image_dir,
        label_dir,
        _CITYSCAPES_IMAGE_SUFFIX,
        _CITYSCAPES_RAW_SUFFIX,
        _CITYSCAPES_TRAIN_IDS_SUFFIX,
    )
    if not samples:
        raise _no_images_error(image_dir, _CITYSCAPES_IMAGE_SUFFIX, "cityscapes")
    return DatasetSplit(
        f"{folder.name}/{split}",
        folder,
        samples,
        CITYSCAPES_TABLE,
        "pil",
        with_stats=split == "train",
    )


def scan_custom(folder: Path, split: str) -> DatasetSplit:
    """List one split of a custom dataset described by ``<folder>/dataset.json``.

    Args:
        folder: the dataset folder.
        split: a split named in its ``dataset.json`` (``train`` always exists).

    Returns:
        The split; class statistics are kept for ``train`` when it is labelled.

    Raises:
        DatasetError: the mapping file is missing or invalid, the split is not defined, a folder is
            missing or holds no images.
    """
    _require_dir(folder, "custom")
    spec = load_custom_spec(folder)
    if split not in spec.splits:
        raise DatasetError(
            f"custom dataset {folder} defines no {split!r} split in its dataset.json "
            f"(it has {sorted(spec.splits)})"
        )
    folders = spec.splits[split]
    image_dir = folder / folders.images
    label_dir = folder / folders.labels if folders.labels is not None else None
    _require_dir(image_dir, "custom")
    if label_dir is not None:
        _require_dir(label_dir, "custom")
    samples = _paired_samples(
        image_dir, label_dir, spec.image_suffix, spec.label_suffix, TRAIN_IDS_SUFFIX
    )
    if not samples:
        raise _no_images_error(image_dir, spec.image_suffix, "custom")
    return DatasetSplit(
        f"{folder.name}/{split}",
        folder,
        samples,
        spec.table,
        "pil",
        with_stats=split == "train" and label_dir is not None,
        ignored_class_names=spec.ignored_class_names,
    )


def scan_domain(kind: str, folder: Path, split: str = "train") -> DatasetSplit:
    """List a dataset of any supported kind.

    Args:
        kind: ``gta``, ``synthia``, ``cityscapes`` or ``custom`` (the synthetic domains use the GTA
            and Cityscapes formats).
        folder: the dataset folder.
        split: ``train`` or ``val``; GTA and Synthia only have ``train`` (the whole folder).

    Returns:
        The split.

    Raises:
        DatasetError: see the kind's reader.
    """
    if kind in ("gta", "synthia"):
        if split != "train":
            raise DatasetError(
                f"{kind} has no {split!r} split: the whole folder is the training set"
            )
        return scan_gta(folder) if kind == "gta" else scan_synthia(folder)
    if kind == "cityscapes":
        return scan_cityscapes(folder, split)
    if kind == "custom":
        return scan_custom(folder, split)
    raise ValueError(f"unknown dataset kind {kind!r}")


def require_train_ids(split: DatasetSplit, data_root: Path) -> None:
    """Check that every label of a split has been converted by ``prepare``.

    Args:
        split: a labelled split.
        data_root: shown in the message's command.

    Raises:
        DatasetError: some ``*_labelTrainIds.png`` files are missing.
    """
    missing = [s.label for s in split.samples if s.label is not None and not s.label.is_file()]
    if missing:
        examples = "\n".join(f"    {path}" for path in missing[:5])
        raise DatasetError(
            f"{split.name}: {len(missing)} of {len(split.samples)} trainId labels are missing, "
            "e.g.\n"
            f"{examples}\n  run: python -m training.prepare {data_root}"
        )
