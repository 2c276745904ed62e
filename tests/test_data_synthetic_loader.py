"""The synthetic two-domain dataset, the UDA loader and the validation set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.classes import IMAGENET_MEAN
from training.data import (
    HRDA_GTA,
    TOY,
    DataConfig,
    DatasetError,
    build_uda_loader,
    build_val_dataset,
    ensure_synthetic_dataset,
)
from training.data.datasets import scan_cityscapes, scan_gta
from training.data.io import read_image, read_label_pil
from training.data.loader import build_uda_train_set
from training.data.prepare import prepare_data_root
from training.data.synthetic import generate_synthetic_dataset

SMALL = {"num_source": 19, "num_target_train": 8, "num_target_val": 4}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root whose ``synthetic/`` holds a small synthetic dataset (one image per class)."""
    root = tmp_path_factory.mktemp("data")
    ensure_synthetic_dataset(root / "synthetic", seed=0, nproc=1, **SMALL)
    return root


def toy(**changes: object) -> DataConfig:
    return dataclasses.replace(TOY, **{"num_workers": 0, **changes})


def test_layout_is_read_by_the_real_readers(data_root: Path) -> None:
    root = data_root / "synthetic"
    source = scan_gta(root / "gta")
    assert len(source.samples) == 19 and source.samples[0].image.name == "00000.png"
    train, val = (
        scan_cityscapes(root / "cityscapes", "train"),
        scan_cityscapes(root / "cityscapes", "val"),
    )
    assert len(train.samples) == 8 and len(val.samples) == 4
    assert train.samples[0].image.name == "aachen_000000_000019_leftImg8bit.png"
    assert val.samples[0].label.name == "frankfurt_000000_000019_gtFine_labelTrainIds.png"
    assert read_image(source.samples[0].image).shape == (264, 480, 3)
    assert read_image(train.samples[0].image).shape == (256, 512, 3)
    # Source labels are palette PNGs of Cityscapes ids, converted by prepare like real GTA5 data.
    raw = read_label_pil(source.samples[0].raw_label)
    assert raw.max() <= 33 and {7, 8, 11, 23} <= set(np.unique(raw).tolist())
    for folder in (root / "gta", root / "cityscapes"):
        assert (folder / "sample_class_stats.json").is_file()
    stats = json.loads((root / "gta" / "samples_with_class.json").read_text())
    assert sorted(int(k) for k in stats) == list(range(19))  # every class occurs in the source


