"""Command line: convert a released DAFormer/HRDA/MIC/CLUDA checkpoint into ours.

    python -m models.convert RELEASED.pth OUT.safetensors [--arch NAME] [--ema]
    python -m models.convert --download-mit mit_b5 pretrained/
"""

from __future__ import annotations

import argparse
import sys

from .checkpoint import CheckpointError, convert_mmseg_checkpoint, download_mit_imagenet
from .config import list_model_configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="released mmseg checkpoint (.pth)")
    parser.add_argument("destination", nargs="?", help="output .safetensors file, or a folder "
                        "with --download-mit")
    parser.add_argument("--arch", choices=list_model_configs(),
                        help="architecture; inferred from the checkpoint's keys when omitted")
    parser.add_argument("--ema", action="store_true",
                        help="take the EMA teacher (ema_model.*) instead of the student")
    parser.add_argument("--download-mit", metavar="NAME",
                        help="download ImageNet MiT weights (mit_b0..mit_b5) from the HF hub")
    args = parser.parse_args(argv)
    try:
        if args.download_mit:
            target = args.destination or args.source or "pretrained"
            print(download_mit_imagenet(args.download_mit, target))
            return 0
        if not args.source or not args.destination:
            parser.error("source and destination are required")
        config = convert_mmseg_checkpoint(args.source, args.destination, args.arch,
                                          "ema_model" if args.ema else "model")
    except (CheckpointError, ValueError, KeyError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.destination} (backbone {config.backbone}, "
          f"{'HRDA' if config.hrda else 'DAFormer'}, E={config.embed_dim})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
