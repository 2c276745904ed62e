"""Peak memory and time of the CLUDA contrastive loss, dense vs row-blockwise, forward + backward.

    python -m benchmarks.contrastive_memory [--grids 65 129] [--variant paper|release]
        [--block-size 512] [--channels 256] [--device cpu|cuda] [--max-dense-gib 8]

Each case (grid, dense/blockwise) runs in a fresh subprocess so that allocator caches of one case
cannot hide the peak of the next. On CUDA the peak is ``torch.cuda.max_memory_allocated`` above
the inputs; on CPU (Linux) it is the rise of the process's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` just before the loss) above the resident set
at that moment, with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_``) so that freed
tensors go back to the system instead of inflating the resident set.
The batch holds 2 images, so N = 2·grid² anchors (8450 at 65×65, 33282 at 129×129). Dense cases
whose estimated peak exceeds ``--max-dense-gib`` are skipped and the estimate is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# float32 N×N buffers alive at the dense multi-resolution peak (measured: 10.1 at N = 8450).
DENSE_MATRICES_ESTIMATE = 10


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def run_case(grid: int, block_size: int | None, variant: str, channels: int, device: str) -> dict:
    """Build one HRDA-sized input, run forward + backward once, return peak MiB and seconds."""
    import torch

    from models.classes import THING_CLASSES
    from training.contrastive import multi_resolution_contrastive_loss, release_multi_resolution_cl

    def make_inputs(size: int) -> tuple:
        generator = torch.Generator().manual_seed(0)
        shape = (2, channels, size, size)
        lr = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
        hr = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
        weight = torch.rand(2, size, size, generator=generator).to(device).requires_grad_(True)
        labels = torch.randint(0, 19, (2, size, size), generator=generator).to(device)
        crop = torch.zeros(2, size, size, dtype=torch.bool, device=device)
        crop[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
        target = torch.rand(2, size, size, generator=generator).to(device) > 0.5
        return lr, hr, weight, labels, crop, target

    def loss_fn(lr, hr, weight, labels, crop, target, rows_per_block):
        if variant == "paper":
            return multi_resolution_contrastive_loss(
                lr,
                hr,
                labels,
                weight,
                crop,
                target_mask=target,
                confidence=0.5,
                block_size=rows_per_block,
            )
        return release_multi_resolution_cl(
            lr,
            hr,
            labels,
            weight,
            crop * labels,
            pseudo_weight=weight.detach(),
            thing_classes=THING_CLASSES,
            block_size=rows_per_block,
        )

    # A small warm-up run loads kernels and thread pools, so that their one-time memory is not
    # counted as the loss's peak.
    loss_fn(*make_inputs(8), rows_per_block=None if block_size is None else 16).backward()
    inputs = make_inputs(grid)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        baseline = _resident_kib("VmRSS") * 1024
    start = time.perf_counter()
    loss = loss_fn(*inputs, rows_per_block=block_size)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = _resident_kib("VmHWM") * 1024 - baseline
    seconds = time.perf_counter() - start
    return {"peak_mib": peak / 2**20, "seconds": seconds, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grids", type=int, nargs="+", default=[65, 129])
    parser.add_argument("--variant", choices=["paper", "release"], default="paper")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--max-dense-gib", type=float, default=8.0)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case is not None:
        grid, block_size = json.loads(args.case)
        print(json.dumps(run_case(grid, block_size, args.variant, args.channels, args.device)))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(
        f"multi-resolution {args.variant} contrastive loss, forward + backward, "
        f"B=2, C={args.channels}, {name}"
    )
    print(f"{'grid':>6} {'N':>7} {'mode':>14} {'peak MiB':>10} {'seconds':>9} {'loss':>10}")
    for grid in args.grids:
        num_cells = 2 * grid * grid
        dense_gib = DENSE_MATRICES_ESTIMATE * num_cells**2 * 4 / 2**30
        results = {}
        for block_size in (None, args.block_size):
            mode = "dense" if block_size is None else f"block {block_size}"
            if block_size is None and dense_gib > args.max_dense_gib:
                matrix_gib = num_cells**2 * 4 / 2**30
                print(
                    f"{grid:>6} {num_cells:>7} {mode:>14}   skipped: ~{dense_gib:.0f} GiB "
                    f"estimated ({matrix_gib:.1f} GiB per N×N matrix)"
                )
                continue
            command = [
                sys.executable,
                "-m",
                "benchmarks.contrastive_memory",
                "--case",
                json.dumps([grid, block_size]),
                "--variant",
                args.variant,
                "--channels",
                str(args.channels),
                "--device",
                device,
            ]
            environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
            output = subprocess.run(
                command, check=True, capture_output=True, text=True, env=environment
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            results[mode] = result
            print(
                f"{grid:>6} {num_cells:>7} {mode:>14} {result['peak_mib']:>10.1f} "
                f"{result['seconds']:>9.2f} {result['loss']:>10.6f}"
            )
        if len(results) == 2:
            dense, blocked = results.values()
            memory_ratio = blocked["peak_mib"] / dense["peak_mib"]
            time_ratio = blocked["seconds"] / dense["seconds"]
            print(f"{'':>6} {'':>7} {'block/dense':>14} {memory_ratio:>10.3f} {time_ratio:>9.2f}")


if __name__ == "__main__":
    main()