def test_generation_is_deterministic(tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_synthetic_dataset(tmp_path / name, seed, 2, 1, 0, (96, 53), (96, 48))

    def arrays(name: str) -> list[np.ndarray]:
        files = sorted((tmp_path / name).rglob("*.png"))
        return [
            read_image(f)
            if f.parent.name == "images" or f.name.endswith("_leftImg8bit.png")
            else read_label_pil(f)
            for f in files
        ]

    same, other = arrays("a"), arrays("c")
    assert all(np.array_equal(x, y) for x, y in zip(same, arrays("b"), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(same, other, strict=True))


def test_domain_shift_is_visible(data_root: Path) -> None:
    root = data_root / "synthetic"
    source = scan_gta(root / "gta")
    target = scan_cityscapes(root / "cityscapes", "train")

    def mean_color(samples, class_id: int | None = None) -> np.ndarray:
        pixels = []
        for sample in samples:
            image = read_image(sample.image).astype(np.float64)
            label = np.asarray(read_label_pil(sample.label))
            pixels.append(image.reshape(-1, 3) if class_id is None else image[label == class_id])
        return np.concatenate(pixels).mean(axis=0)

    assert np.abs(mean_color(source.samples) - mean_color(target.samples)).max() > 20
    for class_id in (0, 10, 13):  # road, sky, car
        assert (
            np.abs(
                mean_color(source.samples, class_id) - mean_color(target.samples, class_id)
            ).max()
            > 20
        )


def test_existing_dataset_with_other_parameters_is_an_error(data_root: Path) -> None:
    with pytest.raises(DatasetError, match="seed 0 \\(wanted 5\\)"):
        ensure_synthetic_dataset(data_root / "synthetic", seed=5)
    ensure_synthetic_dataset(
        data_root / "synthetic", seed=0
    )  # unspecified sizes accept the existing one
    (data_root / "other").mkdir()
    (data_root / "other" / "x").write_text("")
    with pytest.raises(DatasetError, match="holds no synthetic dataset"):
        ensure_synthetic_dataset(data_root / "other")


def test_loader_yields_the_documented_batch(data_root: Path) -> None:
    batch = next(iter(build_uda_loader(toy(), data_root, seed=0)))
    b, (h, w) = TOY.batch_size, TOY.crop_size
    expected = {
        "src_img": (torch.float32, (b, 3, h, w)),
        "src_label": (torch.int64, (b, h, w)),
        "tgt_img": (torch.float32, (b, 3, h, w)),
        "tgt_label": (torch.int64, (b, h, w)),
        "tgt_valid_mask": (torch.float32, (b, h, w)),
        "src_index": (torch.int64, (b,)),
        "tgt_index": (torch.int64, (b,)),
    }
    assert {k: (v.dtype, tuple(v.shape)) for k, v in batch.items()} == expected
    for key in ("src_img", "tgt_img"):
        assert (
            batch[key].min() >= 0 and batch[key].max() <= 255 and batch[key].max() > 1
        )  # not normalised
    labels = torch.cat([batch["src_label"].unique(), batch["tgt_label"].unique()])
    assert ((labels < 19) | (labels == 255)).all()
    assert set(batch["tgt_valid_mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["tgt_valid_mask"].mean() < 1  # toy margins (8, 60, 8, 8) cut into every crop


def take(iterator, count: int) -> list[dict[str, torch.Tensor]]:
    return [next(iterator) for _ in range(count)]


def test_workers_yield_distinct_crops_and_do_not_change_the_stream(data_root: Path) -> None:
    with_workers = take(build_uda_loader(toy(num_workers=2), data_root, seed=0), 4)
    in_process = take(build_uda_loader(toy(), data_root, seed=0), 4)
    for a, b in zip(with_workers, in_process, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # Batches 0 and 2 come from worker 0, 1 and 3 from worker 1: all crops differ.
    crops = [
        img for batch in with_workers for img in torch.cat([batch["src_img"], batch["tgt_img"]])
    ]
    for i in range(len(crops)):
        for j in range(i + 1, len(crops)):
            assert not torch.equal(crops[i], crops[j])


def test_seed_rank_and_resume(data_root: Path) -> None:
    first = take(build_uda_loader(toy(), data_root, seed=0), 3)
    other_seed = next(build_uda_loader(toy(), data_root, seed=1))
    other_rank = next(build_uda_loader(toy(), data_root, seed=0, rank=1, world_size=2))
    resumed = next(build_uda_loader(toy(), data_root, seed=0, start_batch=2))
    assert not torch.equal(first[0]["src_img"], other_seed["src_img"])
    assert not torch.equal(first[0]["src_img"], other_rank["src_img"])
    assert not torch.equal(first[0]["tgt_img"], other_rank["tgt_img"])
    for key in resumed:
        assert torch.equal(resumed[key], first[2][key])


def test_rare_class_sampling_reaches_rare_classes(data_root: Path) -> None:
    train_set = build_uda_train_set(toy(), data_root, seed=0)
    sampler = train_set.rare_class_sampler
    assert sampler is not None and len(sampler.classes) == 19
    # Rare classes dominate the class draws; each drawn crop holds the class when it can.
    rare = set(sampler.classes[:6])
    drawn = [sampler.draw(np.random.default_rng(k))[0] for k in range(300)]
    assert sum(c in rare for c in drawn) > 0.6 * len(drawn)


def test_without_rcs_epochs_cover_every_source_image(data_root: Path) -> None:
    cfg = toy(rcs=dataclasses.replace(TOY.rcs, enabled=False), batch_size=1)
    train_set = build_uda_train_set(cfg, data_root, seed=0)
    first_epoch = [train_set[k]["src_index"].item() for k in range(19)]
    assert sorted(first_epoch) == list(range(19))
    rank_0 = build_uda_train_set(cfg, data_root, seed=0, rank=0, world_size=2)
    rank_1 = build_uda_train_set(cfg, data_root, seed=0, rank=1, world_size=2)
    shared = [rank_0[k]["tgt_index"].item() for k in range(4)] + [
        rank_1[k]["tgt_index"].item() for k in range(4)
    ]
    assert sorted(shared) == list(range(8))  # the ranks split one target epoch between them


def test_val_dataset(data_root: Path) -> None:
    val = build_val_dataset(toy(), data_root)
    assert len(val) == 4
    item = val[0]
    assert item["img"].dtype == torch.float32 and item["img"].shape == (3, 256, 512)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (256, 512)
    assert item["name"] == "frankfurt_000000_000019_leftImg8bit.png"
    half = build_val_dataset(toy(val_scale=(256, 128)), data_root)[0]
    assert half["img"].shape == (3, 128, 256) and half["label"].shape == (256, 512)


def test_real_presets_report_missing_data(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected layout"):
        build_uda_loader(HRDA_GTA, tmp_path, seed=0)


def test_custom_target_end_to_end(data_root: Path) -> None:
    """The steps of docs/custom_data.md: layout, dataset.json, prepare, loader, validation."""
    folder = data_root / "dashcam"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(3):
            image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
            path = folder / "images" / split / "day1" / f"frame{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, quality=90)
            if split == "val":
                label = np.zeros((200, 300), dtype=np.uint8)
                label[100:] = 1  # road
                label[:50] = 5  # sky
                label_path = folder / "labels" / "val" / "day1" / f"frame{index}.png"
                label_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(label, mode="L").save(label_path)
    spec = {
        "splits": {"train": {"images": "images/train"},
                   "val": {"images": "images/val", "labels": "labels/val"}},
        "image_suffix": ".jpg",
        "classes": ["unlabelled", "road", "sidewalk", "car", "person", "sky"],
    }  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(spec))
    prepare_data_root(data_root, progress=False, log=lambda _: None)

    cfg = toy(target="custom", target_dir="dashcam", pseudo_margins=(0, 20, 0, 0))
    batch = next(build_uda_loader(cfg, data_root, seed=0))
    assert batch["tgt_img"].shape == (2, 3, 256, 256)
    assert (batch["tgt_label"] == 255).all()  # unlabelled training split
    # 200-row images are padded to the 256-row crop: the mean colour (0 once normalised),
    # ignore labels and no valid pseudo-labels.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 56, 256)
    assert torch.equal(batch["tgt_img"][:, :, 200:, :], mean)
    assert (batch["tgt_valid_mask"][:, 180:] == 0).all() and (
        batch["tgt_valid_mask"][:, :180] == 1
    ).all()

    val = build_val_dataset(cfg, data_root)
    item = val[0]
    assert len(val) == 3 and item["name"] == "frame0.jpg"
    assert (
        item["label"][150, 10] == 0 and item["label"][10, 10] == 10 and item["label"][70, 10] == 255
    )
