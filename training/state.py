"""Resumable training checkpoints in our safetensors format.

One file holds the student (``model.*``, what evaluation and serving load), the EMA teacher
(``ema_model.*``), the AdamW state (``optimizer.*``), every random stream (``rng.*``) and, as JSON
metadata, the resolved training config, the model config, the iteration and the optimizer's
hyper-parameters. Writes are atomic (:func:`models.checkpoint.save_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.checkpoint import (
    EMA_PREFIX,
    MODEL_PREFIX,
    CheckpointError,
    load_checkpoint,
    load_state_strict,
    prefixed_state,
    save_checkpoint,
    strip_prefix,
)

from .overrides import to_dict

OPTIMIZER_PREFIX = "optimizer."
RNG_PREFIX = "rng."


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{OPTIMIZER_PREFIX}{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                       meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in strip_prefix(tensors, OPTIMIZER_PREFIX).items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    groups = meta["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(
        len(saved["params"]) != len(own["params"])
        for saved, own in zip(groups, optimizer.param_groups)
    ):
        raise CheckpointError("the checkpoint's optimizer groups do not match this model")
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def capture_rng(generators: dict[str, torch.Generator]) -> tuple[dict[str, Tensor], dict]:
    """Global (torch, CUDA, NumPy, Python) and named generator states."""
    tensors = {f"{RNG_PREFIX}torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{RNG_PREFIX}cuda{index}"] = cuda_state
    for name, generator in generators.items():
        tensors[f"{RNG_PREFIX}generator.{name}"] = generator.get_state()
    numpy_state = np.random.get_state()
    tensors[f"{RNG_PREFIX}numpy"] = torch.from_numpy(numpy_state[1].astype(np.int64))
    meta = {"numpy": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]),
                      float(numpy_state[4])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict,
                generators: dict[str, torch.Generator]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where the devices exist)."""
    torch.set_rng_state(tensors[f"{RNG_PREFIX}torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith(f"{RNG_PREFIX}cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    for name, generator in generators.items():
        key = f"{RNG_PREFIX}generator.{name}"
        if key not in tensors:
            raise CheckpointError(f"the checkpoint has no state for the random stream {name!r}")
        generator.set_state(tensors[key])
    kind, position, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors[f"{RNG_PREFIX}numpy"].numpy().astype(np.uint32),
                         position, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass
class TrainingState:
    """What :func:`load_training_checkpoint` gives back besides the restored modules."""

    iteration: int
    config: dict
    best_miou: float | None
    history: list[dict]


def save_training_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: Any,
    generators: dict[str, torch.Generator],
    best_miou: float | None = None,
    history: list[dict] | None = None,
) -> None:
    """Writes a resumable checkpoint after ``iteration`` completed iterations.

    Args:
        path: destination ``.safetensors``.
        student, teacher: the two segmentors.
        optimizer: AdamW over the student.
        iteration: number of completed iterations (training resumes at this index).
        config: the resolved TrainConfig.
        generators: the run's named random streams.
        best_miou: best validation mIoU so far.
        history: evaluation results so far (for the final plots).
    """
    tensors = prefixed_state(student, MODEL_PREFIX)
    tensors.update(prefixed_state(teacher, EMA_PREFIX))
    optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors.update(optimizer_tensors)
    rng_tensors, rng_meta = capture_rng(generators)
    tensors.update(rng_tensors)
    save_checkpoint(path, tensors, {
        "model_config": dataclasses.asdict(config.model),
        "config": to_dict(config),
        "iteration": iteration,
        "name": config.preset,
        "optimizer": optimizer_meta,
        "rng": rng_meta,
        "best_miou": best_miou,
        "history": history or [],
    })


def load_training_checkpoint(
    path: str | Path,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
) -> TrainingState:
    """Restores a checkpoint of :func:`save_training_checkpoint` into existing objects."""
    tensors, metadata = load_checkpoint(path)
    for key in ("iteration", "config", "optimizer", "rng"):
        if key not in metadata:
            raise CheckpointError(f"{path} is not a training checkpoint (no {key!r}); "
                                  "it can be evaluated or served but not resumed")
    load_state_strict(student, strip_prefix(tensors, MODEL_PREFIX), f"{path} (student)")
    load_state_strict(teacher, strip_prefix(tensors, EMA_PREFIX), f"{path} (teacher)")
    _restore_optimizer(optimizer, tensors, metadata["optimizer"])
    restore_rng(tensors, metadata["rng"], generators)
    return TrainingState(iteration=int(metadata["iteration"]), config=metadata["config"],
                         best_miou=metadata.get("best_miou"), history=metadata.get("history", []))
