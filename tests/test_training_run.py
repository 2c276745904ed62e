"""The training command: presets, errors, toy runs, resume, crash safety and 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint, load_segmentor
from training import run as run_module
from training.data.synthetic import ensure_synthetic_dataset
from training.evaluate import main as evaluate_main
from training.run import TrainingError, _check_finite, main

REPO = Path(__file__).resolve().parents[1]

# Tiny everything: 128×64 target images, 64² crops, 32² detail crops, a few val images.
TINY = [
    "data.crop_size=64,64", "data.rcs.min_pixels=20", "data.pseudo_margins=2,10,2,2",
    "data.num_workers=0", "model.eval_scale=128,64", "contrast.grid=9,9",
    "contrast.block_size=50", "iterations=4", "eval_interval=0", "checkpoint_interval=2",
    "log_interval=1", "debug_image_interval=2", "optim.warmup_iters=2",
]
HRDA_TINY = ["model.hrda.hr_crop_size=32", "model.hrda.hr_slide_stride=16",
             "model.inference_window=64", "model.inference_stride=32"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    ensure_synthetic_dataset(root / "synthetic", seed=0, num_source=10, num_target_train=6,
                             num_target_val=3, source_size=(160, 88), target_size=(128, 64),
                             nproc=1)
    return root


def _overrides(preset: str, *extra: str) -> list[str]:
    items = TINY + (HRDA_TINY if "hrda" in preset else []) + list(extra)
    return [arg for item in items for arg in ("--set", item)]


def _run(preset: str, data_root: Path, work_dir: Path, *extra: str, resume: bool = False) -> int:
    argv = [preset, "--data-root", str(data_root), "--work-dir", str(work_dir),
            *_overrides(preset, *extra)]
    return main(argv + (["--resume"] if resume else []))


def _log(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]


def test_list_and_errors(capsys, tmp_path: Path) -> None:
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in ("gta_hrda", "synthia_hrda", "gta_daformer", "toy_hrda", "toy_target_only"):
        assert name in listed
    assert main(["toy"]) == 2
    assert "valid presets" in capsys.readouterr().err
    assert main(["toy_hrda", "--set", "contrast.varient=paper"]) == 2
    assert "valid keys here" in capsys.readouterr().err
    assert main(["toy_hrda", "--set", "iterations=lots"]) == 2
    assert "expected an integer" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_gpu_preset_on_cpu_names_the_override(capsys, tmp_path: Path) -> None:
    assert main(["gta_hrda", "--work-dir", str(tmp_path)]) == 2
    assert "--set allow_cpu=true" in capsys.readouterr().err


def test_missing_data_and_weights_are_explained(capsys, tmp_path: Path) -> None:
    assert main(["gta_daformer", "--data-root", str(tmp_path), "--work-dir", str(tmp_path),
                 "--set", "allow_cpu=true", "--set", f"pretrained={tmp_path}/mit_b5.pth"]) == 2
    assert "mit_b5.pth" in capsys.readouterr().err
    assert main(["gta_daformer", "--data-root", str(tmp_path), "--work-dir", str(tmp_path),
                 "--set", "allow_cpu=true", "--set", "pretrained=",
                 "--set", "model.backbone=mit_test"]) == 2
    message = capsys.readouterr().err
    assert "missing folder" in message and "expected layout" in message


def test_non_finite_loss_names_the_term() -> None:
    with pytest.raises(TrainingError, match=r"iteration 7: cl_mix=nan"):
        _check_finite({"seg_src": 1.0, "cl_mix": float("nan")}, 7)


@pytest.mark.parametrize("preset", ["toy_hrda", "toy_daformer", "toy_source_only",
                                    "toy_target_only"])
def test_toy_presets_train_and_leave_a_usable_checkpoint(preset, data_root, tmp_path) -> None:
    work_dir = tmp_path / preset
    assert _run(preset, data_root, work_dir, "iterations=2") == 0
    model, metadata = load_segmentor(work_dir / "latest.safetensors")
    assert metadata["iteration"] == 2 and metadata["config"]["preset"] == preset
    records = _log(work_dir)
    assert [r["iteration"] for r in records] == [1, 2]
    final = json.loads((work_dir / "final_eval.json").read_text())
    assert 0 <= final["miou19"] <= 1
    for name in ("per_class_iou.png", "training_curves.png", "config.json", "best.safetensors"):
        assert (work_dir / name).is_file(), name
    if preset in ("toy_hrda", "toy_daformer"):
        assert {"seg_src", "cl_src", "seg_mix", "cl_mix"} <= set(records[-1])
        assert list((work_dir / "debug").glob("*.png"))
    if preset == "toy_hrda":
        # The standalone evaluation reproduces the run's final numbers and writes JSON.
        out = tmp_path / "eval.json"
        assert evaluate_main([str(work_dir / "latest.safetensors"), "--data-root",
                              str(data_root), "--out", str(out)]) == 0
        standalone = json.loads(out.read_text())
        assert standalone["mode"] == "hrda" and standalone["images"] == 3
        assert standalone["miou19"] == pytest.approx(final["miou19"])
        assert set(standalone["per_class_iou"]) >= {"road", "bicycle"}


def test_killed_run_resumes_bit_for_bit(data_root, tmp_path, monkeypatch) -> None:
    """A run killed during its 4th iteration loses only that iteration: resumed from the
    iteration-2 checkpoint, it logs the same losses and ends with the same weights as a run
    that was never interrupted."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert _run("toy_hrda", data_root, straight) == 0
    real_step = run_module.uda_step

    def dying_step(*args, **kwargs):
        if args[5] == 3:  # the iteration argument
            raise KeyboardInterrupt("power cut")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(run_module, "uda_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        _run("toy_hrda", data_root, killed)
    _, metadata = load_checkpoint(killed / "latest.safetensors")
    assert metadata["iteration"] == 2
    monkeypatch.setattr(run_module, "uda_step", real_step)
    assert _run("toy_hrda", data_root, killed, resume=True) == 0
    losses = [(r["iteration"], r["loss"]) for r in _log(killed)]
    assert losses[:2] == [(r["iteration"], r["loss"]) for r in _log(straight)][:2]
    # The killed run logged iteration 3 before dying; the resumed run logs 3 and 4 again.
    assert losses[-2:] == [(r["iteration"], r["loss"]) for r in _log(straight)][-2:]
    weights_a, _ = load_checkpoint(straight / "latest.safetensors")
    weights_b, metadata = load_checkpoint(killed / "latest.safetensors")
    assert metadata["iteration"] == 4
    for key in weights_a:
        if key.startswith(("model.", "ema_model.", "optimizer.")):
            torch.testing.assert_close(weights_a[key], weights_b[key], rtol=0, atol=0, msg=key)


def test_resume_without_checkpoint_is_an_error(capsys, data_root, tmp_path) -> None:
    assert _run("toy_daformer", data_root, tmp_path / "empty", resume=True) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_two_process_ddp_keeps_teachers_identical(data_root, tmp_path) -> None:
    work_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_port", str(29500 + os.getpid() % 1000), "-m", "training.run",
               "toy_daformer", "--data-root", str(data_root), "--work-dir", str(work_dir),
               *_overrides("toy_daformer", "iterations=2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical on 2 ranks" in result.stdout
    _, metadata = load_checkpoint(work_dir / "latest.safetensors")
    assert metadata["iteration"] == 2
    # The validation images were split over the ranks (3 images: 2 + 1); the summed confusion
    # matrices give the same scores as one process scoring all of them.
    out = tmp_path / "eval.json"
    assert evaluate_main([str(work_dir / "latest.safetensors"), "--data-root", str(data_root),
                          "--out", str(out)]) == 0
    standalone = json.loads(out.read_text())
    final = json.loads((work_dir / "final_eval.json").read_text())
    assert standalone["images"] == 3
    assert final["miou19"] == pytest.approx(standalone["miou19"])
    assert final["per_class_iou"] == pytest.approx(standalone["per_class_iou"], nan_ok=True)
