"""Exported window networks as ``forward_fn``s, and :func:`load_runtime` for serving.

Every runner maps a torch tensor N×3×H×W (float RGB 0..255, at the exported size) to N×K×H×W
float32 logits, like ``segmentor.forward``; :class:`FixedSizeForward` adapts other sizes, and
:func:`models.predictor.infer_logits` / :func:`models.inference.slide_inference` do the rest, so
an exported model goes through exactly the inference path of the PyTorch one.

Optional packages are imported when a runner is built: ``onnxruntime`` (``onnxruntime-gpu`` for the
CUDA execution provider) and ``tensorrt``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.classes import IMAGENET_MEAN
from models.config import ModelConfig, model_config_from_dict
from models.inference import ForwardFn, pad_to_size
from models.predictor import Prediction, Predictor

from .artifact import (
    RUNTIME_SUFFIXES,
    BackendUnavailable,
    ExportError,
    metadata_from_strings,
    read_manifest,
)


class FixedSizeForward:
    """Runs a network exported at one size on windows of any size (letterbox).

    Windows of exactly the exported size pass through untouched; that is every window in
    ``hrda`` mode, where the outer slide pads and cuts to the window itself. Other windows are
    letterboxed: shrunk (bilinear, keeping the aspect ratio) only if they do not fit, padded at
    the bottom/right with the ImageNet mean (zero after normalisation, as the model's own
    padding), and the logits are cut back and resized to the window. In ``whole`` mode a
    landscape image rescaled into ``eval_scale`` always fits, so objects keep the scale the model
    was trained at and nothing is stretched; when the model's own padding would reach the same
    exported size (e.g. 1000×2048 → 1024×2048 for HRDA) the result equals PyTorch's exactly.
    Portrait images are shrunk to fit the landscape box.

    Args:
        forward_fn: the fixed-size runner.
        size: (height, width) it was exported at.
        pad_value: padding colour in RGB 0..255.
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        size: Sequence[int],
        pad_value: Sequence[float] = IMAGENET_MEAN,
    ) -> None:
        self.forward_fn = forward_fn
        self.size = (int(size[0]), int(size[1]))
        self.pad_value = tuple(pad_value)

    def __call__(self, image: Tensor) -> Tensor:
        """B×3×h×w float RGB → B×K×h×w logits for any h, w."""
        height, width = image.shape[-2:]
        if (height, width) == self.size:
            return self.forward_fn(image)
        target_height, target_width = self.size
        scale = min(1.0, target_height / height, target_width / width)
        fitted_height = max(1, min(target_height, int(height * scale + 0.5)))
        fitted_width = max(1, min(target_width, int(width * scale + 0.5)))
        fitted = image
        if (fitted_height, fitted_width) != (height, width):
            fitted = F.interpolate(image, size=(fitted_height, fitted_width), mode="bilinear",
                                   align_corners=False)
        padded = pad_to_size(fitted, target_height, target_width, self.pad_value)
        logits = self.forward_fn(padded)[:, :, :fitted_height, :fitted_width]
        if (fitted_height, fitted_width) != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear",
                                   align_corners=False)
        return logits


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


class OnnxRuntimeForward:
    """An ONNX window network run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file (its ``.onnx.data`` beside it).
        device: "cpu" (CPU execution provider) or "cuda[:i]" (CUDA execution provider, needs
            ``onnxruntime-gpu``; inputs and outputs stay on the GPU through I/O binding).
        threads: intra-op threads on CPU (None: ONNX Runtime's default, all cores).

    Attributes:
        metadata: the export metadata stored in the file.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise BackendUnavailable(
                "ONNX Runtime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu "
                "(CUDA; it replaces onnxruntime)"
            ) from None
        self.device = torch.device(device)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: constant-folding notes are not for users
        if threads is not None:
            options.intra_op_num_threads = threads
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise BackendUnavailable(
                    "ONNX Runtime has no CUDA execution provider here (providers: "
                    f"{', '.join(onnxruntime.get_available_providers())}); install "
                    "onnxruntime-gpu instead of onnxruntime, or use device='cpu'"
                )
            providers: list[Any] = [
                ("CUDAExecutionProvider", {"device_id": _cuda_index(self.device)}),
                "CPUExecutionProvider",
            ]
        elif self.device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise ExportError(f"ONNX Runtime runs on cpu or cuda, not {self.device}")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ExportError(f"ONNX Runtime cannot load {path}: {error}") from error
        self.metadata = metadata_from_strings(
            self.session.get_modelmeta().custom_metadata_map, str(path)
        )
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._output_tail = (self.metadata["num_classes"], *self.metadata["input_size"])

    def __call__(self, image: Tensor) -> Tensor:
        """N×3×H×W float RGB → N×K×H×W float32 logits on the runner's device."""
        if self.device.type == "cpu":
            array = image.detach().to("cpu", torch.float32).contiguous().numpy()
            (logits,) = self.session.run([self.output_name], {self.input_name: array})
            return torch.from_numpy(logits)
        return self._run_cuda(image)

    def _run_cuda(self, image: Tensor) -> Tensor:
        image = image.detach().to(self.device, torch.float32).contiguous()
        output = torch.empty((image.shape[0], *self._output_tail), dtype=torch.float32,
                             device=self.device)
        index = _cuda_index(self.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(image.shape),
                           image.data_ptr())
        binding.bind_output(self.output_name, "cuda", index, np.float32, tuple(output.shape),
                            output.data_ptr())
        # ONNX Runtime computes on its own stream: the input must be ready before it starts.
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return output


