"""Debug image grids during training and the plots written at the end of a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from models.checkpoint import atomic_write_bytes
from models.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

_PALETTE = np.zeros((256, 3), dtype=np.uint8)
_PALETTE[: len(CITYSCAPES_PALETTE)] = np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8)
_PALETTE[IGNORE_INDEX] = (0, 0, 0)


def colorize(label: np.ndarray) -> np.ndarray:
    """``H×W`` trainIds → ``H×W×3`` Cityscapes colours (ignore in black)."""
    return _PALETTE[np.clip(label, 0, 255).astype(np.uint8)]


def _image(tensor: Tensor) -> np.ndarray:
    return tensor.detach().float().clamp(0, 255).permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def _gray(tensor: Tensor) -> np.ndarray:
    values = tensor.detach().float().reshape(tensor.shape[-2:]).clamp(0, 1).cpu().numpy()
    return np.repeat((values * 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _label(tensor: Tensor) -> np.ndarray:
    return colorize(tensor.detach().reshape(tensor.shape[-2:]).cpu().numpy())


def save_debug_image(path: Path, debug: dict[str, Tensor], prediction: Tensor) -> None:
    """One row per batch element: source, source GT, target, pseudo-label, mixed image, domain
    mask, mixed label, mixed weight, student prediction on the target (the reference's grid)."""
    rows = []
    for index in range(debug["src_img"].shape[0]):
        tiles = [_image(debug["src_img"][index]), _label(debug["src_label"][index]),
                 _image(debug["tgt_img"][index]), _label(debug["pseudo_label"][index]),
                 _image(debug["mix_img"][index]), _gray(debug["mix_mask"][index]),
                 _label(debug["mix_label"][index]), _gray(debug["mix_weight"][index]),
                 _label(prediction[index])]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def save_final_plots(work_dir: Path, history: list[dict]) -> None:
    """``per_class_iou.png`` (last evaluation), ``training_curves.png`` (losses from
    ``log.jsonl`` and validation mIoU) and ``final_eval.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history:
        last = history[-1]
        atomic_write_bytes(work_dir / "final_eval.json", json.dumps(last, indent=2).encode())
        values = [100 * (last["per_class_iou"].get(name) or 0.0) for name in CITYSCAPES_CLASSES]
        figure, axis = plt.subplots(figsize=(10, 4))
        axis.bar(range(len(values)), values,
                 color=[tuple(c / 255 for c in rgb) for rgb in CITYSCAPES_PALETTE])
        axis.set_xticks(range(len(values)), CITYSCAPES_CLASSES, rotation=60, ha="right")
        axis.set_ylabel("IoU (%)")
        axis.set_title(f"per-class IoU, mIoU19 {100 * last['miou19']:.1f} "
                       f"(iteration {last['iteration']})")
        figure.tight_layout()
        figure.savefig(work_dir / "per_class_iou.png", dpi=100)
        plt.close(figure)
    records = []
    log = work_dir / "log.jsonl"
    if log.is_file():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    figure, (loss_axis, miou_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "seg_src", "seg_mix", "cl_src", "cl_mix", "fd", "mic", "seg_tgt"):
        points = [(r["iteration"], r[key]) for r in records if key in r]
        if points:
            loss_axis.plot(*zip(*points), label=key)
    loss_axis.set_xlabel("iteration")
    loss_axis.set_title("training losses")
    if records:
        loss_axis.legend()
    if history:
        miou_axis.plot([h["iteration"] for h in history], [100 * h["miou19"] for h in history],
                       marker="o")
    miou_axis.set_xlabel("iteration")
    miou_axis.set_title("target val mIoU19 (%)")
    figure.tight_layout()
    figure.savefig(work_dir / "training_curves.png", dpi=100)
    plt.close(figure)
