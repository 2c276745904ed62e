"""What an export folder holds: file names, the metadata every format carries, and safe writing.

The metadata is one JSON-serialisable dict (see :func:`build_metadata`). ONNX files carry it in
``metadata_props`` and AOTInductor packages in their own metadata (one JSON string per key), and
every export folder has it as ``export.json`` (the manifest, which also names the artefact), so an
``.onnx`` or ``.pt2`` file copied alone still describes itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from models.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IMAGENET_MEAN, IMAGENET_STD
from models.config import ModelConfig
from models.inference import slide_windows

FORMATS = ("onnx", "aoti", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MODES = ("hrda", "whole")
# Precisions each format can produce; the first is the default.
FORMAT_PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16"),
    "aoti": ("fp32", "bf16", "fp16"),
    "tensorrt": ("fp16", "fp32", "int8"),
}
ARTIFACT_NAMES = {"onnx": "model.onnx", "aoti": "model.pt2", "tensorrt": "model.engine"}
RUNTIME_SUFFIXES = (".safetensors", ".onnx", ".pt2", ".engine", ".plan")
MANIFEST_NAME = "export.json"
METADATA_FORMAT = "cluda-export"
METADATA_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
ONNX_OPSET = 18


class ExportError(Exception):
    """Bad input to an export or a runtime: missing or foreign checkpoint, option or folder."""


class BackendUnavailable(ExportError):
    """The requested backend (TensorRT, CUDA, a CUDA execution provider) is not usable here."""


def export_size(model_config: ModelConfig, mode: str) -> tuple[int, int]:
    """(height, width) of the exported window network.

    ``hrda`` with an outer window (HRDA models): ``inference_window``², which
    :func:`models.inference.slide_inference` always feeds exactly. Otherwise (``whole``, or a
    DAFormer model whose evaluation is a single pass anyway): the ``eval_scale`` box in
    landscape, (short, long) — the size a landscape frame is rescaled to.
    """
    if mode not in MODES:
        raise ExportError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "hrda" and model_config.inference_window > 0:
        return model_config.inference_window, model_config.inference_window
    return min(model_config.eval_scale), max(model_config.eval_scale)


def served_modes(model_config: ModelConfig, mode: str) -> tuple[str, ...]:
    """Inference modes an export made in ``mode`` reproduces.

    A model without an outer window (DAFormer) runs one pass in both modes, so either export
    serves both; an HRDA export serves only the mode it was made for.
    """
    return MODES if model_config.inference_window <= 0 else (mode,)


def typical_window_count(model_config: ModelConfig, mode: str) -> int:
    """Windows per landscape ``eval_scale`` frame (3 for HRDA's 1024×2048 in ``hrda`` mode).

    TensorRT tunes its kernels for this batch size (the optimisation profile's ``opt``).
    """
    height, width = min(model_config.eval_scale), max(model_config.eval_scale)
    if mode == "hrda" and model_config.inference_window > 0:
        return len(slide_windows(height, width, model_config.inference_window,
                                 model_config.inference_stride))
    return 1


def class_names(model_config: ModelConfig) -> list[str]:
    """Cityscapes trainId names, or ``class_0``… for a model with another class count."""
    if model_config.num_classes == len(CITYSCAPES_CLASSES):
        return list(CITYSCAPES_CLASSES)
    return [f"class_{index}" for index in range(model_config.num_classes)]


def class_palette(model_config: ModelConfig) -> list[list[int]]:
    """The Cityscapes palette, or a deterministic spread of colours for another class count."""
    if model_config.num_classes == len(CITYSCAPES_PALETTE):
        return [list(colour) for colour in CITYSCAPES_PALETTE]
    return [[(37 * i) % 256, (101 * i) % 256, (173 * i) % 256]
            for i in range(model_config.num_classes)]


def build_metadata(
    model_config: ModelConfig,
    checkpoint: Mapping[str, Any],
    fmt: str,
    mode: str,
    precision: str,
    device: str,
) -> dict[str, Any]:
    """The facts every exported artefact carries.

    Args:
        model_config: the exported architecture (stored whole, as ``dataclasses.asdict``).
        checkpoint: ``name``, ``version``, ``sha256`` (hex of the source file) and ``file``.
        fmt: "onnx", "aoti" or "tensorrt".
        mode: export mode ("hrda" or "whole").
        precision: "fp32", "fp16", "bf16" or "int8".
        device: "cpu" or "cuda" (where an AOTInductor package or engine runs).

    Returns:
        A JSON-serialisable dict.
    """
    height, width = export_size(model_config, mode)
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "runtime": fmt,
        "mode": mode,
        "modes": list(served_modes(model_config, mode)),
        "precision": precision,
        "device": device,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        # N×3×H×W float32 RGB in 0..255 → N×K×H×W float32 logits; N is dynamic.
        "input_size": [height, width],
        "num_classes": model_config.num_classes,
        "window": model_config.inference_window,
        "stride": model_config.inference_stride,
        "eval_scale": list(model_config.eval_scale),
        "class_names": class_names(model_config),
        "palette": class_palette(model_config),
        "normalization": {
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "input": "RGB float 0..255; (x - mean) / std is computed inside the graph",
        },
        "model_config": dataclasses.asdict(model_config),
        "checkpoint": dict(checkpoint),
    }


def metadata_to_strings(metadata: Mapping[str, Any]) -> dict[str, str]:
    """One JSON string per key, for ONNX ``metadata_props`` and AOTInductor package metadata."""
    return {key: json.dumps(value, sort_keys=True) for key, value in metadata.items()}


def metadata_from_strings(strings: Mapping[str, str], source: str) -> dict[str, Any]:
    """Inverse of :func:`metadata_to_strings`; foreign keys (the packager's own) are skipped.

    Raises:
        ExportError: the strings do not hold cluda export metadata.
    """
    metadata: dict[str, Any] = {}
    for key, value in strings.items():
        try:
            metadata[key] = json.loads(value)
        except (TypeError, json.JSONDecodeError):
            continue
    check_metadata(metadata, source)
    return metadata


def check_metadata(metadata: Mapping[str, Any], source: str) -> None:
    """Raises :class:`ExportError` unless ``metadata`` is cluda export metadata we can read."""
    if metadata.get("format") != METADATA_FORMAT:
        raise ExportError(
            f"{source} carries no cluda export metadata; export it with python -m export"
        )
    if metadata.get("format_version") != METADATA_VERSION:
        raise ExportError(
            f"{source} has export metadata version {metadata.get('format_version')!r}; this "
            f"code reads version {METADATA_VERSION}: re-export the checkpoint"
        )


def write_manifest(folder: Path, metadata: Mapping[str, Any], artifact: str,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Writes ``export.json``: the metadata plus the artefact's file name (and format extras)."""
    manifest = {**metadata, "artifact": artifact, **(extra or {})}
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    """Reads and checks a folder's ``export.json``.

    Raises:
        ExportError: missing, unreadable or foreign manifest.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{folder} has no {MANIFEST_NAME}: not an export folder") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"cannot read {path}: {error}") from error
    check_metadata(manifest, str(path))
    return manifest


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder beside ``out`` that replaces ``out`` on success.

    The export is written into ``.{name}.partial-*`` in the same parent (same file system, so
    the final ``os.rename`` is atomic) and renamed into place only when the block finishes; on
    any error the temporary folder is deleted and an existing ``out`` is left untouched. An
    existing ``out`` must be an earlier export (it has ``export.json``) or empty: a folder with
    other files is never replaced.

    Raises:
        ExportError: ``out`` is a file, a non-empty folder that is not an export, or its parent
            cannot be written.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
        raise ExportError(
            f"output folder {out} is not empty and holds no {MANIFEST_NAME}; refusing to replace "
            "it: choose a new or empty folder"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        # mkdtemp makes the folder private (0700); the export is for other users (a server).
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
    except OSError as error:
        raise ExportError(f"cannot write the output folder {out}: {error}") from error
    try:
        yield staging
        if out.exists():
            # Two renames: the old export stays complete under another name until the new one
            # is in place, so no moment leaves `out` holding a half-written export.
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, retired / out.name)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(retired / out.name, out)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
