"""The exported graph: a segmentor's window network at one input size, with a dynamic batch.

:func:`trace_window` turns ``segmentor.forward`` into a ``torch.export`` program (float32 RGB
0..255 in, float32 logits out, whatever precision runs inside); :func:`write_onnx` and
:func:`write_aoti` serialise that program.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .artifact import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    BackendUnavailable,
    ExportError,
    metadata_to_strings,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Windows per call allowed by the traced program; far above any real slide (HRDA on 1024×2048
# sends 3 windows per image).
MAX_TRACED_BATCH = 4096


class Float32Islands(TorchFunctionMode):
    """While tracing a half-precision model, runs LayerNorm, softmax and attention in float32.

    SegFormer activations grow large enough in deep MiT blocks that fp16 LayerNorm statistics and
    attention softmax overflow or lose the result (the known failure of plain-fp16 SegFormer
    engines); keeping these ops in float32 costs little since they are memory-bound. Inputs are
    cast up and the result cast back, so the exported graph carries explicit casts that ONNX
    Runtime and strongly typed TensorRT networks honour.
    """

    FLOAT32_FUNCTIONS = frozenset({
        F.layer_norm, F.scaled_dot_product_attention, F.softmax, torch.softmax, Tensor.softmax,
    })

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in self.FLOAT32_FUNCTIONS:
            low = next((a.dtype for a in args if isinstance(a, Tensor)
                        and a.dtype in (torch.float16, torch.bfloat16)), None)
            if low is not None:
                def up(value: Any) -> Any:
                    if isinstance(value, Tensor) and value.dtype == low:
                        return value.float()
                    return value

                result = func(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
                return result.to(low)
        return func(*args, **kwargs)


class WindowNetwork(nn.Module):
    """The exported interface around a segmentor: float32 in and out at any inner precision.

    Args:
        segmentor: a :class:`models.segmentor.Segmentor` (``forward`` is the window network).
        dtype: precision of the weights and activations inside.
    """

    def __init__(self, segmentor: nn.Module, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype
        self.segmentor = segmentor

    def forward(self, image: Tensor) -> Tensor:
        """N×3×H×W float32 RGB in 0..255 → N×K×H×W float32 logits."""
        return self.segmentor(image.to(self.dtype)).float()


def trace_window(
    segmentor: nn.Module,
    input_size: tuple[int, int],
    precision: str = "fp32",
    device: str | torch.device = "cpu",
) -> torch.export.ExportedProgram:
    """``torch.export`` of the window network at ``input_size`` with a dynamic batch dimension.

    The sample has batch 2: a batch-1 sample lets the tracer treat the batch as the constant 1
    (broadcasting rules specialise on it), which silently fixes the exported batch size.

    Args:
        segmentor: the model (put in eval mode on ``device``; fp16/bf16 cast a copy).
        input_size: (height, width) of every window the graph will see.
        precision: "fp32", "fp16" or "bf16" inside the graph.
        device: where tracing happens (AOTInductor compiles for this device).

    Returns:
        The exported program, input ``image`` N×3×H×W float32, output N×K×H×W float32.
    """
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
    dtype = DTYPES[precision]
    model = segmentor if dtype == torch.float32 else copy.deepcopy(segmentor).to(dtype)
    window = WindowNetwork(model, dtype).to(device).eval()
    height, width = input_size
    sample = torch.rand(2, 3, height, width, device=device) * 255
    batch = torch.export.Dim("batch", min=1, max=MAX_TRACED_BATCH)
    islands = Float32Islands() if dtype != torch.float32 else contextlib.nullcontext()
    with torch.no_grad(), islands:
        return torch.export.export(
            window, (sample,), dynamic_shapes={"image": {0: batch}}, strict=False
        )


def write_onnx(
    program: torch.export.ExportedProgram,
    path: Path,
    metadata: Mapping[str, Any],
    opset: int = ONNX_OPSET,
) -> Path:
    """Converts an exported window program to ONNX, stores the metadata and checks the file.

    Simplification: constant folding, dead-node removal and common-subexpression elimination
    (:func:`_simplify`), which cut the exported HRDA window from ~4200 to ~1300 nodes and its
    ONNX Runtime latency by a third. The exporter's full optimiser (``optimize=True``, which adds
    onnxscript's pattern rewriter) removed only ~10 % more nodes, with no measurable ONNX
    Runtime speed-up, at ten times the export time (minutes for the unrolled HRDA detail
    slide), so it is not used. Weights go to ``<name>.data`` beside the file (external data).

    Args:
        program: from :func:`trace_window`.
        path: destination ``.onnx`` file.
        metadata: stored in ``metadata_props``, one JSON string per key.
        opset: ONNX opset; at least 17 so that LayerNorm stays one ``LayerNormalization`` node.

    Returns:
        ``path``.
    """
    if opset < 17:
        raise ExportError(f"opset must be at least 17 (one LayerNormalization node), got {opset}")
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with our message)
    except ImportError as error:
        raise BackendUnavailable(
            f"ONNX export needs onnx and onnxscript ({error}): pip install 'cluda[export]'"
        ) from error
    onnx_program = torch.onnx.export(
        program, (), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], optimize=False, verbose=False,
    )
    _simplify(onnx_program.model)
    onnx_program.model.metadata_props.update(metadata_to_strings(metadata))
    onnx_program.save(str(path), external_data=True)
    onnx.checker.check_model(str(path))
    return Path(path)


def _simplify(model: Any) -> None:
    """Constant folding, dead-node removal, CSE and initializer clean-up on an ``onnx_ir`` model."""
    import onnx_ir
    import onnx_ir.passes.common as common
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model)
    onnx_ir.passes.Sequential(
        common.RemoveUnusedNodesPass(),
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
    )(model)


def write_aoti(
    program: torch.export.ExportedProgram, path: Path, metadata: Mapping[str, Any]
) -> Path:
    """Compiles an exported window program into an AOTInductor ``.pt2`` package.

    The package holds the compiled kernels and the weights, and the metadata (one JSON string
    per key, read back by ``aoti_load_package(...).get_metadata()``). It runs on the device
    the program was traced on, with torch but without the model's Python code.

    Returns:
        ``path``.
    """
    import torch._inductor

    torch._inductor.aoti_compile_and_package(
        program, package_path=str(path),
        inductor_configs={"aot_inductor.metadata": metadata_to_strings(metadata)},
    )
    return Path(path)
