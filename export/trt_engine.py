"""TensorRT engines built from the exported ONNX window network, with an engine cache.

Precision: SegFormer engines break in plain fp16 (LayerNorm statistics and attention softmax
overflow), so LayerNorm and softmax stay in float32:

- TensorRT 10 (weakly typed networks): the float32 ONNX graph is built with ``BuilderFlag.FP16``,
  every normalisation and softmax layer gets ``precision = float32`` and float32 outputs, and
  ``OBEY_PRECISION_CONSTRAINTS`` makes the builder honour them. INT8 adds ``BuilderFlag.INT8``
  with an entropy calibrator fed with windows of target-domain images.
- TensorRT 11 removed those flags (networks are always strongly typed): the engine is built from
  the fp16 ONNX export, whose graph already holds LayerNorm, softmax and attention in float32
  (:class:`export.graph.Float32Islands`). INT8 calibration no longer exists there.

Engines are specific to a GPU model and a TensorRT version; the cache keys them by GPU name,
compute capability, TensorRT version, the ONNX file's hash and the build settings.

``tensorrt`` is imported lazily: nothing here runs without it and a CUDA GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.checkpoint import atomic_write_bytes
from models.config import ModelConfig
from models.predictor import as_rgb_array, infer_logits

from .artifact import BackendUnavailable, ExportError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def import_tensorrt() -> ModuleType:
    """Imports ``tensorrt`` or raises :class:`BackendUnavailable` saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise BackendUnavailable(
            f"TensorRT is not installed ({error}). Install it on a machine with an NVIDIA GPU "
            "(pip install 'cluda[tensorrt]'), or export with --format aoti (runs on CUDA with "
            "torch alone) or --format onnx"
        ) from None
    return tensorrt


def require_cuda(device_index: int = 0) -> None:
    """Raises :class:`BackendUnavailable` unless torch sees CUDA GPU ``device_index``."""
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            "TensorRT needs an NVIDIA GPU, and torch sees none (torch.cuda.is_available() is "
            "False)"
        )
    if device_index >= torch.cuda.device_count():
        raise BackendUnavailable(
            f"CUDA device {device_index} does not exist ({torch.cuda.device_count()} visible)"
        )


_INT8_REMOVED = (
    "TensorRT {version} removed INT8 calibration (implicit quantization); use TensorRT 10 for "
    "--precision int8, or fp16"
)


def weakly_typed(trt: ModuleType) -> bool:
    """True for TensorRT ≤ 10, whose builder takes precision flags (``BuilderFlag.FP16``)."""
    return hasattr(trt.BuilderFlag, "FP16")


def onnx_precision(trt: ModuleType, precision: str) -> str:
    """Precision of the ONNX graph an engine of ``precision`` is built from (see module doc)."""
    if precision == "fp32" or weakly_typed(trt):
        return "fp32"
    if precision == "int8":
        raise BackendUnavailable(_INT8_REMOVED.format(version=trt.__version__))
    return "fp16"


def environment_facts(trt: ModuleType, device_index: int = 0) -> dict[str, str]:
    """GPU name, compute capability and TensorRT version: what an engine is specific to."""
    major, minor = torch.cuda.get_device_capability(device_index)
    return {
        "gpu": torch.cuda.get_device_name(device_index),
        "compute_capability": f"{major}.{minor}",
        "tensorrt": str(trt.__version__),
    }


