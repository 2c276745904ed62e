"""Label conversion, class statistics and the prepare step on files in each official format."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.data.errors import UnknownLabelWarning
from training.data.io import read_train_ids
from training.data.prepare import prepare_data_root
from training.prepare import main as prepare_main

# The reference maps, written out again here so that the tests do not read them from the code.
GTA_MAP = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
           25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
SYNTHIA_MAP = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11,
               17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}  # fmt: skip

HEIGHT, WIDTH = 6, 8


def expected_train_ids(ids: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Pixel-by-pixel reference conversion (deliberately a plain Python loop)."""
    out = np.empty(ids.shape, dtype=np.uint8)
    for y in range(ids.shape[0]):
        for x in range(ids.shape[1]):
            out[y, x] = mapping.get(int(ids[y, x]), 255)
    return out


def write_rgb(path: Path, height: int = HEIGHT, width: int = WIDTH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 100, dtype=np.uint8))


def write_gta(root: Path, name: str, ids: np.ndarray) -> None:
    write_rgb(root / "gta" / "images" / f"{name}.png", *ids.shape)
    label = Image.fromarray(ids.astype(np.uint8), mode="P")
    label.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    (root / "gta" / "labels").mkdir(parents=True, exist_ok=True)
    label.save(root / "gta" / "labels" / f"{name}.png")


def write_synthia(root: Path, name: str, ids: np.ndarray, instance: np.ndarray) -> None:
    write_rgb(root / "synthia" / "RGB" / f"{name}.png", *ids.shape)
    # A real 16-bit 3-channel PNG: the file's first (R) channel holds the class id. OpenCV writes
    # BGR arrays, so R is the last channel of the array given to imwrite.
    bgr = np.stack([instance, np.full_like(ids, 1000), ids], axis=-1).astype(np.uint16)
    path = root / "synthia" / "GT" / "LABELS" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), bgr)


def write_cityscapes(root: Path, split: str, city: str, index: int, ids: np.ndarray) -> Path:
    stem = f"{city}_{index:06d}_000019"
    write_rgb(
        root / "cityscapes" / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", *ids.shape
    )
    folder = root / "cityscapes" / "gtFine" / split / city
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(folder / f"{stem}_gtFine_labelIds.png")
    return folder / f"{stem}_gtFine_labelTrainIds.png"


def quiet(_: str) -> None:
    """Discard log lines."""


def test_gta_palette_labels_convert_pixel_by_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 34, (HEIGHT, WIDTH))
    ids[0, :] = [7, 8, 11, 12, 13, 17, 19, 20]
    write_gta(tmp_path, "00001", ids)
    prepare_data_root(tmp_path, progress=False, log=quiet)
    converted = np.asarray(Image.open(tmp_path / "gta" / "labels" / "00001_labelTrainIds.png"))
    assert Image.open(tmp_path / "gta" / "labels" / "00001_labelTrainIds.png").mode == "L"
    np.testing.assert_array_equal(converted, expected_train_ids(ids, GTA_MAP))


def test_synthia_16bit_labels_use_the_first_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 23, (HEIGHT, WIDTH))
    ids[0, :] = [3, 4, 2, 21, 5, 7, 15, 9]
    instance = rng.integers(300, 60000, (HEIGHT, WIDTH))
    write_synthia(tmp_path, "0000001", ids, instance)
    prepare_data_root(tmp_path, progress=False, log=quiet)
    converted = read_train_ids(tmp_path / "synthia" / "GT" / "LABELS" / "0000001_labelTrainIds.png")
    np.testing.assert_array_equal(converted, expected_train_ids(ids, SYNTHIA_MAP))


def test_cityscapes_label_ids_convert_with_the_official_table(tmp_path: Path) -> None:
    ids = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) % 34  # every official id 0..33
    train_path = write_cityscapes(tmp_path, "train", "aachen", 0, ids)
    val_path = write_cityscapes(tmp_path, "val", "lindau", 0, ids[::-1])
    prepare_data_root(tmp_path, progress=False, log=quiet)
    # The official labels.py trainIds of ids 7..33 (the others are 255).
    official = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    np.testing.assert_array_equal(read_train_ids(train_path), expected_train_ids(ids, official))
    np.testing.assert_array_equal(read_train_ids(val_path), expected_train_ids(ids[::-1], official))
    stats = json.loads((tmp_path / "cityscapes" / "sample_class_stats.json").read_text())
    # The reference counts Cityscapes train only.
    assert [entry["file"] for entry in stats] == [
        "cityscapes/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"
    ]


def test_custom_dataset_with_id_map_and_with_class_list(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], dtype=np.uint8)
    for name, spec in (
        ("by_map", {"id_to_train_id": {"0": 255, "1": 0, "2": 13, "3": 11}}),
        ("by_names", {"classes": ["void", "Road", "car", "Traffic_Light"]}),
    ):
        folder = tmp_path / name
        write_rgb(folder / "images" / "a" / "x.jpg", *ids.shape)
        (folder / "labels" / "a").mkdir(parents=True)
        Image.fromarray(ids, mode="L").save(folder / "labels" / "a" / "x.png")
        (folder / "dataset.json").write_text(json.dumps({"image_suffix": ".jpg", **spec}))
    logs: list[str] = []
    prepare_data_root(tmp_path, progress=False, log=logs.append)
    np.testing.assert_array_equal(
        read_train_ids(tmp_path / "by_map" / "labels" / "a" / "x_labelTrainIds.png"),
        expected_train_ids(ids, {1: 0, 2: 13, 3: 11}),
    )
    np.testing.assert_array_equal(
        read_train_ids(tmp_path / "by_names" / "labels" / "a" / "x_labelTrainIds.png"),
        expected_train_ids(ids, {1: 0, 2: 13, 3: 6}),
    )
    assert any(
        "void" in line for line in logs
    )  # names that are not Cityscapes classes are reported


