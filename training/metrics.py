"""mIoU as mmseg computes it: histograms over the whole validation set (release_code.md §7)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, MIOU13_EXTRA_EXCLUDED, SYNTHIA_MISSING_CLASSES


class ConfusionMatrix:
    """Accumulates a K×K confusion matrix (rows = ground truth, columns = prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, label: Tensor) -> None:
        """Adds one batch; pixels labelled ``ignore_index`` are dropped.

        Args:
            prediction: integer class map of any shape.
            label: integer ground truth of the same shape.
        """
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label "
                             f"{tuple(label.shape)} differ in shape")
        prediction = prediction.reshape(-1).to("cpu", torch.int64)
        label = label.reshape(-1).to("cpu", torch.int64)
        keep = label != self.ignore_index
        prediction, label = prediction[keep], label[keep]
        if label.numel() and (label.max() >= self.num_classes or label.min() < 0):
            raise ValueError(f"label values must be in [0, {self.num_classes}) or "
                             f"{self.ignore_index}, got {label.min()}..{label.max()}")
        index = label * self.num_classes + prediction.clamp(0, self.num_classes - 1)
        self.matrix += torch.bincount(index, minlength=self.num_classes ** 2).view(
            self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Adds another matrix (e.g. from another rank)."""
        self.matrix += other.matrix

    def iou(self) -> list[float]:
        """Per-class IoU; NaN for a class absent from both prediction and ground truth."""
        intersection = self.matrix.diag().double()
        union = self.matrix.sum(0).double() + self.matrix.sum(1).double() - intersection
        return [float(i / u) if u > 0 else math.nan for i, u in zip(intersection, union)]


def _nanmean(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


@dataclass(frozen=True)
class SegmentationScores:
    """Per-class IoU and the three means the papers report."""

    per_class_iou: dict[str, float]
    miou19: float
    miou16: float
    miou13: float

    def table(self) -> str:
        """A plain-text table of per-class IoU (percent) and the means."""
        width = max(len(name) for name in self.per_class_iou)
        lines = [f"{'class':<{width}}  IoU"]
        lines += [f"{name:<{width}}  {100 * value:5.1f}" for name, value in
                  self.per_class_iou.items()]
        lines += [f"{'mIoU19':<{width}}  {100 * self.miou19:5.1f}",
                  f"{'mIoU16':<{width}}  {100 * self.miou16:5.1f}",
                  f"{'mIoU13':<{width}}  {100 * self.miou13:5.1f}"]
        return "\n".join(lines)


def scores(matrix: ConfusionMatrix, class_names: tuple[str, ...] = CITYSCAPES_CLASSES
           ) -> SegmentationScores:
    """mIoU over 19 classes, 16 (without terrain, truck, train: Synthia's protocol) and 13 (also
    without wall, fence, pole), each a NaN-skipping mean of the per-class IoUs."""
    iou = matrix.iou()
    keep16 = [c for c in range(len(iou)) if c not in SYNTHIA_MISSING_CLASSES]
    keep13 = [c for c in keep16 if c not in MIOU13_EXTRA_EXCLUDED]
    return SegmentationScores(
        per_class_iou={name: value for name, value in zip(class_names, iou)},
        miou19=_nanmean(iou),
        miou16=_nanmean([iou[c] for c in keep16]),
        miou13=_nanmean([iou[c] for c in keep13]),
    )
