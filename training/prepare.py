"""Convert the labels of every dataset under a data root and write the class statistics.

Usage::

    python -m training.prepare DATA_ROOT [--nproc N] [--no-progress]

DATA_ROOT holds any of ``gta/``, ``synthia/``, ``cityscapes/`` and custom datasets (folders with a
``dataset.json``). A second run converts nothing and says so; an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from training.data.errors import DatasetError
from training.data.prepare import prepare_data_root


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 on a data error (its message printed to stderr).
    """
    parser = argparse.ArgumentParser(
        prog="python -m training.prepare",
        description="Convert GTA5 / Synthia / Cityscapes / custom labels to Cityscapes trainIds "
        "and write the class statistics used by rare class sampling.",
    )
    parser.add_argument(
        "data_root", type=Path, help="folder holding gta/, synthia/, cityscapes/ ..."
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes (default: min(8, CPU count))",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    try:
        prepare_data_root(args.data_root, nproc=args.nproc, progress=not args.no_progress)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
