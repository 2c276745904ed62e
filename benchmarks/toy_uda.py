"""Target mIoU of the toy presets on the synthetic dataset, mean ± std over seeds.

    python -m benchmarks.toy_uda [--seeds 0 1 2] [--presets ...] [--set key=value ...]

Trains each preset once per seed with ``training.run`` (same code path as a user's run) and prints
a Markdown table. Source-only is the lower bound, the target-labelled oracle the upper bound; the
UDA presets must land clearly above source-only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from training.run import main as train_main

DEFAULT_PRESETS = ("toy_source_only", "toy_daformer_nocl", "toy_daformer", "toy_hrda_nocl",
                   "toy_hrda", "toy_target_only")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--work-dir", default="work_dirs/toy_benchmark")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra override applied to every run")
    args = parser.parse_args(argv)
    rows = []
    for preset in args.presets:
        scores, seconds = [], []
        for seed in args.seeds:
            work_dir = Path(args.work_dir) / f"{preset}_s{seed}"
            extra = [f"seed={seed}", "debug_image_interval=0", *args.overrides]
            started = time.perf_counter()
            argv = [preset, "--data-root", args.data_root, "--work-dir", str(work_dir)]
            if train_main(argv + [a for item in extra for a in ("--set", item)]) != 0:
                raise SystemExit(f"{preset} seed {seed} failed")
            seconds.append(time.perf_counter() - started)
            scores.append(100 * json.loads((work_dir / "final_eval.json").read_text())["miou19"])
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        rows.append((preset, statistics.mean(scores), spread, scores, statistics.mean(seconds)))
    print(f"\nseeds {args.seeds}; overrides {args.overrides or 'none'}\n")
    print("| preset | target mIoU19 (mean ± std) | per seed | s/run |")
    print("|---|---|---|---|")
    for preset, mean, spread, scores, seconds in rows:
        per_seed = ", ".join(f"{s:.1f}" for s in scores)
        print(f"| {preset} | {mean:.1f} ± {spread:.1f} | {per_seed} | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
