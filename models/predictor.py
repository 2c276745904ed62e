"""Image in, segmentation out: the predictor shared by evaluation, export checks, serving and the demo.

Resize policy (documented for users): an input of any size is rescaled, keeping its aspect ratio,
to fit the model's ``eval_scale`` box — (long, short) = (2048, 1024) for HRDA on Cityscapes,
(1024, 512) for DAFormer — exactly as the reference test pipeline's keep-ratio ``Resize``. Small
images are scaled up and large ones down, so objects appear at roughly the scale the model was
trained on (the reference code ran arbitrary resolutions as they were, the cause of the poor
results users report). The logits are resized back to the original size before the softmax, so
the outputs always match the input pixel for pixel. ``resize=False`` disables the rescale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classes import IMAGENET_MEAN
from .config import ModelConfig
from .inference import ForwardFn, rescale_size, slide_inference

MODES = ("hrda", "whole")


def infer_logits(
    forward_fn: ForwardFn,
    image: Tensor,
    model_config: ModelConfig,
    mode: str = "hrda",
    resize: bool = True,
    window_batch: int | None = None,
) -> Tensor:
    """Logits for a batch of images at their own resolution.

    Args:
        forward_fn: the window network (a segmentor, or an exported runtime wrapper).
        image: ``B×3×H×W`` float RGB in 0..255.
        model_config: gives the evaluation scale, the window and the stride.
        mode: "hrda" slides ``inference_window`` windows at ``inference_stride`` when the model
            has one (HRDA: 1024²/512, each window fusing its LR context with 512² detail crops);
            "whole" runs the window network once over the whole (rescaled) image: fewer LR
            passes, the fast single-pass mode.
        resize: rescale into ``eval_scale`` first (see the module docstring).
        window_batch: windows per forward call (None: all at once).

    Returns:
        ``B×K×H×W`` float logits.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    height, width = image.shape[-2:]
    scaled = image
    if resize:
        target = rescale_size(height, width, model_config.eval_scale)
        if target != (height, width):
            scaled = F.interpolate(image, size=target, mode="bilinear", align_corners=False)
    window = model_config.inference_window
    if mode == "hrda" and window > 0:
        logits = slide_inference(
            forward_fn, scaled, window, model_config.inference_stride, model_config.num_classes,
            window_batch=window_batch, pad_value=IMAGENET_MEAN,
        )
    else:
        logits = forward_fn(scaled)
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear",
                               align_corners=False)
    return logits.float()


def as_rgb_array(image: np.ndarray) -> np.ndarray:
    """Checks and converts an image array to uint8 H×W×3 RGB (grayscale is replicated).

    Raises:
        ValueError: wrong dtype, rank, channel count, or an empty image.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image must be H×W, H×W×3 or H×W×4, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


@dataclass
class Prediction:
    """One image's segmentation.

    Attributes:
        label: ``H×W`` uint8 trainIds.
        confidence: ``H×W`` float32 maximum softmax probability.
        probabilities: ``K×H×W`` float32 softmax, only when requested.
        timings: seconds spent per stage.
    """

    label: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Predictor:
    """Runs a segmentor (or an exported runtime with the same window interface) on images.

    Args:
        forward_fn: the window network; an ``nn.Module`` is put in eval mode and on ``device``.
        model_config: architecture of the model (evaluation scale, window, classes).
        device: where the input tensors go.
        metadata: free-form facts reported with predictions (name, version, checkpoint hash).
        window_batch: windows per forward call; None sends all windows of an image at once.
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        model_config: ModelConfig,
        device: str | torch.device = "cpu",
        metadata: dict[str, Any] | None = None,
        window_batch: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if isinstance(forward_fn, nn.Module):
            forward_fn = forward_fn.to(self.device).eval()
        self.forward_fn = forward_fn
        self.model_config = model_config
        self.metadata = dict(metadata or {})
        self.window_batch = window_batch

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", which: str = "model"
    ) -> "Predictor":
        """Loads one of our checkpoints (student by default)."""
        from .checkpoint import file_sha256, load_segmentor

        model, metadata = load_segmentor(path, which=which, device=device)
        facts = {
            "name": metadata.get("name", Path(path).stem),
            "version": str(metadata.get("iteration", "")),
            "sha256": file_sha256(path)[:16],
            "checkpoint": str(path),
        }
        return cls(model, model.config, device=device, metadata=facts)

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        mode: str = "hrda",
        resize: bool = True,
        return_probabilities: bool = False,
    ) -> Prediction:
        """Segments one uint8 RGB (or grayscale/RGBA) image of any size.

        Args:
            image: ``H×W×3`` (or ``H×W``, ``H×W×4``) uint8 array.
            mode: "hrda" (sliding windows) or "whole" (single pass).
            resize: apply the resize policy of the module docstring.
            return_probabilities: also return the ``K×H×W`` softmax.
        """
        start = time.perf_counter()
        rgb = as_rgb_array(image)
        tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float()
        prepared = time.perf_counter()
        logits = infer_logits(self.forward_fn, tensor, self.model_config, mode, resize,
                              self.window_batch)
        probabilities = logits.softmax(dim=1)[0]
        confidence, label = probabilities.max(dim=0)
        inferred = time.perf_counter()
        result = Prediction(
            label=label.to(torch.uint8).cpu().numpy(),
            confidence=confidence.cpu().numpy().astype(np.float32),
            probabilities=probabilities.cpu().numpy() if return_probabilities else None,
        )
        result.timings = {
            "preprocess_s": prepared - start,
            "inference_s": inferred - prepared,
            "postprocess_s": time.perf_counter() - inferred,
        }
        return result
