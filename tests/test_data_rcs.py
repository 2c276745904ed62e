"""Rare class sampling: probabilities, eligible files, draws and the re-crop loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from training.data.datasets import DatasetSplit, Sample
from training.data.errors import DatasetError
from training.data.labels import GTA_TABLE
from training.data.pipeline import TrainCrop
from training.data.rcs import (
    RareClassSampler,
    rcs_class_probabilities,
    rcs_eligible_files,
    recrop_for_class,
)
from training.data.stats import write_class_stats

STATS = [
    {"0": 100, "1": 10, "file": "data/gta/labels/a_labelTrainIds.png"},
    {"0": 50, "2": 40, "file": "data/gta/labels/b_labelTrainIds.png"},
]


def test_class_probabilities_by_hand() -> None:
    classes, probabilities = rcs_class_probabilities(STATS, temperature=0.1)
    # Totals: class 1: 10, class 2: 40, class 0: 150 of 200 pixels -> ascending order 1, 2, 0.
    assert classes == (1, 2, 0)
    logits = [(1 - 10 / 200) / 0.1, (1 - 40 / 200) / 0.1, (1 - 150 / 200) / 0.1]  # 9.5, 8, 2.5
    norm = sum(math.exp(v) for v in logits)
    np.testing.assert_allclose(probabilities, [math.exp(v) / norm for v in logits], rtol=1e-12)
    np.testing.assert_allclose(probabilities, [0.816965, 0.182290, 0.000745], atol=1e-6)


def test_class_probabilities_at_the_reference_temperature() -> None:
    _, probabilities = rcs_class_probabilities(STATS, temperature=0.01)
    assert np.isfinite(probabilities).all() and probabilities.sum() == pytest.approx(1.0)
    # exp(95 - 80) between the two rarest classes.
    assert probabilities[0] / probabilities[1] == pytest.approx(math.exp(15.0))


def test_eligible_files_need_strictly_more_than_min_pixels() -> None:
    samples_with_class = {
        0: [
            ("data/gta/labels/a_labelTrainIds.png", 100),
            ("data/gta/labels/b_labelTrainIds.png", 50),
        ],
        1: [("data/gta/labels/a_labelTrainIds.png", 10)],
    }
    # Class 1 has exactly 10 pixels: not eligible, and a class without eligible files is an error.
    with pytest.raises(DatasetError, match="class 1"):
        rcs_eligible_files(samples_with_class, (1, 0), min_pixels=10)
    eligible = rcs_eligible_files(samples_with_class, (1, 0), min_pixels=9)
    assert eligible == {
        1: ["a_labelTrainIds.png"],
        0: ["a_labelTrainIds.png", "b_labelTrainIds.png"],
    }
    assert rcs_eligible_files(samples_with_class, (0,), min_pixels=50) == {
        0: ["a_labelTrainIds.png"]
    }


def make_split(folder: Path, names: list[str]) -> DatasetSplit:
    samples = tuple(
        Sample(folder / "images" / f"{n}.png", folder / "labels" / f"{n}_labelTrainIds.png", None)
        for n in names
    )
    return DatasetSplit("gta", folder, samples, GTA_TABLE, "pil", with_stats=True)


def test_sampler_maps_eligible_files_to_samples_and_draws_by_probability(tmp_path: Path) -> None:
    # Statistics written by the reference tools name files relative to their working directory.
    write_class_stats(tmp_path, [
        ("data/gta/labels/c_labelTrainIds.png", {0: 5000, 13: 3500}),
        ("data/gta/labels/a_labelTrainIds.png", {0: 9000, 18: 3001}),
        ("data/gta/labels/b_labelTrainIds.png", {0: 8000, 13: 2000, 18: 3000}),
    ])  # fmt: skip
    split = make_split(tmp_path, ["a", "b", "c"])
    sampler = RareClassSampler.from_split(split, 0.01, min_pixels=3000, min_crop_ratio=2.0)
    assert sampler.classes == (13, 18, 0)
    assert sampler.sample_indices == {13: (2,), 18: (0,), 0: (2, 0, 1)}
    assert sampler.crop_threshold == 6000
    rng = np.random.default_rng(0)
    draws = [sampler.draw(rng) for _ in range(4000)]
    counts = {c: sum(d[0] == c for d in draws) for c in sampler.classes}
    for class_id, probability in zip(sampler.classes, sampler.probabilities, strict=True):
        assert counts[class_id] / 4000 == pytest.approx(probability, abs=0.03)
    assert all(index in sampler.sample_indices[class_id] for class_id, index in draws)


def test_sampler_rejects_stale_statistics(tmp_path: Path) -> None:
    write_class_stats(tmp_path, [("gta/labels/zzz_labelTrainIds.png", {0: 5000})])
    with pytest.raises(DatasetError, match="out of date"):
        RareClassSampler.from_split(make_split(tmp_path, ["a"]), 0.01, 3000, 0.5)
    (tmp_path / "samples_with_class.json").unlink()
    with pytest.raises(DatasetError, match=r"samples_with_class\.json"):
        RareClassSampler.from_split(make_split(tmp_path, ["a"]), 0.01, 3000, 0.5)


def test_sampler_reads_stats_json_as_written_by_the_reference(tmp_path: Path) -> None:
    (tmp_path / "sample_class_stats.json").write_text(json.dumps(
        [{"0": 4000, "5": 3100, "file": "data/gta/labels/a_labelTrainIds.png"}]
    ))  # fmt: skip
    (tmp_path / "samples_with_class.json").write_text(json.dumps(
        {"0": [["data/gta/labels/a_labelTrainIds.png", 4000]],
         "5": [["data/gta/labels/a_labelTrainIds.png", 3100]]}
    ))  # fmt: skip
    sampler = RareClassSampler.from_split(make_split(tmp_path, ["a"]), 0.01, 3000, 0.5)
    assert sampler.classes == (5, 0) and sampler.sample_indices == {5: (0,), 0: (0,)}


def crop_with(pixels_of_class: int) -> TrainCrop:
    label = np.zeros(100, dtype=np.uint8)
    label[:pixels_of_class] = 7
    return TrainCrop(np.zeros((1, 100, 3), np.uint8), label.reshape(1, 100), None, (1, 100))


def test_recrop_stops_at_the_first_crop_above_the_threshold() -> None:
    counts = iter([5, 20, 21, 90])
    produced: list[TrainCrop] = []

    def run() -> TrainCrop:
        produced.append(crop_with(next(counts)))
        return produced[-1]

    kept = recrop_for_class(run, 7, threshold=20)
    assert len(produced) == 3 and kept is produced[2]  # 20 is not > 20


def test_recrop_keeps_the_eleventh_crop_when_all_fail() -> None:
    produced: list[TrainCrop] = []

    def run() -> TrainCrop:
        produced.append(crop_with(0))
        return produced[-1]

    kept = recrop_for_class(run, 7, threshold=20)
    assert len(produced) == 11 and kept is produced[-1]
