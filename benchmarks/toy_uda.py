"""Target mIoU of the toy presets on the synthetic dataset, mean ± std over seeds.

    python -m benchmarks.toy_uda [--seeds 0 1 2] [--presets ...] [--jobs 2] [--set key=value ...]

Trains each preset once per seed with ``python -m training.run`` (the same command a user runs,
one subprocess per run, its output in ``<work-dir>/<preset>_s<seed>/train.log``) and prints a
Markdown table. Source-only is the lower bound, the target-labelled oracle the upper bound; the
UDA presets must land clearly above source-only.

``--jobs N`` trains N runs at once. On a CPU each run then gets ``cores // N`` OpenMP threads
minus its data worker (at least one), because oversubscribed OpenMP threads slow a step down by
an order of magnitude; set ``OMP_NUM_THREADS`` yourself to override.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from training.data.synthetic import ensure_synthetic_dataset

DEFAULT_PRESETS = ("toy_source_only", "toy_daformer_nocl", "toy_daformer", "toy_hrda_nocl",
                   "toy_hrda", "toy_target_only")


@dataclass(frozen=True)
class Result:
    preset: str
    seed: int
    miou19: float
    seconds: float


def train_one(preset: str, seed: int, data_root: str, work_root: Path, overrides: list[str],
              threads: int | None) -> Result:
    """Runs one training subprocess and reads its final target mIoU19 (in %)."""
    work_dir = work_root / f"{preset}_s{seed}"
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = [f"seed={seed}", "debug_image_interval=0", *overrides]
    command = [sys.executable, "-m", "training.run", preset, "--data-root", data_root,
               "--work-dir", str(work_dir)]
    command += [part for item in settings for part in ("--set", item)]
    env = dict(os.environ)
    if threads is not None and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(threads)
    log_path = work_dir / "train.log"
    started = time.perf_counter()
    with log_path.open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"{preset} seed {seed} failed (exit {code}); log {log_path}:\n"
                           + "\n".join(tail))
    miou = 100 * json.loads((work_dir / "final_eval.json").read_text())["miou19"]
    print(f"{preset} seed {seed}: target mIoU19 {miou:.2f} in {seconds:.0f} s", flush=True)
    return Result(preset, seed, miou, seconds)


def format_table(results: list[Result], presets: list[str]) -> str:
    """Markdown table: one row per preset, mean ± sample std over its seeds."""
    lines = ["| preset | target mIoU19 (mean ± std) | per seed | s/run |", "|---|---|---|---|"]
    for preset in presets:
        runs = sorted((r for r in results if r.preset == preset), key=lambda r: r.seed)
        scores = [r.miou19 for r in runs]
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        per_seed = ", ".join(f"{s:.1f}" for s in scores)
        seconds = statistics.mean(r.seconds for r in runs)
        lines.append(f"| {preset} | {statistics.mean(scores):.1f} ± {spread:.1f} | {per_seed} "
                     f"| {seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--work-dir", default="work_dirs/toy_benchmark")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override applied to every run")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    # Generate the dataset once here, not concurrently in several runs.
    ensure_synthetic_dataset(Path(args.data_root) / "synthetic")
    threads = None
    if args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs - 1)
    # HRDA runs are the longest: start them first so parallel jobs finish together.
    order = sorted(args.presets, key=lambda p: "hrda" not in p)
    runs = [(preset, seed) for preset in order for seed in args.seeds]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(train_one, preset, seed, args.data_root, Path(args.work_dir),
                               args.overrides, threads) for preset, seed in runs]
        results = [future.result() for future in futures]
    total = time.perf_counter() - started
    print(f"\nseeds {args.seeds}; overrides {args.overrides or 'none'}; {args.jobs} job(s); "
          f"{total / 60:.1f} min in all\n")
    print(format_table(results, args.presets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
