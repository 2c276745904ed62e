"""Evaluation on the target validation split: per-class IoU and mIoU over 19 / 16 / 13 classes.

    python -m training.evaluate CHECKPOINT [--data-root DIR] [--mode hrda|whole] [--out FILE]

Inference goes through the shared path (:func:`models.predictor.infer_logits`): the validation
pipeline resizes each image to the preset's evaluation scale, the model runs (HRDA: sliding
1024² windows), and the logits are resized to the label's resolution before the argmax, as mmseg.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError, atomic_write_bytes, load_segmentor
from models.inference import ForwardFn
from models.predictor import MODES, infer_logits

from .config import TrainConfig
from .data.errors import DatasetError
from .data.loader import build_val_dataset
from .metrics import ConfusionMatrix, SegmentationScores, scores
from .overrides import dataclass_from_dict


@torch.inference_mode()
def evaluate(
    forward_fn: ForwardFn,
    model_config,
    dataset,
    mode: str = "hrda",
    device: torch.device | str = "cpu",
    limit: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> SegmentationScores:
    """Scores a model on a validation dataset.

    Under DDP every rank scores every ``world_size``-th image (from its ``rank``) and the
    confusion matrices are summed over ranks, so each rank returns the scores of the whole set.

    Args:
        forward_fn: the window network (segmentor or exported runtime).
        model_config: its architecture (window, stride, classes).
        dataset: items with ``img`` (3×H'×W' float 0..255, already at the evaluation scale) and
            ``label`` (H×W trainIds at the stored resolution).
        mode: "hrda" (sliding windows) or "whole".
        device: where the images go.
        limit: evaluate only the first ``limit`` images.
        autocast_dtype: run under CUDA autocast with this dtype (None: full precision).
        rank: this process's rank in the initialised process group (1 process: 0).
        world_size: number of ranks sharing the images.

    Returns:
        Per-class IoU and mIoU19/16/13.
    """
    was_training = isinstance(forward_fn, nn.Module) and forward_fn.training
    if isinstance(forward_fn, nn.Module):
        forward_fn.eval()
    matrix = ConfusionMatrix(model_config.num_classes)
    device = torch.device(device)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    try:
        for index in range(rank, count, world_size):
            item = dataset[index]
            image = item["img"][None].to(device)
            label = item["label"]
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None and device.type == "cuda"):
                logits = infer_logits(forward_fn, image, model_config, mode, resize=False)
            logits = F.interpolate(logits, size=tuple(label.shape), mode="bilinear",
                                   align_corners=False)
            matrix.update(logits.argmax(dim=1)[0].cpu(), label)
    finally:
        if was_training:
            forward_fn.train()
    if world_size > 1:
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
        total = matrix.matrix.to(device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(total)
        matrix.matrix = total.cpu()
    return scores(matrix)


def scores_to_json(result: SegmentationScores, extra: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready dict (NaN IoUs become null)."""
    def clean(value: float) -> float | None:
        return None if value != value else value

    return {**extra, "miou19": clean(result.miou19), "miou16": clean(result.miou16),
            "miou13": clean(result.miou13),
            "per_class_iou": {k: clean(v) for k, v in result.per_class_iou.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a cluda checkpoint (.safetensors)")
    parser.add_argument("--data-root", default=os.environ.get("CLUDA_DATA", "data"),
                        help="data root (default: $CLUDA_DATA or data/)")
    parser.add_argument("--mode", choices=MODES, help="inference mode (default: the run's)")
    parser.add_argument("--teacher", action="store_true", help="evaluate the EMA teacher")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--out", help="JSON output (default: beside the checkpoint)")
    args = parser.parse_args(argv)
    try:
        model, metadata = load_segmentor(args.checkpoint, "ema_model" if args.teacher else "model",
                                         args.device)
        if "config" not in metadata:
            raise CheckpointError(f"{args.checkpoint} has no training config: it does not say "
                                  "which validation data it belongs to")
        config = dataclass_from_dict(TrainConfig, metadata["config"])
        dataset = build_val_dataset(config.data, Path(args.data_root))
    except (CheckpointError, DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    mode = args.mode or config.eval_mode
    result = evaluate(model, model.config, dataset, mode, args.device, args.limit)
    print(result.table())
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(f".eval_{mode}.json")
    payload = scores_to_json(result, {"checkpoint": str(args.checkpoint), "mode": mode,
                                      "images": min(args.limit or len(dataset), len(dataset))})
    atomic_write_bytes(out, json.dumps(payload, indent=2).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