class AotiForward:
    """An AOTInductor ``.pt2`` window network (needs torch, not the model's Python code).

    Args:
        path: the package.
        device: "cpu" or "cuda[:i]": the device type it was compiled for.

    Attributes:
        metadata: the export metadata stored in the package.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        import torch._inductor

        self.device = torch.device(device)
        device_index = _cuda_index(self.device) if self.device.type == "cuda" else -1
        try:
            self._runner = torch._inductor.aoti_load_package(str(path), device_index=device_index)
        except Exception as error:  # the loader raises RuntimeError/OSError/zip errors alike
            raise ExportError(
                f"cannot load the AOTInductor package {path} on {self.device}: {error}. A "
                "package runs only on the device type (and CPU instruction set or GPU "
                "architecture) it was compiled for"
            ) from error
        strings = self._runner.get_metadata()
        compiled_for = strings.get("AOTI_DEVICE_KEY", self.device.type)
        if compiled_for != self.device.type:
            raise ExportError(
                f"{path} was compiled for {compiled_for}; load it with device={compiled_for!r} "
                f"or re-export with --device {self.device.type}"
            )
        self.metadata = metadata_from_strings(strings, str(path))

    def __call__(self, image: Tensor) -> Tensor:
        """N×3×H×W float RGB → N×K×H×W float32 logits on the runner's device."""
        output = self._runner(image.detach().to(self.device, torch.float32).contiguous())
        return output[0] if isinstance(output, (list, tuple)) else output


