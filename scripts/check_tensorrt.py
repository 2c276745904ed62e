"""Parity of an exported GPU runtime (TensorRT by default) with PyTorch fp32, on real images.

    python scripts/check_tensorrt.py CHECKPOINT [--images DIR] [--mode hrda|whole]
        [--format tensorrt|aoti|onnx] [--precision fp16] [--threshold 0.995] [--max-images 20]
        [--engine-cache DIR] [--keep DIR]

Exports the checkpoint's student (``python -m export``'s code, into a temporary folder or
``--keep``), loads it with :func:`export.runtime.load_runtime` on CUDA and compares it with
``Predictor.from_checkpoint`` (PyTorch fp32) image by image: the share of pixels whose predicted
class agrees, the mIoU of the runtime's labels against PyTorch's labels, and the largest logit
difference relative to the logit range. Use a trained checkpoint: random weights give nearly tied
logits, where any reduced precision flips classes.

Runs wherever TensorRT and an NVIDIA GPU exist (``--format aoti --precision bf16`` checks the
AOTInductor path on machines without TensorRT). Images default to ``app/examples``.

Exit codes: 0 agreement ≥ threshold over all pixels; 1 below; 2 bad input; 3 TensorRT, CUDA or
the runtime missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from export.artifact import BackendUnavailable, ExportError
from export.exporter import export_checkpoint
from export.runtime import load_runtime
from models.checkpoint import CheckpointError
from models.predictor import Predictor, as_rgb_array, infer_logits

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def label_miou(labels: np.ndarray, reference: np.ndarray, num_classes: int) -> float:
    """Mean IoU of ``labels`` against ``reference`` over the classes present in either."""
    ious = []
    for index in range(num_classes):
        predicted, expected = labels == index, reference == index
        union = np.logical_or(predicted, expected).sum()
        if union:
            ious.append(np.logical_and(predicted, expected).sum() / union)
    return float(np.mean(ious)) if ious else 1.0


def read_images(folder: Path, limit: int) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ExportError(f"{folder} holds no {'/'.join(IMAGE_SUFFIXES)} image")
    images = []
    for file in files:
        with Image.open(file) as image:
            images.append((file.name, as_rgb_array(np.array(image.convert("RGB")))))
    return images


def compare(reference: Predictor, runtime: Predictor, image: np.ndarray,
            mode: str) -> dict[str, float]:
    """Agreement of one image: pixel share, label mIoU, max |Δlogit| / logit range."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        expected = infer_logits(reference.forward_fn, tensor.to(reference.device),
                                reference.model_config, mode)
        actual = infer_logits(runtime.forward_fn, tensor.to(runtime.device),
                              runtime.model_config, mode)
    expected_labels = expected.argmax(1)[0].cpu().numpy()
    labels = actual.argmax(1)[0].cpu().numpy()
    logit_range = float(expected.max() - expected.min()) or 1.0
    return {
        "agree": float((labels == expected_labels).mean()),
        "miou": label_miou(labels, expected_labels, reference.num_classes),
        "rel_diff": float((actual.float() - expected).abs().max()) / logit_range,
        "pixels": float(labels.size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--images", type=Path, default=REPO / "app" / "examples")
    parser.add_argument("--mode", default="hrda", choices=("hrda", "whole"))
    parser.add_argument("--format", default="tensorrt", choices=("tensorrt", "aoti", "onnx"),
                        dest="fmt")
    parser.add_argument("--precision", help="default: the format's (tensorrt fp16, others fp32)")
    parser.add_argument("--threshold", type=float, default=0.995)
    parser.add_argument("--max-images", type=int, default=20)
    parser.add_argument("--engine-cache", type=Path)
    parser.add_argument("--keep", type=Path, help="write the export here instead of a temp dir")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this check needs a CUDA GPU; torch sees none", file=sys.stderr)
        return 3
    try:
        images = read_images(args.images, args.max_images)
        with tempfile.TemporaryDirectory(prefix="cluda-parity-") as tmp:
            out = export_checkpoint(
                args.checkpoint, args.fmt, args.keep or Path(tmp) / "export",
                precision=args.precision, mode=args.mode, device="cuda",
                engine_cache=args.engine_cache,
                log=lambda message: print(message, file=sys.stderr, flush=True),
            )
            runtime = load_runtime(out, device="cuda")
            reference = Predictor.from_checkpoint(args.checkpoint, device="cuda")
            results = [(name, compare(reference, runtime, image, args.mode))
                       for name, image in images]
    except BackendUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (ExportError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{runtime.metadata['runtime']} {runtime.metadata['precision']} vs PyTorch fp32, "
          f"mode {args.mode}, {torch.cuda.get_device_name()}")
    print("| image | pixels agreeing | label mIoU | max |Δlogit| / range |")
    print("|---|---|---|---|")
    for name, result in results:
        print(f"| {name} | {result['agree']:.4%} | {result['miou']:.4f} | "
              f"{result['rel_diff']:.2e} |")
    total = sum(r["pixels"] for _, r in results)
    agreement = sum(r["agree"] * r["pixels"] for _, r in results) / total
    passed = agreement >= args.threshold
    print(f"overall pixel agreement {agreement:.4%} (threshold {args.threshold:.1%}): "
          f"{'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
