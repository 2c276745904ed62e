"""Command line: export a checkpoint's student for deployment.

    python -m export CHECKPOINT --format onnx|aoti|tensorrt --out DIR
        [--precision fp32|fp16|bf16|int8] [--mode hrda|whole] [--device cpu|cuda]
        [--opset 18] [--max-batch 8] [--calibration DIR] [--engine-cache DIR]

Exit codes: 0 done; 2 bad input (missing or foreign checkpoint, unknown format or option,
output folder not writable or not replaceable); 3 the backend is not available here (TensorRT,
CUDA, ONNX tooling). A failed export leaves an existing DIR as it was.
"""

from __future__ import annotations

import argparse
import sys

from .artifact import FORMATS, MODES, ONNX_OPSET, PRECISIONS, BackendUnavailable, ExportError

EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="cluda .safetensors checkpoint (student exported)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="onnx: fp32 (default) | fp16; aoti: fp32 (default) | bf16 | fp16; "
                             "tensorrt: fp16 (default, LayerNorm/softmax in fp32) | fp32 | int8")
    parser.add_argument("--mode", choices=MODES, default="hrda",
                        help="hrda: the inference_window² window (outer slide on the host); "
                             "whole: the eval_scale box, one pass per image (default hrda)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="aoti: device the package runs on (default cpu); tensorrt: cuda; "
                             "onnx: not used (the graph is device independent)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help="ONNX opset (>= 17)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="tensorrt: most windows per engine call (default 8)")
    parser.add_argument("--calibration", metavar="DIR",
                        help="tensorrt int8: folder of target-domain images")
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="tensorrt int8: images used at most (default 64)")
    parser.add_argument("--engine-cache", metavar="DIR",
                        help="tensorrt: engine cache (default ~/.cache/cluda/tensorrt)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .exporter import export_checkpoint

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        out = export_checkpoint(
            args.checkpoint, args.fmt, args.out, precision=args.precision, mode=args.mode,
            device=args.device, opset=args.opset, max_batch=args.max_batch,
            calibration=args.calibration, calibration_images=args.calibration_images,
            engine_cache=args.engine_cache, log=log,
        )
    except BackendUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
