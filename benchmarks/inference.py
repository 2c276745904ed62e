"""Latency and throughput of one frame through every available inference backend.

    python benchmarks/inference.py [--arch cluda_hrda_mit_b5] [--backbone NAME]
        [--frame 1024 2048] [--modes hrda whole] [--device cpu|cuda] [--batch 1]
        [--backends pytorch-fp32 pytorch-bf16 compile-fp32 aoti-fp32 onnx-fp32 tensorrt-fp16 ...]
        [--repeats 5] [--warmup 1] [--threads N]

Every backend runs the same path as serving: :func:`models.predictor.infer_logits` over a
B×3×H×W frame, with the window network as PyTorch eager, ``torch.compile``, an AOTInductor
package, ONNX Runtime or a TensorRT engine (the last three made by :mod:`export` in a temporary
folder). Weights are random (speed does not depend on them); the model's ``eval_scale`` is set to
the frame, so the frame is processed at its own size (1024×2048 is what HRDA evaluates on
Cityscapes). Backends that cannot run here (TensorRT without a GPU, ONNX Runtime without its
CUDA provider on a GPU) are listed as skipped. Prints one table with the device named.

Small CPU run: ``python benchmarks/inference.py --arch hrda_mit_test --frame 256 512``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from export.artifact import BackendUnavailable, ExportError
from export.exporter import export_checkpoint
from export.runtime import FixedSizeForward, OnnxRuntimeForward, load_runtime
from models.checkpoint import save_segmentor
from models.config import ModelConfig, get_model_config, list_model_configs
from models.inference import ForwardFn
from models.predictor import infer_logits
from models.segmentor import build_segmentor

CPU_BACKENDS = ("pytorch-fp32", "pytorch-bf16", "compile-fp32", "aoti-fp32", "onnx-fp32",
                "tensorrt-fp16")
CUDA_BACKENDS = ("pytorch-fp32", "pytorch-bf16", "compile-bf16", "aoti-bf16", "aoti-fp16",
                 "onnx-fp32", "tensorrt-fp16")
BACKENDS = ("pytorch-fp32", "pytorch-bf16", "pytorch-fp16", "compile-fp32", "compile-bf16",
            "compile-fp16", "aoti-fp32", "aoti-bf16", "aoti-fp16", "onnx-fp32", "onnx-fp16",
            "tensorrt-fp16", "tensorrt-fp32")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Row:
    """One measured (or skipped) backend in one mode."""

    backend: str
    mode: str
    setup_s: float = 0.0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    note: str = ""


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and the thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_forward(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> ForwardFn:
    """The eager model under autocast (weights stay fp32, matmuls/convs run in ``dtype``)."""

    def forward(windows: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=dtype):
            return model(windows).float()

    return forward


def make_forward(
    backend: str, model: torch.nn.Module, checkpoint: Path, mode: str, device: torch.device,
    folder: Path,
) -> ForwardFn:
    """Builds the window network of one backend (exports go into ``folder``)."""
    kind, precision = backend.split("-")
    if kind == "pytorch":
        return model if precision == "fp32" else autocast_forward(model, device,
                                                                  AUTOCAST[precision])
    if kind == "compile":
        compiled = torch.compile(model)
        return compiled if precision == "fp32" else autocast_forward(compiled, device,
                                                                     AUTOCAST[precision])
    if kind == "onnx":
        import onnxruntime

        if device.type == "cuda" and "CUDAExecutionProvider" not in (
            onnxruntime.get_available_providers()
        ):
            raise BackendUnavailable("onnxruntime has no CUDA provider (needs onnxruntime-gpu)")
        out = export_checkpoint(checkpoint, "onnx", folder / f"{backend}-{mode}",
                                precision=precision, mode=mode)
        # As many threads as PyTorch uses, so that the CPU comparison is like for like.
        runner = OnnxRuntimeForward(out / "model.onnx", device, threads=torch.get_num_threads())
        return FixedSizeForward(runner, runner.metadata["input_size"])
    out = export_checkpoint(checkpoint, kind, folder / f"{backend}-{mode}", precision=precision,
                            mode=mode, device=device.type)
    return load_runtime(out, device=device).forward_fn


def measure(
    forward: ForwardFn, frame: Tensor, config: ModelConfig, mode: str, device: torch.device,
    warmup: int, repeats: int,
) -> tuple[float, list[float]]:
    """(first-call seconds, per-repeat seconds) of ``infer_logits`` on ``frame``."""
    timings = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            infer_logits(forward, frame, config, mode)
            synchronize(device)
            timings.append(time.perf_counter() - start)
    return timings[0], timings[warmup:]


def run(args: argparse.Namespace) -> tuple[list[Row], str]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = get_model_config(args.arch)
    height, width = args.frame
    config = dataclasses.replace(config, eval_scale=(max(height, width), min(height, width)))
    if args.backbone:
        config = dataclasses.replace(config, backbone=args.backbone)
    torch.manual_seed(0)
    model = build_segmentor(config).eval().to(device)
    frame = torch.randint(0, 256, (args.batch, 3, height, width)).float()
    frame = frame.to(device)
    backends = args.backends or (CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cluda-bench-") as tmp:
        folder = Path(tmp)
        checkpoint = folder / "random.safetensors"
        save_segmentor(checkpoint, model, config,
                       extra_metadata={"name": f"{args.arch} (random weights)"})
        for mode in args.modes:
            for backend in backends:
                row = Row(backend, mode)
                rows.append(row)
                print(f"[{mode}] {backend} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                try:
                    forward = make_forward(backend, model, checkpoint, mode, device, folder)
                    row.setup_s = time.perf_counter() - start
                    first, row.latencies_s = measure(forward, frame, config, mode, device,
                                                     args.warmup, args.repeats)
                    if backend.startswith("compile"):
                        row.setup_s += first  # torch.compile compiles on the first call
                except (BackendUnavailable, ExportError, ImportError) as error:
                    row.note = f"skipped: {str(error).splitlines()[0][:90]}"
                except RuntimeError as error:
                    row.note = f"failed: {str(error).splitlines()[0][:90]}"
    title = (f"{args.arch}{f' ({args.backbone})' if args.backbone else ''}, frame "
             f"{args.batch}×3×{height}×{width}, window {config.inference_window or 'whole'}, "
             f"device: {device_name(device)}, torch {torch.__version__}")
    return rows, title


def format_table(rows: list[Row], title: str, batch: int) -> str:
    lines = [title, "",
             "| mode | backend | latency median (ms) | min (ms) | frames/s | vs pytorch-fp32 | "
             "setup (s) |",
             "|---|---|---|---|---|---|---|"]
    baseline = {row.mode: statistics.median(row.latencies_s) for row in rows
                if row.backend == "pytorch-fp32" and row.latencies_s}
    for row in rows:
        if not row.latencies_s:
            lines.append(f"| {row.mode} | {row.backend} | {row.note} | | | | |")
            continue
        median = statistics.median(row.latencies_s)
        speedup = f"{baseline[row.mode] / median:.2f}×" if row.mode in baseline else ""
        frames = batch / median
        lines.append(
            f"| {row.mode} | {row.backend} | {median * 1e3:.1f} | {min(row.latencies_s) * 1e3:.1f}"
            f" | {frames:.2f} | {speedup} | {row.setup_s:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="cluda_hrda_mit_b5", choices=list_model_configs())
    parser.add_argument("--backbone", help="replace the encoder (e.g. mit_b0 for a small run)")
    parser.add_argument("--frame", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    parser.add_argument("--modes", nargs="+", default=["hrda", "whole"], choices=("hrda", "whole"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS)
    parser.add_argument("--batch", type=int, default=1, help="frames per call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    args = parser.parse_args(argv)
    rows, title = run(args)
    print(format_table(rows, title, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
