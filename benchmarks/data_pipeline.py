"""Throughput of the HRDA training pipeline at full resolution (images per second).

Generates full-size synthetic data in the real file formats (GTA5 1914×1052 palette-label PNGs,
Cityscapes 2048×1024), then times ``build_uda_loader`` with the ``hrda_gta`` preset: decoding,
Resize to 2560×1407, rare-class-sampled 1024² crops with the cat_max_ratio rule, flips, padding and
batching, in DataLoader worker processes.

Usage::

    python benchmarks/data_pipeline.py [--workers N] [--batches B] [--images I] [--data-dir DIR]

One "image" is one 1024² crop (a batch holds 2 source + 2 target crops). HRDA consumes one batch
per training step, so the loader keeps up with a GPU as long as batches/s exceeds steps/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from training.data import HRDA_GTA, build_uda_loader, build_uda_train_set, ensure_synthetic_dataset


def main() -> None:
    """Parse the options, generate the data if needed and print the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--batches", type=int, default=20, help="timed batches (after 2 warm-up)")
    parser.add_argument("--images", type=int, default=12, help="images generated per domain")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the generated data here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        data_root = args.data_dir or Path(temporary)
        start = time.perf_counter()
        ensure_synthetic_dataset(
            data_root,
            seed=0,
            num_source=args.images,
            num_target_train=args.images,
            num_target_val=1,
            source_size=(1914, 1052),
            target_size=(2048, 1024),
        )
        print(
            f"data: {args.images} GTA-format 1914x1052 + {args.images} Cityscapes-format "
            f"2048x1024 images ({time.perf_counter() - start:.1f} s to generate or check)"
        )

        cfg = dataclasses.replace(HRDA_GTA, num_workers=0)
        train_set = build_uda_train_set(cfg, data_root, seed=0)
        start = time.perf_counter()
        items = 4
        for k in range(items):
            train_set[k]
        per_pair = (time.perf_counter() - start) / items
        print(
            f"one process: {per_pair * 1000:.0f} ms per source+target pair "
            f"({2 / per_pair:.1f} images/s per worker)"
        )

        cfg = dataclasses.replace(HRDA_GTA, num_workers=args.workers)
        loader = build_uda_loader(cfg, data_root, seed=0)
        for _ in range(2):  # worker start-up and first prefetch
            next(loader)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(loader)
        elapsed = time.perf_counter() - start
        images = args.batches * cfg.batch_size * 2
        print(
            f"loader, {args.workers} workers on {os.cpu_count()} CPUs: "
            f"{images / elapsed:.1f} images/s "
            f"({args.batches / elapsed:.2f} batches/s of {cfg.batch_size}+{cfg.batch_size} "
            f"{cfg.crop_size[0]}x{cfg.crop_size[1]} crops)"
        )


if __name__ == "__main__":
    main()
