"""Mix Transformer (MiT), the SegFormer encoder used by DAFormer, HRDA and CLUDA.

Architecture and initialisation follow ``release_code.md`` §3.1 (the SegFormer original); the
parameter names are the NVlabs ones (``patch_embed1.proj.weight``, ``block1.0.attn.kv.weight``,
``norm4.bias``…), so an ImageNet ``mit_b*.pth`` state dict loads without renaming once its
classification ``head.*`` is dropped.

The variants are registered with timm: ``timm.create_model("mit_b5")`` returns the encoder itself,
whose forward gives the four NCHW stage outputs, and ``timm.create_model("mit_b5",
features_only=True)`` wraps it in timm's ``FeatureGetterNet``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import FeatureInfo, build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

__all__ = ["MixVisionTransformer"]

# The reference builds block and stage-output norms with eps 1e-6, while the patch-embedding and
# spatial-reduction norms are plain nn.LayerNorm (eps 1e-5); checkpoints were trained that way.
_BLOCK_NORM_EPS = 1e-6
_DEFAULT_NORM_EPS = 1e-5


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlapping patches, flattened to tokens and normalised.

    The padding is ``patch_size // 2``, so each stage maps a side of n pixels to ceil(n / stride).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2
        )
        self.norm = nn.LayerNorm(embed_dim, eps=_DEFAULT_NORM_EPS)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Maps B×C×H×W to tokens B×(h·w)×E plus the token grid size (h, w)."""
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys and values come from a spatially reduced sequence.

    With ``sr_ratio`` > 1 the tokens are reshaped to their grid, reduced by a stride-``sr_ratio``
    convolution and normalised before the key/value projection (SegFormer's efficient attention).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=_DEFAULT_NORM_EPS)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """Tokens B×N×C (N = height·width) in, B×N×C out."""
        batch, tokens, channels = x.shape
        head_dim = channels // self.num_heads
        query = self.q(x).reshape(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(batch, channels, height, width)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        key_value = self.kv(x).reshape(batch, -1, 2, self.num_heads, head_dim)
        key_value = key_value.permute(2, 0, 3, 1, 4)
        # The default scale of scaled_dot_product_attention is head_dim ** -0.5, the reference's
        # qk_scale; the fused kernel avoids materialising the attention matrix.
        attended = F.scaled_dot_product_attention(query, key_value[0], key_value[1])
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, channels))


class DepthwiseConv(nn.Module):
    """3×3 depthwise convolution applied to a token sequence laid out on its grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        batch, _, channels = x.shape
        grid = x.transpose(1, 2).reshape(batch, channels, height, width)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear → depthwise 3×3 conv → GELU → linear (the conv replaces positional embeddings)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DepthwiseConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), height, width)))


class Block(nn.Module):
    """Pre-norm block: ``x += DropPath(Attn(LN(x)))``, then ``x += DropPath(MixFFN(LN(x)))``."""

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class MixVisionTransformer(nn.Module):
    """Hierarchical MiT encoder with four stages at output strides 4, 8, 16 and 32.

    Stage k (1-based) owns ``patch_embed{k}``, ``block{k}`` and ``norm{k}``. Inputs may have any
    height and width: every stride-s patch embedding rounds up, so stage k has
    ceil(H / 4 / 2^(k-1)) rows. The spatial-reduction convolution needs each stage-1 side to be at
    least ``sr_ratios[0]`` tokens (29 pixels for the reference ratios).

    Attributes:
        feature_info: timm ``FeatureInfo`` of the four stage outputs (channels, reductions).
    """

    def __init__(
        self,
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        depths: tuple[int, ...] = (3, 6, 40, 3),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
        num_classes: int = 0,
    ) -> None:
        """Builds the encoder.

        Args:
            embed_dims: channels of each stage.
            depths: transformer blocks per stage.
            num_heads: attention heads per stage.
            sr_ratios: spatial-reduction ratio of the keys/values per stage.
            mlp_ratio: hidden width of MixFFN relative to the stage width.
            drop_path_rate: stochastic depth of the last block; it grows linearly from 0 over
                all blocks in order.
            in_chans: input channels.
            num_classes: must be 0 (timm passes it); this module is an encoder without the
                ImageNet classifier.
        """
        super().__init__()
        if num_classes:
            raise ValueError("MixVisionTransformer is an encoder only; num_classes must be 0")
        if not len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios):
            raise ValueError("embed_dims, depths, num_heads and sr_ratios need one entry per stage")
        self.in_chans = in_chans
        self.num_classes = 0
        self.num_stages = len(depths)
        total_blocks = sum(depths)
        # Python arithmetic instead of torch.linspace keeps construction possible on the meta
        # device (no .item() on a meta tensor).
        rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        info = []
        in_channels = in_chans
        first_block = 0
        for stage, dim in enumerate(embed_dims):
            patch_size, stride = (7, 4) if stage == 0 else (3, 2)
            self.add_module(
                f"patch_embed{stage + 1}", OverlapPatchEmbed(in_channels, dim, patch_size, stride)
            )
            blocks = [
                Block(dim, num_heads[stage], sr_ratios[stage], mlp_ratio, rates[first_block + i])
                for i in range(depths[stage])
            ]
            self.add_module(f"block{stage + 1}", nn.ModuleList(blocks))
            self.add_module(f"norm{stage + 1}", nn.LayerNorm(dim, eps=_BLOCK_NORM_EPS))
            info.append(dict(num_chs=dim, reduction=4 * 2**stage, module=f"norm{stage + 1}"))
            in_channels = dim
            first_block += depths[stage]
        self.num_features = embed_dims[-1]
        self.feature_info = FeatureInfo(info, out_indices=tuple(range(self.num_stages)))
        self.apply(_init_weights)

    def _stage(self, index: int, x: Tensor) -> Tensor:
        """Runs stage ``index`` (0-based) on an NCHW map and returns its NCHW output."""
        tokens, height, width = getattr(self, f"patch_embed{index + 1}")(x)
        for block in getattr(self, f"block{index + 1}"):
            tokens = block(tokens, height, width)
        tokens = getattr(self, f"norm{index + 1}")(tokens)
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, height, width)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's feature-extraction interface (used by ``features_only=True``).

        Args:
            x: B×C×H×W input.
            indices: stages to return: None for all, an int n for the last n, or a list.
            norm: accepted for timm's interface; every stage output is already normalised by
                its own ``norm{k}`` and there is no extra final norm.
            stop_early: skip the stages after the last requested one.
            output_fmt: only "NCHW".
            intermediates_only: return only the list of stage outputs.

        Returns:
            The requested stage outputs (B×C_k×H_k×W_k), preceded by the last computed stage's
            output unless ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"MixVisionTransformer only outputs NCHW, got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last_stage = max_index if stop_early else self.num_stages - 1
        intermediates = []
        for stage in range(last_stage + 1):
            x = self._stage(stage, x)
            if stage in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Removes the stages after the last requested one (timm's ``FeatureGetterNet`` calls this).

        ``prune_norm`` and ``prune_head`` are accepted for timm's interface: MiT has neither a
        final norm outside its stages nor a classifier.

        Returns:
            The absolute indices of the requested stages.
        """
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for stage in range(max_index + 1, self.num_stages):
            for prefix in ("patch_embed", "block", "norm"):
                delattr(self, f"{prefix}{stage + 1}")
        self.num_stages = max_index + 1
        self.num_features = self.feature_info.info[max_index]["num_chs"]
        self.feature_info = FeatureInfo(
            self.feature_info.info[: max_index + 1], out_indices=tuple(range(self.num_stages))
        )
        return take_indices

    def forward(self, x: Tensor) -> list[Tensor]:
        """B×C×H×W in; the list of the four stage outputs, B×C_k×H/2^(k+1)×W/2^(k+1), out."""
        return self.forward_intermediates(x, intermediates_only=True)


