"""HRDA's multi-resolution decode head and scale fusion (``release_code.md`` §3.4, §3.5).

One :class:`DAFormerHead` (``head``) decodes both the low-resolution (LR) context and the
high-resolution (HR) detail crops; ``scale_attention`` predicts from the LR features how much each
pixel trusts the HR logits; CLUDA's ``feat_weighter`` predicts the per-pixel LR/HR weight of the
contrastive loss. The fusion itself is the pure function :func:`fuse_scales`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .daformer import DAFormerHead

__all__ = ["FUSION_ORDERS", "HRDAHead", "fuse_scales", "paste_crops"]

FUSION_ORDERS = ("hrda", "cluda")

CropBox = tuple[int, int, int, int]


def fuse_scales(
    lr_logits: Tensor, hr_logits: Tensor, attention: Tensor, fusion_order: str
) -> Tensor:
    """Fuses LR logits with HR logits by the scale attention.

    ``up`` is bilinear (``align_corners=False``) from the LR size to the HR size (×2 for the
    reference's LR scale 0.5).

    - "hrda" (lhoyer/HRDA): ``up((1 − att)·lr) + up(att)·hr``.
    - "cluda" (user0407/CLUDA): ``up(att)·hr + (1 − up(att))·up(lr)``.

    Args:
        lr_logits: B×K×h×w LR logits.
        hr_logits: B×K×H×W HR logits on the full canvas (zero outside a training crop).
        attention: B×K×h×w or B×1×h×w attention in [0, 1], at LR resolution (already masked to
            the crop in training).
        fusion_order: "hrda" or "cluda".

    Returns:
        B×K×H×W fused logits.
    """
    size = hr_logits.shape[-2:]

    def up(x: Tensor) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    if fusion_order == "hrda":
        return up((1 - attention) * lr_logits) + up(attention) * hr_logits
    if fusion_order == "cluda":
        up_attention = up(attention)
        return up_attention * hr_logits + (1 - up_attention) * up(lr_logits)
    raise ValueError(f"fusion_order must be one of {FUSION_ORDERS}, got {fusion_order!r}")


def paste_crops(
    crops: Tensor, boxes: Sequence[CropBox], height: int, width: int, scale: int
) -> Tensor:
    """Places per-image crop maps on zero canvases (differentiable, no in-place writes).

    Args:
        crops: B×C×h×w maps, one crop per image.
        boxes: one ``(y1, y2, x1, x2)`` box per image in input pixels, divisible by ``scale``.
        height: canvas height (map resolution).
        width: canvas width (map resolution).
        scale: input pixels per map pixel.

    Returns:
        B×C×height×width canvases, zero outside each image's box / ``scale``.
    """
    canvases = [
        F.pad(crop, (x1 // scale, width - x2 // scale, y1 // scale, height - y2 // scale))
        for crop, (y1, y2, x1, x2) in zip(crops.unbind(0), boxes)
    ]
    return torch.stack(canvases, dim=0)


class HRDAHead(nn.Module):
    """HRDA's shared decoder and its auxiliary heads, in the release's state-dict layout.

    Attributes:
        head: the shared LR/HR :class:`DAFormerHead`.
        scale_attention: :class:`DAFormerHead` with 1×1 fusion on the LR features (K or 1
            outputs); None when ``fixed_attention`` is set, as in the reference.
        feat_weighter: CLUDA's one-output :class:`DAFormerHead`, or None.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int,
        channels: int,
        num_classes: int,
        fusion: str,
        dilations: Sequence[int],
        dropout: float,
        attention_embed_dim: int,
        attention_classwise: bool,
        fixed_attention: float | None,
        feature_weight_head: bool,
    ) -> None:
        """Builds the heads.

        The auxiliary heads use ``attention_embed_dim`` both as embedding width and as fused
        width (``HRDAHead`` sets ``channels = attention_embed_dim`` for them) and a 1×1 fusion.

        Args:
            in_channels: backbone channels per level.
            embed_dim: E of the shared head.
            channels: fused width of the shared head.
            num_classes: K.
            fusion: fusion of the shared head ("sepaspp" or "conv1x1").
            dilations: ASPP dilations of the shared head.
            dropout: Dropout2d probability of every head.
            attention_embed_dim: E (and width) of the auxiliary heads.
            attention_classwise: one attention channel per class, else one.
            fixed_attention: constant attention instead of ``scale_attention``.
            feature_weight_head: build CLUDA's ``feat_weighter``.
        """
        super().__init__()
        self.num_classes = num_classes
        self.fixed_attention = fixed_attention
        self.head = DAFormerHead(
            in_channels, embed_dim, channels, num_classes, fusion, dilations, dropout
        )
        self.scale_attention = (
            DAFormerHead(
                in_channels, attention_embed_dim, attention_embed_dim,
                num_classes if attention_classwise else 1, "conv1x1", dilations, dropout,
            )
            if fixed_attention is None
            else None
        )
        self.feat_weighter = (
            DAFormerHead(
                in_channels, attention_embed_dim, attention_embed_dim, 1, "conv1x1",
                dilations, dropout,
            )
            if feature_weight_head
            else None
        )

    def attention(self, lr_features: Sequence[Tensor]) -> Tensor:
        """Scale attention from the LR backbone features.

        Returns:
            B×K×h×w (or B×1×h×w) values in [0, 1] at the LR-logit resolution h = H_lr/4; the
            constant ``fixed_attention`` as a B×1×h×w tensor when set.
        """
        if self.scale_attention is None:
            first = lr_features[0]
            return first.new_full((first.shape[0], 1, *first.shape[-2:]), self.fixed_attention)
        return torch.sigmoid(self.scale_attention(lr_features)[1])

    def feature_weight(self, lr_features: Sequence[Tensor]) -> Tensor:
        """CLUDA's LR/HR weight, B×1×h×w in [0, 1] at the LR-logit resolution (not crop-masked).

        Raises:
            ValueError: the head was built without ``feat_weighter``.
        """
        if self.feat_weighter is None:
            raise ValueError("this HRDA head has no feat_weighter (hrda.feature_weight_head)")
        return torch.sigmoid(self.feat_weighter(lr_features)[1])