def test_class_statistics_match_independent_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    all_ids = {}
    for name in ("00002", "00000", "00001"):
        ids = rng.choice([7, 8, 11, 26, 0, 33], size=(HEIGHT, WIDTH))
        all_ids[name] = ids
        write_gta(tmp_path, name, ids)
    prepare_data_root(tmp_path, progress=False, log=quiet)
    folder = tmp_path / "gta"

    # Independent counts: per file, per trainId, pixels equal to the class, listed when > 0.
    expected_list = []
    for name in sorted(all_ids):
        train_ids = expected_train_ids(all_ids[name], GTA_MAP)
        entry: dict[str, int | str] = {}
        for class_id in range(19):
            count = int(sum(int(v == class_id) for v in train_ids.ravel()))
            if count:
                entry[str(class_id)] = count
        entry["file"] = f"gta/labels/{name}_labelTrainIds.png"
        expected_list.append(entry)
    expected_dict = {e["file"]: {k: v for k, v in e.items() if k != "file"} for e in expected_list}
    expected_with_class: dict[str, list] = {}
    for file, counts in expected_dict.items():
        for class_key, count in counts.items():
            expected_with_class.setdefault(class_key, []).append([file, count])

    stats_text = (folder / "sample_class_stats.json").read_text()
    assert stats_text == json.dumps(expected_list, indent=2)  # same layout, key order and indent
    assert list(json.loads(stats_text)[0])[-1] == "file"
    assert json.loads((folder / "sample_class_stats_dict.json").read_text()) == expected_dict
    with_class = json.loads((folder / "samples_with_class.json").read_text())
    assert with_class == expected_with_class
    assert list(with_class) == list(expected_with_class)  # classes in order of first appearance


def test_second_run_converts_nothing_and_says_so(tmp_path: Path) -> None:
    write_gta(tmp_path, "00000", np.full((HEIGHT, WIDTH), 7))
    write_cityscapes(tmp_path, "train", "aachen", 0, np.full((HEIGHT, WIDTH), 26))
    write_cityscapes(tmp_path, "val", "lindau", 0, np.full((HEIGHT, WIDTH), 26))
    first = prepare_data_root(tmp_path, progress=False, log=quiet)
    assert [r.converted for r in first] == [1, 1, 1]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    logs: list[str] = []
    second = prepare_data_root(tmp_path, progress=False, log=logs.append)
    assert all(r.up_to_date and r.converted == 0 for r in second)
    assert "nothing to do" in logs[-1]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    for index in range(4):
        write_gta(tmp_path, f"{index:05d}", np.full((HEIGHT, WIDTH), 7 + index))
    prepare_data_root(tmp_path, progress=False, log=quiet)
    labels = tmp_path / "gta" / "labels"
    # An interruption leaves some outputs missing, a temporary file and possibly no statistics.
    (labels / "00002_labelTrainIds.png").unlink()
    (labels / ".00003_labelTrainIds.png.4194399.cluda-tmp").write_bytes(b"partial")
    (tmp_path / "gta" / "samples_with_class.json").unlink()
    # A raw label edited after its conversion is converted again.
    raw = labels / "00001.png"
    later = time.time() + 5
    os.utime(raw, (later, later))
    reports = prepare_data_root(tmp_path, progress=False, log=quiet)
    assert reports[0].converted == 2
    assert not list(labels.glob(".*cluda-tmp"))
    assert (tmp_path / "gta" / "samples_with_class.json").is_file()
    np.testing.assert_array_equal(read_train_ids(labels / "00002_labelTrainIds.png"), 255)  # id 9
    np.testing.assert_array_equal(read_train_ids(labels / "00001_labelTrainIds.png"), 1)  # id 8


def test_cli_with_worker_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(6):
        write_gta(tmp_path, f"{index:05d}", np.full((HEIGHT, WIDTH), 7))
    assert prepare_main([str(tmp_path), "--nproc", "2", "--no-progress"]) == 0
    assert "6 converted" in capsys.readouterr().out
    assert prepare_main([str(tmp_path), "--nproc", "2", "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert prepare_main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unknown_ids_become_ignore_and_are_counted(tmp_path: Path) -> None:
    ids = np.full((HEIGHT, WIDTH), 7)
    ids[0, :3] = 40  # not a Cityscapes id
    ids[1, 0] = 99
    write_gta(tmp_path, "00000", ids)
    with pytest.warns(UnknownLabelWarning, match=r"4 pixels in 1 label files .*\[40, 99\]"):
        prepare_data_root(tmp_path, progress=False, log=quiet)
    converted = read_train_ids(tmp_path / "gta" / "labels" / "00000_labelTrainIds.png")
    assert (converted == 255).sum() == 4 and (converted == 0).sum() == HEIGHT * WIDTH - 4
