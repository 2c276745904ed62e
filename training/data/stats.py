"""Class statistics files in the layout the DAFormer/HRDA conversion scripts write.

Three JSON files sit in the dataset folder (release_code.md §1.2):

- ``sample_class_stats.json``: ``[{"<trainId>": count, ..., "file": "<label path>"}, ...]``, one
  entry per label file, classes with a count > 0 only, in ascending trainId order, ``file`` last.
- ``sample_class_stats_dict.json``: ``{"<label path>": {"<trainId>": count}}``.
- ``samples_with_class.json``: ``{"<trainId>": [["<label path>", count], ...]}``, classes in the
  order of their first appearance.

Files written by the reference tools (paths such as ``data/gta/labels/...``) are read as well: only
the base name of a path identifies a file, as in the reference's rare class sampling.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .errors import DatasetError
from .io import write_bytes_atomic

SAMPLE_CLASS_STATS = "sample_class_stats.json"
SAMPLE_CLASS_STATS_DICT = "sample_class_stats_dict.json"
SAMPLES_WITH_CLASS = "samples_with_class.json"
STATS_FILES: tuple[str, ...] = (SAMPLE_CLASS_STATS, SAMPLE_CLASS_STATS_DICT, SAMPLES_WITH_CLASS)


def build_class_stats(
    entries: Sequence[tuple[str, dict[int, int]]],
) -> tuple[list[dict[str, int | str]], dict[str, dict[str, int]], dict[str, list[list[str | int]]]]:
    """Build the content of the three statistics files.

    Args:
        entries: ``(file, {trainId: count})`` per label file, in file order; counts > 0 only.

    Returns:
        The objects to dump as ``sample_class_stats.json``, ``sample_class_stats_dict.json`` and
        ``samples_with_class.json``.
    """
    sample_class_stats: list[dict[str, int | str]] = []
    sample_class_stats_dict: dict[str, dict[str, int]] = {}
    samples_with_class: dict[str, list[list[str | int]]] = {}
    for file, counts in entries:
        per_class = {str(class_id): count for class_id, count in counts.items()}
        sample_class_stats.append({**per_class, "file": file})
        sample_class_stats_dict[file] = per_class
        for class_key, count in per_class.items():
            samples_with_class.setdefault(class_key, []).append([file, count])
    return sample_class_stats, sample_class_stats_dict, samples_with_class


def write_class_stats(folder: Path, entries: Sequence[tuple[str, dict[int, int]]]) -> None:
    """Write the three statistics files atomically into ``folder`` (2-space indented JSON).

    Args:
        folder: the dataset folder.
        entries: ``(file, {trainId: count})`` per label file, see :func:`build_class_stats`.
    """
    for name, content in zip(STATS_FILES, build_class_stats(entries), strict=True):
        write_bytes_atomic(folder / name, json.dumps(content, indent=2).encode())


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise DatasetError(
            f"missing {path}: run `python -m training.prepare` on the data root first"
        ) from error
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot parse {path}: {error}") from error


def load_sample_class_stats(folder: Path) -> list[dict[str, int | str]]:
    """Read ``sample_class_stats.json`` of a dataset folder.

    Args:
        folder: the dataset folder.

    Returns:
        The list of per-file entries, as stored.

    Raises:
        DatasetError: the file is missing or malformed.
    """
    path = folder / SAMPLE_CLASS_STATS
    content = _load_json(path)
    if not isinstance(content, list) or not all(
        isinstance(entry, dict) and "file" in entry for entry in content
    ):
        raise DatasetError(f"{path}: expected a list of objects with a 'file' key")
    return content


def load_samples_with_class(folder: Path) -> dict[int, list[tuple[str, int]]]:
    """Read ``samples_with_class.json`` of a dataset folder.

    Args:
        folder: the dataset folder.

    Returns:
        ``{trainId: [(file, count), ...]}``.

    Raises:
        DatasetError: the file is missing or malformed.
    """
    path = folder / SAMPLES_WITH_CLASS
    content = _load_json(path)
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected an object of trainId -> [[file, count], ...]")
    try:
        return {
            int(class_key): [(str(file), int(count)) for file, count in files]
            for class_key, files in content.items()
        }
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{path}: malformed entry: {error}") from error


def stats_file_names(folder: Path) -> set[str] | None:
    """Base names of the label files listed in a folder's ``sample_class_stats.json``.

    Args:
        folder: the dataset folder.

    Returns:
        The set of base names, or None when any of the three files is missing or unreadable.
    """
    if not all((folder / name).is_file() for name in STATS_FILES):
        return None
    try:
        content = json.loads((folder / SAMPLE_CLASS_STATS).read_text())
        return {str(entry["file"]).rsplit("/", 1)[-1] for entry in content}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