class TensorRTForward:
    """A serialized TensorRT engine run on CUDA tensors (``execute_async_v3`` on torch's stream).

    Batches larger than the engine's optimisation profile allows are split.

    Args:
        engine: serialized engine bytes or the ``.engine``/``.plan`` file.
        device: "cuda[:i]".
    """

    def __init__(self, engine: bytes | str | Path, device: str | torch.device = "cuda") -> None:
        from .trt_engine import import_tensorrt, require_cuda

        trt = import_tensorrt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise BackendUnavailable(f"TensorRT engines run on CUDA; got device {self.device}")
        require_cuda(_cuda_index(self.device))
        data = engine if isinstance(engine, bytes) else Path(engine).read_bytes()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise ExportError(
                "TensorRT could not deserialize the engine: it was built for another GPU or "
                f"TensorRT version (this is TensorRT {trt.__version__} on "
                f"{torch.cuda.get_device_name(self.device)}); re-export it here"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ExportError(f"expected one input and one output, got {inputs} and {outputs}")
        self._input, self._output = inputs[0], outputs[0]
        self.max_batch = int(self._engine.get_tensor_profile_shape(self._input, 0)[2][0])
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        self._output_dtype = dtypes[self._engine.get_tensor_dtype(self._output)]
        # One execution context holds the shapes and addresses of one call at a time.
        self._lock = threading.Lock()

    def __call__(self, image: Tensor) -> Tensor:
        """N×3×H×W float RGB → N×K×H×W float32 logits on the GPU (queued on torch's stream)."""
        image = image.detach().to(self.device, torch.float32).contiguous()
        stream = torch.cuda.current_stream(self.device)
        outputs = []
        with self._lock:
            for chunk in image.split(self.max_batch):
                chunk = chunk.contiguous()
                self._context.set_input_shape(self._input, tuple(chunk.shape))
                shape = tuple(self._context.get_tensor_shape(self._output))
                output = torch.empty(shape, dtype=self._output_dtype, device=self.device)
                self._context.set_tensor_address(self._input, chunk.data_ptr())
                self._context.set_tensor_address(self._output, output.data_ptr())
                if not self._context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError("TensorRT execution failed; see its log above")
                outputs.append(output.float())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    @classmethod
    def from_export(cls, path: Path, manifest: dict[str, Any],
                    device: str | torch.device = "cuda") -> "TensorRTForward":
        """Loads an exported engine, rebuilding it from the ONNX beside it on another GPU.

        An engine only runs on the GPU model and TensorRT version it was built with; when
        those differ here, the engine is rebuilt (through the engine cache) from the export's
        ``model.onnx`` with the same settings.
        """
        from .trt_engine import (
            EngineSpec,
            build_engine,
            environment_facts,
            import_tensorrt,
            require_cuda,
        )

        trt = import_tensorrt()
        device = torch.device(device)
        index = _cuda_index(device) if device.type == "cuda" else 0
        require_cuda(index)
        built = manifest.get("tensorrt", {})
        here = environment_facts(trt, index)
        if all(built.get(key) == value for key, value in here.items()):
            return cls(Path(path), device)
        onnx_path = Path(path).parent / built.get("onnx", "model.onnx")
        spec = dict(built.get("spec", {}))
        if not onnx_path.is_file() or not spec:
            raise ExportError(
                f"{path} was built for {built.get('gpu')} / TensorRT {built.get('tensorrt')}, this "
                f"machine has {here['gpu']} / TensorRT {here['tensorrt']}, and the export holds "
                "no ONNX file to rebuild from: re-export the checkpoint here"
            )
        if spec.get("precision") == "int8":
            raise ExportError(
                f"{path} is an INT8 engine for {built.get('gpu')}; rebuilding needs the "
                "calibration images: re-export here with --precision int8 --calibration DIR"
            )
        spec["input_size"] = tuple(spec["input_size"])
        engine, _ = build_engine(onnx_path, EngineSpec(**spec), device_index=index)
        return cls(engine, device)


class ExportedPredictor(Predictor):
    """A :class:`Predictor` over an exported runtime, refusing modes the export cannot serve.

    An HRDA model exported in ``hrda`` mode holds only the 1024² window network; running it in
    ``whole`` mode would be a different computation, so it is an error rather than a silent
    substitute (re-export with ``--mode whole`` for that).

    Args:
        modes: the inference modes the export reproduces.
        export_metadata: everything the export stored.
        Others as :class:`Predictor`.
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        model_config: ModelConfig,
        device: str | torch.device,
        metadata: dict[str, Any],
        window_batch: int | None,
        modes: Sequence[str],
        export_metadata: dict[str, Any],
    ) -> None:
        super().__init__(forward_fn, model_config, device=device, metadata=metadata,
                         window_batch=window_batch)
        self.modes = tuple(modes)
        self.export_metadata = export_metadata

    def predict(
        self,
        image: np.ndarray,
        mode: str = "hrda",
        resize: bool = True,
        return_probabilities: bool = False,
    ) -> Prediction:
        """As :meth:`Predictor.predict`; raises ValueError for a mode the export lacks."""
        if mode not in self.modes:
            raise ValueError(
                f"this export serves mode {' or '.join(self.modes)}, not {mode!r}; re-export the "
                f"checkpoint with --mode {mode}"
            )
        return super().predict(image, mode, resize, return_probabilities)


def load_runtime(
    path: str | Path, device: str | torch.device = "cpu", window_batch: int | None = None
) -> Predictor:
    """A predictor over a checkpoint or an exported model, picked by file type.

    Args:
        path: ``.safetensors`` (our checkpoint, run by PyTorch), ``.onnx`` (ONNX Runtime),
            ``.pt2`` (AOTInductor), ``.engine``/``.plan`` (TensorRT; its folder's
            ``export.json`` is read), or an export folder (its ``export.json`` names the file).
        device: "cpu" or "cuda[:i]".
        window_batch: windows per runtime call (None: all windows of an image at once).

    Returns:
        A :class:`Predictor` whose ``metadata`` has ``name``, ``version``, ``sha256`` (of the
        source checkpoint, 16 hex digits) and ``checkpoint``, plus ``runtime``, ``precision``
        and ``export_mode`` for exports.

    Raises:
        ExportError: missing file, unknown type, or a file without cluda export metadata.
        BackendUnavailable: the runtime (onnxruntime, tensorrt, CUDA) is not installed/usable.
        models.checkpoint.CheckpointError: a bad ``.safetensors`` checkpoint.
    """
    path = Path(path)
    manifest: dict[str, Any] | None = None
    if path.is_dir():
        manifest = read_manifest(path)
        path = path / manifest["artifact"]
    if not path.is_file():
        raise ExportError(f"{path} does not exist")
    suffix = path.suffix.lower()
    runner: Any
    if suffix == ".safetensors":
        return Predictor.from_checkpoint(path, device)
    if suffix == ".onnx":
        runner = OnnxRuntimeForward(path, device)
        metadata = runner.metadata
    elif suffix == ".pt2":
        runner = AotiForward(path, device)
        metadata = runner.metadata
    elif suffix in (".engine", ".plan"):
        metadata = manifest if manifest is not None else read_manifest(path.parent)
        runner = TensorRTForward.from_export(path, metadata, device)
    else:
        raise ExportError(
            f"unknown model file type {suffix!r} ({path}); expected one of "
            f"{', '.join(RUNTIME_SUFFIXES)} or an export folder"
        )
    source = metadata["checkpoint"]
    facts = {
        "name": source.get("name", path.stem),
        "version": str(source.get("version", "")),
        "sha256": str(source.get("sha256", ""))[:16],
        "checkpoint": source.get("file", ""),
        "runtime": metadata["runtime"],
        "precision": metadata["precision"],
        "export_mode": metadata["mode"],
    }
    return ExportedPredictor(
        FixedSizeForward(runner, metadata["input_size"]),
        model_config_from_dict(metadata["model_config"]),
        device=device,
        metadata=facts,
        window_batch=window_batch,
        modes=metadata["modes"],
        export_metadata=metadata,
    )