@torch.no_grad()
def _init_weights(module: nn.Module) -> None:
    """SegFormer's ``_init_weights``, applied to every submodule.

    timm 0.3.2's ``trunc_normal_`` truncates at ±2 absolute (not ±2 std); ``a``/``b`` mirror it.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        fan_out //= module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# No weight location: ImageNet MiT files are loaded by models.checkpoint (their licence is
# NVIDIA's non-commercial one). num_classes 0 because the encoder has no classifier.
_PRETRAINED_CFG = dict(
    url="", num_classes=0, input_size=(3, 512, 512), mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225), first_conv="patch_embed1.proj", license="other",
    paper_name="SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
)
# timm's register_model looks up a module-level ``default_cfgs``.
default_cfgs = generate_default_cfgs({
    name: dict(_PRETRAINED_CFG)
    for name in ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mit_test")
})


def _create_mit(variant: str, pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_model_with_cfg(
        MixVisionTransformer, variant, pretrained,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices), **kwargs,
    )


_WIDE = (64, 128, 320, 512)
_HEADS = (1, 2, 5, 8)


@register_model
def mit_b0(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B0: widths (32, 64, 160, 256), depths (2, 2, 2, 2)."""
    return _create_mit(
        "mit_b0", pretrained, embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2),
        num_heads=_HEADS, **kwargs,
    )


@register_model
def mit_b1(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B1: widths (64, 128, 320, 512), depths (2, 2, 2, 2)."""
    return _create_mit(
        "mit_b1", pretrained, embed_dims=_WIDE, depths=(2, 2, 2, 2), num_heads=_HEADS, **kwargs
    )


@register_model
def mit_b2(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B2: depths (3, 4, 6, 3)."""
    return _create_mit(
        "mit_b2", pretrained, embed_dims=_WIDE, depths=(3, 4, 6, 3), num_heads=_HEADS, **kwargs
    )


@register_model
def mit_b3(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B3: depths (3, 4, 18, 3)."""
    return _create_mit(
        "mit_b3", pretrained, embed_dims=_WIDE, depths=(3, 4, 18, 3), num_heads=_HEADS, **kwargs
    )


@register_model
def mit_b4(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B4: depths (3, 8, 27, 3)."""
    return _create_mit(
        "mit_b4", pretrained, embed_dims=_WIDE, depths=(3, 8, 27, 3), num_heads=_HEADS, **kwargs
    )


@register_model
def mit_b5(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """MiT-B5 (DAFormer/HRDA/CLUDA): depths (3, 6, 40, 3)."""
    return _create_mit(
        "mit_b5", pretrained, embed_dims=_WIDE, depths=(3, 6, 40, 3), num_heads=_HEADS, **kwargs
    )


@register_model
def mit_test(pretrained: bool = False, **kwargs) -> MixVisionTransformer:
    """Tiny MiT for CPU tests: widths (16, 32, 64, 128), one block per stage."""
    return _create_mit(
        "mit_test", pretrained, embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8), **kwargs,
    )
