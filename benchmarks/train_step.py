"""Seconds per iteration and peak memory of the full UDA training step (no dataset needed).

    python -m benchmarks.train_step [--preset gta_hrda] [--iterations 5] [--warmup 2]
        [--set key=value ...]

Runs the real ``uda_step`` + backward + AdamW step of a preset on random tensors (B = 2 source + 2
target crops of the preset's size) in fp32 and bf16, with and without the contrastive losses, and
prints a table with the device named. Targets for ``gta_hrda`` on one H100: ≤ 0.54 s/iteration
(40k iterations in 6 h) and ≤ 24 GB peak with CLUDA. On a CPU use a toy preset
(``--preset toy_hrda``) — the MiT-B5 presets take minutes per step there.
"""

from __future__ import annotations

import argparse
import copy
import gc
import time

import torch

from models.segmentor import build_segmentor
from training.config import get_preset
from training.optim import build_optimizer
from training.overrides import apply_overrides
from training.uda_step import UDABatch, uda_step


def _batch(config, device: torch.device, generator: torch.Generator) -> UDABatch:
    height, width = config.data.crop_size
    size = (config.data.batch_size, 3, height, width)
    labels = torch.randint(0, 19, (config.data.batch_size, height, width), generator=generator)
    # Blocky labels: ClassMix and the contrastive positives behave as on real scenes.
    labels = labels[:, ::32, ::32].repeat_interleave(32, 1).repeat_interleave(32, 2)
    labels = labels[:, :height, :width]
    return UDABatch(torch.rand(size, generator=generator) * 255, labels,
                    torch.rand(size, generator=generator) * 255,
                    torch.ones(config.data.batch_size, height, width)).to(device)


def measure(config, device: torch.device, iterations: int, warmup: int) -> tuple[float, float]:
    """Mean seconds per iteration after ``warmup`` iterations, and peak memory in GB."""
    torch.manual_seed(0)
    student = build_segmentor(config.model).to(device).train()
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    imagenet = copy.deepcopy(student).eval() if config.uda.fd_lambda > 0 else None
    optimizer = build_optimizer(student, config.optim)
    generator = torch.Generator().manual_seed(0)
    batch = _batch(config, device, generator)
    autocast = config.precision == "bf16" and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for iteration in range(warmup + iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            result = uda_step(student, teacher, imagenet, batch, config, iteration + 1, generator)
        if not result.backward_done:
            result.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if iteration >= warmup:
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return sum(times) / len(times), peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gta_hrda")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    base = apply_overrides(get_preset(args.preset), ["pretrained=", *args.overrides])
    print(f"device: {name}; preset {args.preset}; crops {base.data.crop_size}, "
          f"batch {base.data.batch_size}+{base.data.batch_size}")
    print(f"| precision | contrastive | s/iteration | {base.iterations} iterations (h) | peak GB |")
    print("|---|---|---|---|---|")
    for precision in ("fp32", "bf16"):
        for contrast in (True, False):
            config = apply_overrides(base, [f"precision={precision}",
                                            f"contrast.enabled={contrast}"])
            label = f"| {precision} | {'on' if contrast else 'off'} |"
            try:
                seconds, peak = measure(config, device, args.iterations, args.warmup)
            except torch.OutOfMemoryError:
                # One configuration not fitting must not hide the others' numbers.
                total = torch.cuda.get_device_properties(device).total_memory / 1e9
                print(f"{label} out of memory | - | > {total:.0f} |", flush=True)
                continue
            finally:
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(f"{label} {seconds:.3f} | {seconds * base.iterations / 3600:.2f} | {peak:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
