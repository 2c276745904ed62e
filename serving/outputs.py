"""Turning a prediction into what clients see: palette colours, overlays, class shares, PNGs.

Shared by the BentoML service (``/segment``, ``/classes``) and the Gradio demo, so both show the
same colours and the same numbers.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX, NUM_CLASSES

# 256 entries, so that any uint8 label indexes it; other ids (255 = ignore) are black.
PALETTE = np.zeros((256, 3), dtype=np.uint8)
PALETTE[: len(CITYSCAPES_PALETTE)] = np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8)

# Anchor colours of matplotlib's "viridis", evenly spaced from 0 to 1: dark blue = unsure,
# yellow = confident, readable by colour-blind viewers and in grayscale.
_VIRIDIS_ANCHORS = np.asarray(
    [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
     (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
    dtype=np.float64,
)  # fmt: skip
_VIRIDIS = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_VIRIDIS_ANCHORS)), channel)
     for channel in _VIRIDIS_ANCHORS.T],
    axis=1,
).round().astype(np.uint8)  # fmt: skip


@dataclass(frozen=True)
class ClassShare:
    """One class present in a mask.

    Attributes:
        id: trainId (0..18).
        name: Cityscapes class name.
        pixels: number of pixels labelled with it.
        share: fraction of the image, 0..1.
    """

    id: int
    name: str
    pixels: int
    share: float

    @property
    def color(self) -> tuple[int, int, int]:
        """Palette colour (RGB)."""
        return CITYSCAPES_PALETTE[self.id]

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "pixels": self.pixels,
                "share": round(self.share, 6)}  # fmt: skip


def class_table() -> list[dict[str, object]]:
    """Every class with its trainId, name and palette colour (``GET /classes``)."""
    return [
        {"id": index, "name": name, "color": list(CITYSCAPES_PALETTE[index])}
        for index, name in enumerate(CITYSCAPES_CLASSES)
    ]


def class_shares(label: np.ndarray) -> list[ClassShare]:
    """The classes present in an ``H×W`` trainId mask, largest first.

    Pixels labelled 255 (ignore) are counted in the total but listed under no class.
    """
    counts = np.bincount(label.ravel(), minlength=256)
    total = max(int(label.size), 1)
    shares = [
        ClassShare(int(index), CITYSCAPES_CLASSES[index], int(counts[index]),
                   float(counts[index]) / total)
        for index in np.flatnonzero(counts[: len(CITYSCAPES_CLASSES)])
    ]  # fmt: skip
    return sorted(shares, key=lambda item: (-item.pixels, item.id))


def colorize(label: np.ndarray) -> np.ndarray:
    """``H×W`` uint8 trainIds → ``H×W×3`` uint8 Cityscapes colours (ignore = black)."""
    return PALETTE[label]


def overlay(image: np.ndarray, label: np.ndarray, opacity: float) -> np.ndarray:
    """Blends the palette colours of ``label`` over an ``H×W×3`` uint8 RGB image.

    Args:
        image: the input picture.
        label: ``H×W`` trainIds of the same size.
        opacity: 0 shows the picture only, 1 the colours only.

    Returns:
        ``H×W×3`` uint8 RGB. Pixels labelled 255 keep the picture.
    """
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    alpha = np.where(label == IGNORE_INDEX, 0.0, float(opacity)).astype(np.float32)[:, :, None]
    blended = image.astype(np.float32) * (1.0 - alpha) + colorize(label).astype(np.float32) * alpha
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def confidence_image(confidence: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``H×W`` maximum softmax probability → ``H×W×3`` uint8 colour map (viridis-like).

    The scale runs from ``1 / num_classes`` (a uniform guess, the lowest possible maximum) to
    1, so the colours use their full range.
    """
    floor = 1.0 / num_classes
    scaled = (np.nan_to_num(confidence, nan=floor) - floor) / (1.0 - floor)
    return _VIRIDIS[np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)]


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an ``H×W`` (grayscale) or ``H×W×3`` (RGB) uint8 array.

    A low compression level: masks compress well at any level, and encoding time counts
    against the request's latency.
    """
    stream = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(stream, format="PNG", compress_level=3)
    return stream.getvalue()


def png_base64(array: np.ndarray) -> str:
    """Base64 (ASCII) of :func:`encode_png`, for JSON answers."""
    return base64.b64encode(encode_png(array)).decode("ascii")
