"""Serving configuration: which model, on which device, with which input limits.

Every setting comes from a BentoML argument (``bentoml serve ... --arg model=PATH``), else from an
environment variable, else from its default:

- ``CLUDA_MODEL`` / ``--arg model``: our ``.safetensors`` checkpoint, or an export of
  ``python -m export`` (its folder, or its ``.onnx``, ``.pt2`` or ``.engine`` file). Default: the
  newest ``work_dirs/toy_*/latest.safetensors`` under the current directory; without one the
  server refuses to start and says how to get a model.
- ``CLUDA_DEVICE`` / ``--arg device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default; CUDA
  when PyTorch sees a GPU).
- ``CLUDA_MAX_PIXELS`` / ``--arg max_pixels``: largest accepted width × height (4096 × 2048).
- ``CLUDA_MAX_UPLOAD_BYTES`` / ``--arg max_upload_bytes``: largest accepted upload (20 MiB).
- ``CLUDA_MAX_BATCH`` / ``--arg max_batch``: most images per forward pass when requests queue
  up (8); 1 turns adaptive batching off.

This module is light (no torch, no bentoml) so the BentoML main process can check the settings
before it starts any worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_PIXELS = 4096 * 2048
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_BATCH = 8
TOY_CHECKPOINT_GLOB = "work_dirs/toy_*/latest.safetensors"
# What :func:`export.runtime.load_runtime` reads (checked here without importing it).
MODEL_SUFFIXES = (".safetensors", ".onnx", ".pt2", ".engine", ".plan")
EXPORT_MANIFEST = "export.json"

# setting name -> environment variable
ENVIRONMENT = {
    "model": "CLUDA_MODEL",
    "device": "CLUDA_DEVICE",
    "max_pixels": "CLUDA_MAX_PIXELS",
    "max_upload_bytes": "CLUDA_MAX_UPLOAD_BYTES",
    "max_batch": "CLUDA_MAX_BATCH",
}


class SettingsError(ValueError):
    """A serving setting is missing or invalid; the message says how to fix it."""


@dataclass(frozen=True)
class ServingSettings:
    """Resolved serving configuration.

    Attributes:
        model: the model file to serve.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        max_pixels: largest accepted width × height.
        max_upload_bytes: largest accepted upload in bytes.
        max_batch: most images per forward pass (1: no batching).
    """

    model: Path
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_batch: int = DEFAULT_MAX_BATCH


def newest_toy_checkpoint(root: Path) -> Path | None:
    """The most recently written ``work_dirs/toy_*/latest.safetensors`` under ``root``, if any."""
    candidates = [path for path in root.glob(TOY_CHECKPOINT_GLOB) if path.is_file()]
    return max(candidates, key=lambda path: path.stat().st_mtime) if candidates else None


def _check_model_path(model: Path) -> None:
    if not model.exists():
        raise SettingsError(f"the configured model {model} does not exist")
    if model.is_dir() and not (model / EXPORT_MANIFEST).is_file():
        raise SettingsError(
            f"the model folder {model} has no {EXPORT_MANIFEST}: point CLUDA_MODEL at a "
            f"checkpoint file or at a folder written by `python -m export`"
        )
    if model.is_file() and model.suffix.lower() not in MODEL_SUFFIXES:
        raise SettingsError(
            f"cannot serve {model}: expected one of {', '.join(MODEL_SUFFIXES)} (a released "
            f".pth checkpoint converts with `python -m models.convert IN.pth OUT.safetensors`)"
        )


def _positive_int(name: str, raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{ENVIRONMENT[name]} (or --arg {name}) must be a positive integer, got {raw!r}"
        ) from None
    if value <= 0:
        raise SettingsError(
            f"{ENVIRONMENT[name]} (or --arg {name}) must be a positive integer, got {raw!r}"
        )
    return value


def resolve_settings(
    arguments: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    root: Path | None = None,
) -> ServingSettings:
    """Combines BentoML arguments, environment variables and defaults.

    Args:
        arguments: ``bentoml serve --arg key=value`` pairs (they win over the environment).
        environ: the environment (``os.environ`` by default).
        root: where ``work_dirs/`` is looked for (the current directory by default).

    Returns:
        The settings, with the model file checked to exist.

    Raises:
        SettingsError: no model configured and no toy checkpoint found, a configured model file
            that does not exist, or a limit that is not a positive integer.
    """
    arguments = dict(arguments or {})
    environ = os.environ if environ is None else environ
    unknown = sorted(set(arguments) - set(ENVIRONMENT))
    if unknown:
        raise SettingsError(
            f"unknown BentoML argument(s) {unknown}; valid ones: {sorted(ENVIRONMENT)}"
        )

    def raw(name: str) -> Any:
        value = arguments.get(name)
        if value is None or value == "":
            value = environ.get(ENVIRONMENT[name]) or None
        return value

    model_setting = raw("model")
    if model_setting is None:
        root = Path.cwd() if root is None else root
        model = newest_toy_checkpoint(root)
        if model is None:
            raise SettingsError(
                f"no model to serve: CLUDA_MODEL is not set and there is no toy checkpoint "
                f"({TOY_CHECKPOINT_GLOB}) under {root}. Train one with "
                f"`python -m training.run toy_hrda`, or point CLUDA_MODEL (or "
                f"`bentoml serve ... --arg model=PATH`) at a .safetensors checkpoint or an "
                f"exported model (.onnx, .pt2, .engine)."
            )
    else:
        model = Path(str(model_setting)).expanduser()
        _check_model_path(model)
    device = str(raw("device") or "auto")
    return ServingSettings(
        model=model,
        device=device,
        max_pixels=_positive_int("max_pixels", raw("max_pixels") or DEFAULT_MAX_PIXELS),
        max_upload_bytes=_positive_int(
            "max_upload_bytes", raw("max_upload_bytes") or DEFAULT_MAX_UPLOAD_BYTES
        ),
        max_batch=_positive_int("max_batch", raw("max_batch") or DEFAULT_MAX_BATCH),
    )
