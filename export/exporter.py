"""One export, start to finish: checkpoint → window network → ONNX, AOTInductor or TensorRT."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from models.checkpoint import CheckpointError, file_sha256, load_segmentor

from .artifact import (
    ARTIFACT_NAMES,
    FORMAT_PRECISIONS,
    FORMATS,
    INPUT_NAME,
    MODES,
    ONNX_OPSET,
    BackendUnavailable,
    ExportError,
    build_metadata,
    export_size,
    staged_folder,
    typical_window_count,
    write_manifest,
)


def _quiet(_message: str) -> None:
    """Discards progress lines."""


def resolve_options(fmt: str, precision: str | None, mode: str | None,
                    device: str | None) -> tuple[str, str, str]:
    """Checks the format's options and fills in defaults.

    Returns:
        (precision, mode, device): precision defaults to the format's first (fp32; fp16 for
        TensorRT), mode to "hrda", device to "cuda" for TensorRT and "cpu" otherwise.

    Raises:
        ExportError: unknown format, mode or device, or a precision the format cannot make.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    allowed = FORMAT_PRECISIONS[fmt]
    precision = precision or allowed[0]
    if precision not in allowed:
        hint = "; bf16 needs --format aoti" if precision == "bf16" else ""
        raise ExportError(
            f"--format {fmt} supports precision {', '.join(allowed)}, not {precision}{hint}"
        )
    mode = mode or "hrda"
    if mode not in MODES:
        raise ExportError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    device = device or ("cuda" if fmt == "tensorrt" else "cpu")
    if torch.device(device).type not in ("cpu", "cuda"):
        raise ExportError(f"device must be cpu or cuda, got {device!r}")
    if fmt == "tensorrt" and torch.device(device).type != "cuda":
        raise ExportError("TensorRT engines are built and run on a GPU: use --device cuda")
    return precision, mode, device


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path,
    precision: str | None = None,
    mode: str | None = None,
    device: str | None = None,
    opset: int = ONNX_OPSET,
    max_batch: int = 8,
    calibration: str | Path | None = None,
    calibration_images: int = 64,
    engine_cache: str | Path | None = None,
    log: Callable[[str], None] = _quiet,
) -> Path:
    """Exports the student of a checkpoint into the folder ``out``.

    The folder is replaced only once the export is complete (see
    :func:`export.artifact.staged_folder`).

    Args:
        checkpoint: one of our ``.safetensors`` checkpoints (released ``.pth`` files are
            converted first with ``python -m models.convert``).
        fmt: "onnx", "aoti" or "tensorrt".
        out: destination folder.
        precision: see :func:`resolve_options`.
        mode: "hrda" (the ``inference_window``² window) or "whole" (the ``eval_scale`` box).
        device: where an AOTInductor package runs / the GPU a TensorRT engine is built on; the
            ONNX graph is device independent and always traced on the CPU.
        opset: ONNX opset (≥ 17).
        max_batch: TensorRT: largest batch of windows per engine call.
        calibration: TensorRT INT8: folder of target-domain images.
        calibration_images: TensorRT INT8: how many of them to use at most.
        engine_cache: TensorRT engine cache folder (default ``~/.cache/cluda/tensorrt``).
        log: receives progress lines.

    Returns:
        The export folder.

    Raises:
        ExportError: bad checkpoint, option or output folder; export failure.
        BackendUnavailable: TensorRT, ONNX tooling or CUDA missing.
    """
    precision, mode, device = resolve_options(fmt, precision, mode, device)
    if fmt in ("onnx", "tensorrt") and opset < 17:
        raise ExportError(f"--opset must be at least 17 (LayerNorm as one node), got {opset}")
    trt = None
    if fmt == "tensorrt":
        from .trt_engine import import_tensorrt, require_cuda

        trt = import_tensorrt()
        require_cuda(torch.device(device).index or 0)
        if precision == "int8" and calibration is None:
            raise ExportError("--precision int8 needs --calibration DIR (target-domain images)")
    if fmt == "aoti" and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("--device cuda needs a CUDA GPU; torch sees none")

    checkpoint = Path(checkpoint)
    try:
        model, checkpoint_metadata = load_segmentor(checkpoint)
    except CheckpointError as error:
        raise ExportError(str(error)) from error
    source = {
        "name": checkpoint_metadata.get("name", checkpoint.stem),
        "version": str(checkpoint_metadata.get("iteration", "")),
        "sha256": file_sha256(checkpoint),
        "file": checkpoint.name,
    }
    model_config = model.config
    size = export_size(model_config, mode)
    metadata = build_metadata(model_config, source, fmt, mode, precision,
                              "any" if fmt == "onnx" else device)
    artifact = ARTIFACT_NAMES[fmt]
    log(f"exporting {checkpoint} ({model_config.backbone}, "
        f"{'HRDA' if model_config.hrda else 'DAFormer'}) as {fmt} {precision}, mode {mode}, "
        f"window {size[0]}x{size[1]}")

    from .graph import trace_window, write_aoti, write_onnx

    with staged_folder(out) as staging:
        extra: dict[str, Any] = {}
        if fmt == "onnx":
            program = trace_window(model, size, precision)
            log("writing ONNX")
            write_onnx(program, staging / artifact, metadata, opset)
        elif fmt == "aoti":
            program = trace_window(model, size, precision, device)
            log("compiling with AOTInductor")
            write_aoti(program, staging / artifact, metadata)
        else:
            extra["tensorrt"] = _export_tensorrt(
                trt, model, model_config, metadata, size, precision, mode, device, opset,
                max_batch, calibration, calibration_images, engine_cache, staging, log,
            )
        write_manifest(staging, metadata, artifact, extra)
    log(f"wrote {Path(out)}")
    return Path(out)


def _export_tensorrt(
    trt: Any,
    model: torch.nn.Module,
    model_config: Any,
    metadata: dict[str, Any],
    size: tuple[int, int],
    precision: str,
    mode: str,
    device: str,
    opset: int,
    max_batch: int,
    calibration: str | Path | None,
    calibration_images: int,
    engine_cache: str | Path | None,
    staging: Path,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """ONNX first (kept beside the engine for rebuilds on other GPUs), then the engine."""
    from .graph import trace_window, write_onnx
    from .trt_engine import EngineSpec, build_engine, collect_calibration_windows, onnx_precision

    graph_precision = onnx_precision(trt, precision)
    onnx_path = staging / ARTIFACT_NAMES["onnx"]
    log(f"writing the {graph_precision} ONNX graph for TensorRT {trt.__version__}")
    program = trace_window(model, size, graph_precision)
    write_onnx(program, onnx_path,
               {**metadata, "runtime": "onnx", "precision": graph_precision, "device": "any"},
               opset)
    windows = []
    if precision == "int8":
        windows = collect_calibration_windows(Path(calibration), model_config, mode, size,
                                              calibration_images)
        log(f"calibrating INT8 on {len(windows)} windows")
    opt_batch = typical_window_count(model_config, mode)
    spec = EngineSpec(input_name=INPUT_NAME, input_size=size, precision=precision,
                      opt_batch=opt_batch, max_batch=max(max_batch, opt_batch))
    log("building the TensorRT engine (minutes for MiT-B5)")
    engine, facts = build_engine(
        onnx_path, spec, windows, Path(engine_cache) if engine_cache else None,
        torch.device(device).index or 0,
    )
    (staging / ARTIFACT_NAMES["tensorrt"]).write_bytes(engine)
    return {**facts, "onnx": ARTIFACT_NAMES["onnx"]}