def onnx_digest(path: Path) -> str:
    """SHA-256 over an ONNX file and its external data file (``<name>.data``) if present."""
    digest = hashlib.sha256()
    for file in (Path(path), Path(f"{path}.data")):
        if file.is_file():
            with open(file, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$CLUDA_CACHE_DIR/tensorrt``, else ``$XDG_CACHE_HOME`` or ``~/.cache``/cluda/tensorrt."""
    root = os.environ.get("CLUDA_CACHE_DIR")
    if root:
        return Path(root) / "tensorrt"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cluda" / "tensorrt"


@dataclass(frozen=True)
class EngineSpec:
    """Build settings of one engine.

    Attributes:
        input_name: the ONNX input (N×3×H×W float32).
        input_size: (H, W) of the window.
        precision: "fp32", "fp16" or "int8".
        opt_batch: batch size the kernels are tuned for (windows per typical frame).
        max_batch: largest batch the engine accepts; the runner splits larger ones.
        workspace_bytes: builder scratch memory limit.
    """

    input_name: str
    input_size: tuple[int, int]
    precision: str
    opt_batch: int
    max_batch: int
    workspace_bytes: int = 4 << 30


def keep_layers_in_float32(trt: ModuleType, network: Any) -> int:
    """Pins every normalisation (LayerNorm) and softmax layer to float32; returns how many."""
    kept = 0
    float32_types = (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX)
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in float32_types:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            kept += 1
    return kept


def collect_calibration_windows(
    folder: Path, model_config: ModelConfig, mode: str, input_size: tuple[int, int],
    max_images: int,
) -> list[Tensor]:
    """Windows exactly as inference feeds them to the engine, from a folder of images.

    Each image goes through :func:`models.predictor.infer_logits` (the resize policy, the outer
    slide, the letterbox of :class:`export.runtime.FixedSizeForward`) with a forward function
    that records its input, so calibration sees the runtime's input distribution.

    Args:
        folder: target-domain images (png, jpg, webp, bmp), read in sorted order.
        model_config: the exported model's config.
        mode: the export mode.
        input_size: (H, W) of the exported window.
        max_images: how many images to read at most.

    Returns:
        1×3×H×W windows (RGB 0..255), kept in float16 to halve the memory of hundreds of
        1024² windows (exact for integer pixels, within 0.06 for resampled ones).

    Raises:
        ExportError: the folder holds no readable image.
    """
    from PIL import Image, UnidentifiedImageError

    from .runtime import FixedSizeForward

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"calibration folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} image")
    windows: list[Tensor] = []

    def record(batch: Tensor) -> Tensor:
        windows.extend(batch.to(torch.float16).split(1))
        return batch.new_zeros((batch.shape[0], model_config.num_classes, *batch.shape[-2:]))

    recorder = FixedSizeForward(record, input_size)
    for file in files[:max_images]:
        try:
            with Image.open(file) as image:
                rgb = as_rgb_array(np.array(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            raise ExportError(f"cannot read calibration image {file}: {error}") from error
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
        infer_logits(recorder, tensor, model_config, mode)
    return windows


def _calibrator(trt: ModuleType, windows: Sequence[Tensor], batch_size: int, cache: Path,
                device: torch.device) -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds ``windows`` in batches of ``batch_size``."""

    class WindowCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            usable = len(windows) - len(windows) % batch_size
            self._batches: Iterator[Tensor] = (
                torch.cat(list(windows[i : i + batch_size]))
                for i in range(0, usable, batch_size)
            )
            # TensorRT reads the device memory after get_batch returns: keep the batch alive.
            self._current: Tensor | None = None

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._current = batch.to(device, torch.float32).contiguous()
            return [int(self._current.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            try:
                atomic_write_bytes(cache, bytes(data))
            except OSError:
                pass  # a read-only cache only means calibrating again next time

    return WindowCalibrator()


def _build(
    trt: ModuleType,
    onnx_path: Path,
    spec: EngineSpec,
    calibration: Sequence[Tensor],
    calibration_cache: Path,
    device_index: int,
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:
        # TensorRT 8/9 default to implicit batch; the ONNX parser needs explicit batch.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) so that the external weights beside the file are found.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    height, width = spec.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(spec.input_name, (1, 3, height, width), (spec.opt_batch, 3, height, width),
                      (spec.max_batch, 3, height, width))
    config.add_optimization_profile(profile)

    weak = weakly_typed(trt)
    if spec.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # A float32 engine is the exact reference; TF32 matmuls would cost 3 decimal digits.
        config.clear_flag(trt.BuilderFlag.TF32)
    if spec.precision in ("fp16", "int8") and weak:
        config.set_flag(trt.BuilderFlag.FP16)
        if keep_layers_in_float32(trt, network) == 0:
            raise ExportError(
                f"{onnx_path} has no LayerNormalization/Softmax layer to keep in float32; "
                "export it with opset >= 17"
            )
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if spec.precision == "int8":
        batch = min(spec.opt_batch, len(calibration))
        calibration_profile = builder.create_optimization_profile()
        shape = (batch, 3, height, width)
        calibration_profile.set_shape(spec.input_name, shape, shape, shape)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _calibrator(
            trt, calibration, batch, calibration_cache, torch.device("cuda", device_index)
        )
        config.set_calibration_profile(calibration_profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT could not build the engine; its log above says why")
    return bytes(serialized)


def build_engine(
    onnx_path: Path,
    spec: EngineSpec,
    calibration: Sequence[Tensor] = (),
    cache_dir: Path | None = None,
    device_index: int = 0,
) -> tuple[bytes, dict[str, Any]]:
    """Builds (or takes from the cache) the serialized engine of an ONNX window network.

    Args:
        onnx_path: the exported ONNX file (float32 for TensorRT 10, fp16 for 11: see
            :func:`onnx_precision`).
        spec: build settings.
        calibration: 1×3×H×W windows for INT8 (see :func:`collect_calibration_windows`).
        cache_dir: engine cache (default :func:`default_cache_dir`).
        device_index: CUDA device the engine is built for.

    Returns:
        (serialized engine, facts: GPU, compute capability, TensorRT version, ONNX hash, spec,
        cache key).

    Raises:
        BackendUnavailable: no TensorRT or no GPU.
        ExportError: parse or build failure, INT8 without calibration images.
    """
    trt = import_tensorrt()
    require_cuda(device_index)
    if spec.precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"TensorRT precision must be fp32, fp16 or int8, got {spec.precision!r}")
    if spec.precision == "int8" and not weakly_typed(trt):
        raise BackendUnavailable(_INT8_REMOVED.format(version=trt.__version__))
    if spec.precision == "int8" and not calibration:
        raise ExportError("--precision int8 needs calibration images (--calibration DIR)")
    calibration_digest = ""
    if spec.precision == "int8":
        digest = hashlib.sha256()
        for window in calibration:
            digest.update(window.to(torch.float32).contiguous().numpy().tobytes())
        calibration_digest = digest.hexdigest()
    facts: dict[str, Any] = {
        **environment_facts(trt, device_index),
        "onnx_sha256": onnx_digest(onnx_path),
        "spec": dataclasses.asdict(spec),
        "calibration_sha256": calibration_digest,
    }
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]
    facts["cache_key"] = key
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{key}.engine"
    if cached.is_file():
        return cached.read_bytes(), facts
    with torch.cuda.device(device_index):
        engine = _build(trt, onnx_path, spec, calibration, cache_dir / f"{key}.calibration",
                        device_index)
    try:
        atomic_write_bytes(cached, engine)
        atomic_write_bytes(cache_dir / f"{key}.json",
                           json.dumps(facts, indent=2, sort_keys=True).encode())
    except OSError:
        # A read-only cache only costs a rebuild next time; the engine itself is fine.
        pass
    return engine, facts
