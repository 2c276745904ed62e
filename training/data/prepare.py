"""Label conversion and class statistics for every dataset under a data root.

For each dataset found (``gta/``, ``synthia/``, ``cityscapes/``, and any folder with a
``dataset.json``), every raw label is converted to ``*_labelTrainIds.png`` and the class statistics
of §1.2 are written into the dataset folder. The step is

- idempotent: a trainId file newer than its raw label is not converted again, and a split whose
  labels and statistics are all current is skipped without reading a file;
- resumable: every output is written to a temporary file and renamed, so an interrupted run leaves
  only complete files, and the next run converts what is left;
- parallel: files are processed by a pool of worker processes, with a progress bar.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .custom import CUSTOM_SPEC_FILE, load_custom_spec
from .datasets import LAYOUTS, DatasetSplit, scan_cityscapes, scan_custom, scan_gta, scan_synthia
from .errors import DatasetError, UnknownLabelWarning
from .io import (
    image_size,
    read_label_pil,
    read_synthia_label,
    read_train_ids,
    remove_stale_temp_files,
    write_label_png_atomic,
)
from .labels import LabelTable, class_pixel_counts, convert_to_train_ids
from .stats import stats_file_names, write_class_stats

_MAX_ERRORS_SHOWN = 20
_SIZE_MISMATCH = "image and label sizes differ"

# What a task does with its sample.
_CONVERT = "convert"  # decode the raw label, write the trainId file (and count if needed)
_COUNT = "count"  # trainId file current: decode it for the statistics
_CHECK = "check"  # trainId file current, no statistics: compare the header sizes only


@dataclass(frozen=True)
class _Task:
    action: str
    image: Path
    label: Path
    raw_label: Path | None
    raw_reader: str
    table: LabelTable
    with_stats: bool


@dataclass(frozen=True)
class _Result:
    counts: dict[int, int] | None = None
    unknown: dict[int, int] | None = None
    error: str | None = None


@dataclass(frozen=True)
class SplitReport:
    """What ``prepare`` did for one split.

    Attributes:
        name: split name (``gta``, ``cityscapes/train``, ...).
        files: number of labelled samples.
        converted: labels converted in this run.
        up_to_date: True when nothing had to be read or written.
    """

    name: str
    files: int
    converted: int
    up_to_date: bool


def _check_sizes(
    image: Path, image_wh: tuple[int, int], label: Path, label_wh: tuple[int, int]
) -> None:
    if image_wh != label_wh:
        raise DatasetError(
            f"{_SIZE_MISMATCH}: {image} is {image_wh[0]}x{image_wh[1]}, "
            f"{label} is {label_wh[0]}x{label_wh[1]}"
        )


def _process(task: _Task) -> _Result:
    """Convert, count or check one sample (runs in a worker process)."""
    try:
        image_wh = image_size(task.image)
        unknown: dict[int, int] = {}
        if task.action == _CONVERT:
            assert task.raw_label is not None  # _CONVERT is only planned when the raw label exists
            if task.raw_reader == "synthia":
                ids = read_synthia_label(task.raw_label)
            else:
                ids = read_label_pil(task.raw_label)
            _check_sizes(task.image, image_wh, task.raw_label, (ids.shape[1], ids.shape[0]))
            train_ids, unknown = convert_to_train_ids(ids, task.table)
            write_label_png_atomic(task.label, train_ids)
        elif task.action == _COUNT:
            train_ids = read_train_ids(task.label)
            _check_sizes(task.image, image_wh, task.label, (train_ids.shape[1], train_ids.shape[0]))
        else:
            _check_sizes(task.image, image_wh, task.label, image_size(task.label))
            return _Result()
        counts = class_pixel_counts(train_ids) if task.with_stats else None
        return _Result(counts=counts, unknown=unknown)
    except DatasetError as error:
        return _Result(error=str(error))


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.is_file() else None


def _plan(split: DatasetSplit) -> tuple[list[_Task], list[str], bool]:
    """Decide what to do with each sample of a labelled split.

    Returns:
        The tasks, error messages for samples without any label file, and whether the split is
        entirely current (nothing to convert and statistics listing exactly its files).
    """
    tasks, missing = [], []
    all_current = True
    for sample in split.samples:
        assert sample.label is not None and sample.raw_label is not None  # labelled split
        label_time, raw_time = _mtime(sample.label), _mtime(sample.raw_label)
        if label_time is None and raw_time is None:
            missing.append(f"label file not found for {sample.image}: expected {sample.raw_label}")
            continue
        if label_time is None or (raw_time is not None and raw_time > label_time):
            action = _CONVERT
            all_current = False
        else:
            action = _COUNT if split.with_stats else _CHECK
        tasks.append(
            _Task(
                action,
                sample.image,
                sample.label,
                sample.raw_label,
                split.raw_reader,
                split.table,
                split.with_stats,
            )
        )
    if missing:
        all_current = False
    if split.with_stats and all_current:
        listed = stats_file_names(split.root)
        all_current = listed == {sample.label.name for sample in split.samples if sample.label}
    return tasks, missing, all_current


def find_datasets(data_root: Path) -> list[DatasetSplit]:
    """Find every dataset split under a data root.

    Args:
        data_root: folder holding ``gta/``, ``synthia/``, ``cityscapes/`` and/or custom datasets
            (sub-folders with a ``dataset.json``).

    Returns:
        The labelled splits, in the order gta, synthia, cityscapes train/val, custom datasets.

    Raises:
        DatasetError: the data root is missing or holds no dataset, or a dataset's layout is broken.
    """
    if not data_root.is_dir():
        raise DatasetError(f"data root {data_root} does not exist")
    splits: list[DatasetSplit] = []
    if (data_root / "gta").exists():
        splits.append(scan_gta(data_root / "gta"))
    if (data_root / "synthia").exists():
        splits.append(scan_synthia(data_root / "synthia"))
    cityscapes = data_root / "cityscapes"
    if cityscapes.exists():
        # Both splits normally exist; a missing one is only an error when neither does.
        present = [s for s in ("train", "val") if (cityscapes / "leftImg8bit" / s).is_dir()]
        splits.extend(scan_cityscapes(cityscapes, split) for split in present or ["train"])
    for folder in sorted(p for p in data_root.iterdir() if (p / CUSTOM_SPEC_FILE).is_file()):
        spec = load_custom_spec(folder)
        for split_name, split in spec.splits.items():
            if split.labels is not None:
                splits.append(scan_custom(folder, split_name))
    if not splits:
        layouts = "\n".join(
            "    " + line for kind in LAYOUTS for line in LAYOUTS[kind].splitlines()
        )
        found = ", ".join(sorted(p.name for p in data_root.iterdir())) or "(empty)"
        raise DatasetError(
            f"no dataset found under {data_root}\n  expected one or more of:\n{layouts}\n"
            f"  found: {found}"
        )
    return splits


def _run(tasks: list[_Task], nproc: int, progress: bool, description: str) -> Iterator[_Result]:
    bar = tqdm(total=len(tasks), desc=description, unit="file", disable=not progress, leave=False)
    with bar:
        if nproc <= 1:
            for result in map(_process, tasks):
                bar.update()
                yield result
        else:
            chunksize = max(1, min(64, len(tasks) // (nproc * 8)))
            with multiprocessing.get_context().Pool(nproc) as pool:
                for result in pool.imap(_process, tasks, chunksize=chunksize):
                    bar.update()
                    yield result


def prepare_split(
    split: DatasetSplit,
    data_root: Path,
    nproc: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SplitReport:
    """Convert the labels of one split and write its class statistics.

    Args:
        split: a labelled split.
        data_root: the data root; statistics name files relative to it.
        nproc: worker processes (1 = in this process).
        progress: show a progress bar.
        log: receives one line per notable event.

    Returns:
        What was done.

    Raises:
        DatasetError: unreadable, truncated, missing or size-mismatched files (all of them listed,
            after every other file has been processed).
    """
    tasks, errors, all_current = _plan(split)
    if all_current:
        return SplitReport(split.name, len(split.samples), 0, up_to_date=True)
    remove_stale_temp_files(split.root)
    results = list(_run(tasks, nproc, progress, split.name))
    errors += [result.error for result in results if result.error is not None]
    if errors:
        shown = "\n".join(f"  {message}" for message in errors[:_MAX_ERRORS_SHOWN])
        more = (
            f"\n  ... and {len(errors) - _MAX_ERRORS_SHOWN} more"
            if len(errors) > _MAX_ERRORS_SHOWN
            else ""
        )
        hint = ""
        if any(_SIZE_MISMATCH in message for message in errors):
            hint = (
                "\n  move mismatched pairs out of the dataset or fix them "
                "(the GTA5 release has two: 15188.png and 17705.png)"
            )
        raise DatasetError(f"{split.name}: {len(errors)} bad files\n{shown}{more}{hint}")
    unknown_pixels: dict[int, int] = {}
    unknown_files = 0
    for result in results:
        if result.unknown:
            unknown_files += 1
            for value, count in result.unknown.items():
                unknown_pixels[value] = unknown_pixels.get(value, 0) + count
    if unknown_pixels:
        warnings.warn(
            UnknownLabelWarning(
                f"{split.name}: {sum(unknown_pixels.values())} pixels in {unknown_files} "
                "label files "
                f"have ids outside the {split.table.name} label table (values "
                f"{sorted(unknown_pixels)}); they were mapped to 255 (ignore)"
            ),
            stacklevel=2,
        )
    if split.ignored_class_names:
        log(
            f"{split.name}: classes mapped to 255 (not Cityscapes classes): "
            f"{', '.join(split.ignored_class_names)}"
        )
    if split.with_stats:
        entries = [
            (task.label.relative_to(data_root).as_posix(), result.counts or {})
            for task, result in zip(tasks, results, strict=True)
        ]
        write_class_stats(split.root, entries)
    converted = sum(task.action == _CONVERT for task in tasks)
    return SplitReport(split.name, len(split.samples), converted, up_to_date=False)


def prepare_data_root(
    data_root: Path, nproc: int = 1, progress: bool = True, log: Callable[[str], None] = print
) -> list[SplitReport]:
    """Run :func:`prepare_split` on every dataset under a data root and log a summary.

    Args:
        data_root: the data root.
        nproc: worker processes.
        progress: show progress bars.
        log: receives the summary lines.

    Returns:
        One report per split.

    Raises:
        DatasetError: see :func:`find_datasets` and :func:`prepare_split`.
    """
    data_root = Path(data_root)
    reports = []
    for split in find_datasets(data_root):
        report = prepare_split(split, data_root, nproc, progress, log)
        if report.up_to_date:
            stats = " and class statistics current" if split.with_stats else ""
            log(f"{report.name}: {report.files} labels, all already converted{stats}")
        else:
            stats = " and class statistics written" if split.with_stats else ""
            log(f"{report.name}: {report.files} labels, {report.converted} converted{stats}")
        reports.append(report)
    if all(report.up_to_date for report in reports):
        log(f"nothing to do: every dataset under {data_root} is already prepared")
    return reports
