"""Encoders behind one interface: ``forward(x)`` gives four NCHW maps at strides 4, 8, 16 and 32,
and ``feature_info.channels()`` / ``feature_info.reduction()`` describe them.

Importing this package registers the MiT variants (``mit_b0``…``mit_b5``, ``mit_test``) with timm.
"""

from __future__ import annotations

import timm
import torch
from timm.models._features import FeatureGetterNet
from torch import Tensor, nn

# Importing the module registers the MiT variants with timm.
from .mix_transformer import MixVisionTransformer

__all__ = ["MixVisionTransformer", "TimmFeatureBackbone", "build_backbone"]

FEATURE_REDUCTIONS: tuple[int, ...] = (4, 8, 16, 32)


class TimmFeatureBackbone(FeatureGetterNet):
    """timm's feature getter with an input-size check; returns the stride-4…32 maps in NCHW.

    ``forward_intermediates`` already returns NCHW for models whose native layout is NHWC, such
    as Swin. Patch-embedding models built with ``strict_img_size=False`` accept any size that is
    a multiple of their patch size; the check here makes the error name that multiple. Parameters
    keep timm's names under ``model.``.

    Attributes:
        size_multiple: input height and width must be multiples of this (set by
            :func:`build_backbone`).
    """

    size_multiple: int = 1

    def forward(self, x: Tensor) -> list[Tensor]:
        """B×3×H×W in; four B×C_k×H/s_k×W/s_k maps (s_k = 4, 8, 16, 32) out."""
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"this backbone needs input height and width divisible by {self.size_multiple}, "
                f"got {height}x{width} (the segmentors pad for you)"
            )
        return super().forward(x)


def _stride_indices(name: str, feature_info: list[dict]) -> tuple[int, ...]:
    """Indices of the last feature at each reduction 4, 8, 16 and 32 of a timm model."""
    last_at = {info["reduction"]: index for index, info in enumerate(feature_info)}
    missing = [r for r in FEATURE_REDUCTIONS if r not in last_at]
    if missing:
        available = sorted(last_at)
        raise ValueError(
            f"backbone {name} has no features at reductions {missing} (it has {available}); "
            f"the decoders need reductions {list(FEATURE_REDUCTIONS)}"
        )
    return tuple(last_at[r] for r in FEATURE_REDUCTIONS)


def build_backbone(name: str, drop_path_rate: float = 0.1) -> nn.Module:
    """Builds a randomly initialised encoder; pretrained weights come from ``models.checkpoint``.

    Args:
        name: ``mit_b0``…``mit_b5`` or ``mit_test`` (the plain :class:`MixVisionTransformer`,
            whose state-dict keys are the NVlabs names), or any timm model with features at
            strides 4…32 and ``forward_intermediates`` (``resnet101``,
            ``swin_large_patch4_window12_384``…), wrapped in :class:`TimmFeatureBackbone`.
        drop_path_rate: stochastic depth rate.

    Returns:
        A module whose forward maps B×3×H×W to a list of four NCHW feature maps and which has
        ``feature_info``.

    Raises:
        ValueError: unknown name, or a timm model without the four reductions.
    """
    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {name!r}; MiT variants: {', '.join(timm.list_models('mit_*'))}, "
            "or any timm model name with features at strides 4..32"
        )
    if name.startswith("mit_"):
        return timm.create_model(name, pretrained=False, drop_path_rate=drop_path_rate)
    # A meta-device probe reads the feature layout without allocating weights.
    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False)
    out_indices = _stride_indices(name, probe.feature_info)
    extra = {}
    size_multiple = 1
    patch_embed = getattr(probe, "patch_embed", None)
    if getattr(patch_embed, "strict_img_size", False):
        # Fixed-size patch-embedding models (Swin) accept other sizes with dynamic masks and
        # window padding once strict_img_size is off, still requiring whole patches.
        extra["strict_img_size"] = False
        size_multiple = max(patch_embed.patch_size)
    backbone = timm.create_model(
        name, pretrained=False, features_only=True, feature_cls=TimmFeatureBackbone,
        out_indices=out_indices, drop_path_rate=drop_path_rate, **extra,
    )
    backbone.size_multiple = size_multiple
    return backbone
