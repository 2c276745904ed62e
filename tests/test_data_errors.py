"""Bad data: missing folders, unreadable or truncated files, size mismatches, bad mapping files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from training.data.datasets import Sample, scan_cityscapes, scan_custom, scan_gta, scan_synthia
from training.data.errors import DatasetError
from training.data.io import read_image, read_label_pil, read_train_ids
from training.data.pipeline import load_sample
from training.data.prepare import prepare_data_root


def quiet(_: str) -> None:
    """Discard log lines."""


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_missing_dataset_folder_shows_layout_and_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "GTA5").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DatasetError) as error:
        scan_gta(tmp_path / "gta")
    message = str(error.value)
    assert f"missing folder {tmp_path / 'gta'}" in message
    assert "images/00001.png" in message and "labels/00001.png" in message  # expected layout
    assert "GTA5/" in message and "notes.txt" in message  # what was found


@pytest.mark.parametrize(
    ("scan", "present", "missing"),
    [
        (lambda root: scan_gta(root / "gta"), ["gta/images"], "gta/labels"),
        (lambda root: scan_synthia(root / "synthia"), ["synthia/RGB", "synthia/GT"],
         "synthia/GT/LABELS"),
        (lambda root: scan_cityscapes(root / "cityscapes", "val"), ["cityscapes/leftImg8bit/val"],
         "cityscapes/gtFine/val"),
    ],
)  # fmt: skip
def test_missing_sub_folder(tmp_path: Path, scan, present: list[str], missing: str) -> None:
    for folder in present:
        (tmp_path / folder).mkdir(parents=True)
    with pytest.raises(DatasetError, match="expected layout") as error:
        scan(tmp_path)
    assert f"missing folder {tmp_path / missing}" in str(error.value)
    assert "found:" in str(error.value)


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "gta" / "images").mkdir(parents=True)
    (tmp_path / "gta" / "labels").mkdir()
    with pytest.raises(DatasetError, match=r"no '\*\.png' images under"):
        scan_gta(tmp_path / "gta")


def test_unreadable_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=str(garbage)):
        read_image(garbage)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    png = truncate(write_png(tmp_path / "cut.png", noise))
    with pytest.raises(DatasetError, match=str(png)):
        read_image(png)
    jpeg = tmp_path / "cut.jpg"
    cv2.imwrite(str(jpeg), noise)
    truncate(jpeg)
    with pytest.raises(DatasetError, match=f"truncated: {jpeg}"):
        read_image(jpeg)
    with pytest.raises(DatasetError, match=str(tmp_path / "absent.png")):
        read_image(tmp_path / "absent.png")


def test_unreadable_and_truncated_labels_name_the_file(tmp_path: Path) -> None:
    label = np.random.default_rng(0).integers(0, 19, (64, 64), np.uint8)
    cut = truncate(write_png(tmp_path / "a_labelTrainIds.png", label))
    with pytest.raises(DatasetError, match=str(cut)):
        read_train_ids(cut)
    palette = tmp_path / "palette.png"
    Image.fromarray(label, mode="L").save(palette)
    truncate(palette)
    with pytest.raises(DatasetError, match=str(palette)):
        read_label_pil(palette)
    rgb = write_png(tmp_path / "colour.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="Colour-coded labels"):
        read_label_pil(rgb)
    with pytest.raises(DatasetError, match="single-channel 8-bit"):
        read_train_ids(rgb)


def test_prepare_lists_every_bad_file(tmp_path: Path) -> None:
    images, labels = tmp_path / "gta" / "images", tmp_path / "gta" / "labels"
    labels.mkdir(parents=True)
    for name in ("00000", "00001", "00002", "00003"):
        write_png(images / f"{name}.png", np.zeros((6, 8, 3), np.uint8))
        Image.fromarray(np.full((6, 8), 7, np.uint8), mode="L").save(labels / f"{name}.png")
    truncate(labels / "00001.png")
    Image.fromarray(np.full((5, 8), 7, np.uint8), mode="L").save(labels / "00002.png")  # wrong size
    (labels / "00003.png").unlink()  # no label at all
    with pytest.raises(DatasetError) as error:
        prepare_data_root(tmp_path, progress=False, log=quiet)
    message = str(error.value)
    assert "3 bad files" in message
    assert str(labels / "00001.png") in message
    assert f"{images / '00002.png'} is 8x6, {labels / '00002.png'} is 8x5" in message
    assert f"label file not found for {images / '00003.png'}" in message
    assert "15188.png and 17705.png" in message  # the known GTA5 pairs
    # The good file was converted all the same, so a rerun after fixing resumes.
    assert (labels / "00000_labelTrainIds.png").is_file()


def test_loader_size_mismatch_names_both_files(tmp_path: Path) -> None:
    image = write_png(tmp_path / "x.png", np.zeros((6, 8, 3), np.uint8))
    label = write_png(tmp_path / "x_labelTrainIds.png", np.zeros((6, 7), np.uint8))
    with pytest.raises(DatasetError, match=f"{image} is 8x6, {label} is 7x6"):
        load_sample(Sample(image, label, None))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "exactly one of 'id_to_train_id'"),
        ({"id_to_train_id": {"1": 0}, "classes": ["road"]}, "exactly one of"),
        ({"id_to_train_id": {"x": 0}}, "is not an integer"),
        ({"id_to_train_id": {"1": 19}}, "must be an integer in 0..18 or 255"),
        ({"classes": "road"}, "non-empty list of class names"),
        ({"classes": ["road"], "colours": {}}, "unknown keys \\['colours'\\]"),
        ({"classes": ["road"], "label_suffix": "_labelTrainIds.png"}, "reserved"),
        ({"classes": ["road"], "splits": {"val": {"images": "v"}}}, "at least a 'train' split"),
    ],
)
def test_custom_spec_errors(tmp_path: Path, spec: dict, message: str) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DatasetError, match=message):
        scan_custom(tmp_path / "mine", "train")


def test_custom_without_spec_or_split(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetError, match=r"has no dataset\.json"):
        scan_custom(tmp_path / "mine", "train")
    (tmp_path / "mine" / "dataset.json").write_text(json.dumps({"classes": ["road"]}))
    with pytest.raises(DatasetError, match="defines no 'val' split"):
        scan_custom(tmp_path / "mine", "val")
    (tmp_path / "mine" / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot parse"):
        scan_custom(tmp_path / "mine", "train")
