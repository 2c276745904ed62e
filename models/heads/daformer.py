"""DAFormer's context-aware fusion decoder (``release_code.md`` §3.2, §3.3).

The building blocks reproduce mmcv's ``ConvModule`` (conv without bias → BN → ReLU, keys
``conv.*``/``bn.*``) and ``DepthwiseSeparableConvModule`` (keys ``depthwise_conv.*`` and
``pointwise_conv.*``) so that released DAFormer/HRDA/MIC/CLUDA checkpoints load by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvModule",
    "DAFormerHead",
    "DepthwiseSeparableConvModule",
    "MLPEmbedding",
    "SeparableASPP",
]

FUSIONS = ("sepaspp", "conv1x1")


class ConvModule(nn.Module):
    """Convolution without bias, BatchNorm and ReLU, initialised as mmcv's ``ConvModule``.

    The convolution is Kaiming-normal (fan_out, ReLU gain), BN weight 1 and bias 0.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
            groups=groups, bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """Depthwise k×k ``ConvModule`` then pointwise 1×1 ``ConvModule``, each with BN+ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int, dilation: int
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
            groups=in_channels,
        )
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class SeparableASPP(nn.Module):
    """DAFormer's ``ASPPWrapper(sep=True, pool=False)``: dilated branches and a 3×3 bottleneck.

    Dilation 1 is a 1×1 ``ConvModule``; every other dilation d a depthwise-separable 3×3 conv with
    dilation and padding d. The branch outputs are concatenated into the bottleneck.
    """

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1)
            if dilation == 1
            else DepthwiseSeparableConvModule(
                in_channels, channels, 3, padding=dilation, dilation=dilation
            )
            for dilation in dilations
        )
        self.bottleneck = ConvModule(len(dilations) * channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.bottleneck(torch.cat([branch(x) for branch in self.aspp_modules], dim=1))


class MLPEmbedding(nn.Module):
    """Per-pixel ``Linear(C → E)`` (no norm, no activation) on an NCHW map."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """B×C×h×w in, B×E×h×w out."""
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DAFormerHead(nn.Module):
    """DAFormer decoder returning the fused feature and the logits.

    Each level is embedded to E channels, resized bilinearly (``align_corners=False``) to the
    first level's size, concatenated (4E channels) and fused — separable ASPP with dilations
    (1, 6, 12, 18) for DAFormer's context-aware fusion, or a 1×1 ``ConvModule`` for HRDA's scale
    attention and CLUDA's feature weight — into ``channels`` maps after BN+ReLU: the fused
    feature (CLUDA's contrastive feature). Dropout2d and a 1×1 classifier (``conv_seg``,
    Normal(0, 0.01), bias 0) give the logits.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        embed_dim: int,
        channels: int,
        num_classes: int,
        fusion: str = "sepaspp",
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        """Builds the head.

        Args:
            in_channels: channels of each backbone level, finest first.
            embed_dim: per-level embedding width E (256 DAFormer/HRDA, 512 CLUDA).
            channels: width of the fused feature.
            num_classes: logit channels.
            fusion: "sepaspp" or "conv1x1".
            dilations: ASPP dilations (used by "sepaspp").
            dropout: Dropout2d probability before the classifier.
        """
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.embed_layers = nn.ModuleList(MLPEmbedding(c, embed_dim) for c in in_channels)
        fused_in = len(in_channels) * embed_dim
        if fusion == "sepaspp":
            self.fuse_layer = SeparableASPP(fused_in, channels, dilations)
        else:
            self.fuse_layer = ConvModule(fused_in, channels, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Decodes a feature pyramid.

        Args:
            features: one B×C_i×h_i×w_i map per level, finest first.

        Returns:
            ``(fused, logits)``: B×channels×h_0×w_0 (post-ReLU) and B×K×h_0×w_0.
        """
        if len(features) != len(self.embed_layers):
            raise ValueError(
                f"expected {len(self.embed_layers)} feature levels, got {len(features)}"
            )
        size = features[0].shape[-2:]
        embedded = []
        for level, embed in zip(features, self.embed_layers):
            x = embed(level)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            embedded.append(x)
        fused = self.fuse_layer(torch.cat(embedded, dim=1))
        return fused, self.conv_seg(self.dropout(fused))
