"""Model configuration: one frozen dataclass and a registry of named architectures."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from .classes import NUM_CLASSES


@dataclass(frozen=True)
class HRDAConfig:
    """HRDA multi-resolution settings (release_code.md §3.4).

    Attributes:
        lr_scale: scale of the low-resolution context pass (0.5: a 1024² crop is seen at 512²).
        hr_crop_size: side of the high-resolution detail crop, in input pixels.
        crop_coord_divisible: detail-crop offsets are multiples of this.
        hr_slide_stride: stride of the detail crops at inference (hr_crop_size/2 = overlapping).
        attention_embed_dim: per-level embedding width of the scale-attention head.
        attention_classwise: one attention channel per class (True) or one shared channel.
        fusion_order: "hrda" multiplies the LR logits by (1 − att) before upsampling (lhoyer/HRDA,
            needed to reproduce HRDA/MIC checkpoints); "cluda" after upsampling (user0407/CLUDA).
        feature_weight_head: CLUDA's one-channel head predicting the per-pixel LR/HR weight of the
            contrastive loss (paper eq. 7).
        fixed_attention: if set, replaces the learned attention by this constant (0 = LR only,
            1 = HR only), as the reference's `--hrda-out` visualisation switch.
    """

    lr_scale: float = 0.5
    hr_crop_size: int = 512
    crop_coord_divisible: int = 8
    hr_slide_stride: int = 256
    attention_embed_dim: int = 256
    attention_classwise: bool = True
    fusion_order: str = "hrda"
    feature_weight_head: bool = False
    fixed_attention: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a segmentor (DAFormer single-scale, or HRDA when ``hrda`` is set).

    Attributes:
        backbone: timm model name of the encoder (``mit_b0``…``mit_b5``, ``mit_test``,
            ``resnet101``, ``swin_large_patch4_window12_384``…), built with ``features_only``.
        num_classes: output classes (19 Cityscapes trainIds).
        embed_dim: DAFormer per-level MLP embedding width E (256 DAFormer/HRDA, 512 CLUDA).
        channels: width of the fused feature map (the contrastive feature), 256 in every reference.
        fusion: "sepaspp" (context-aware fusion, DAFormer) or "conv1x1".
        aspp_dilations: dilations of the separable ASPP branches.
        dropout: Dropout2d probability before the classifier.
        drop_path_rate: stochastic depth of the encoder.
        hrda: multi-resolution settings; None for a single-resolution DAFormer segmentor.
        inference_window: outer sliding-window size for evaluation (HRDA: 1024); 0 means the
            whole image in one pass (DAFormer's evaluation).
        inference_stride: outer sliding-window stride.
        eval_scale: (long side, short side) box that inputs are rescaled into, keeping their
            aspect ratio, before inference: the scale the model was trained at (mmseg's
            keep-ratio ``img_scale``: (2048, 1024) for HRDA on Cityscapes, (1024, 512) for
            DAFormer).
    """

    backbone: str = "mit_b5"
    num_classes: int = NUM_CLASSES
    embed_dim: int = 256
    channels: int = 256
    fusion: str = "sepaspp"
    aspp_dilations: tuple[int, ...] = (1, 6, 12, 18)
    dropout: float = 0.1
    drop_path_rate: float = 0.1
    hrda: HRDAConfig | None = None
    inference_window: int = 0
    inference_stride: int = 0
    eval_scale: tuple[int, int] = (1024, 512)


_MODEL_CONFIGS: dict[str, ModelConfig] = {}


def register_model_config(name: str, config: ModelConfig) -> ModelConfig:
    """Adds a named architecture; a duplicate name is an error."""
    if name in _MODEL_CONFIGS:
        raise ValueError(f"model config {name!r} is already registered")
    _MODEL_CONFIGS[name] = config
    return config


def get_model_config(name: str) -> ModelConfig:
    """Returns the named architecture, or raises listing the valid names."""
    try:
        return _MODEL_CONFIGS[name]
    except KeyError:
        raise KeyError(
            f"unknown model config {name!r}; valid names: {', '.join(sorted(_MODEL_CONFIGS))}"
        ) from None


def list_model_configs() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_MODEL_CONFIGS)


def optional_inner(tp: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); any other type → (type, False)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuilds a nested frozen dataclass from ``dataclasses.asdict``/JSON output.

    Lists become tuples where the field is a tuple; unknown keys are an error listing the valid
    ones (a checkpoint from another version fails loudly instead of silently).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(names)}")
    values = {}
    for name, value in data.items():
        inner, _ = optional_inner(hints[name])
        if value is None:
            values[name] = None
        elif isinstance(inner, type) and dataclasses.is_dataclass(inner):
            values[name] = dataclass_from_dict(inner, value)
        elif typing.get_origin(inner) is tuple:
            values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            values[name] = value
    return cls(**values)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuilds a ModelConfig from ``dataclasses.asdict`` output (e.g. a checkpoint's JSON)."""
    return dataclass_from_dict(ModelConfig, data)


_HRDA = HRDAConfig()
_HRDA_CLUDA = HRDAConfig(fusion_order="cluda", feature_weight_head=True)
# Tiny variants keep the reference ratios (detail crop = half the outer crop, stride = half the
# detail crop) at a size where a CPU step takes a fraction of a second.
_HRDA_TEST = HRDAConfig(hr_crop_size=64, hr_slide_stride=32, attention_embed_dim=32)
_HRDA_CLUDA_TEST = dataclasses.replace(_HRDA_TEST, fusion_order="cluda", feature_weight_head=True)

for _name, _cfg in {
    "daformer_mit_b5": ModelConfig(),
    "hrda_mit_b5": ModelConfig(
        hrda=_HRDA, inference_window=1024, inference_stride=512, eval_scale=(2048, 1024)
    ),
    "cluda_daformer_mit_b5": ModelConfig(embed_dim=512),
    "cluda_hrda_mit_b5": ModelConfig(
        embed_dim=512, hrda=_HRDA_CLUDA, inference_window=1024, inference_stride=512,
        eval_scale=(2048, 1024),
    ),
    "daformer_r101": ModelConfig(backbone="resnet101", embed_dim=512, fusion="conv1x1"),
    "daformer_swin_l": ModelConfig(backbone="swin_large_patch4_window12_384"),
    "daformer_mit_test": ModelConfig(
        backbone="mit_test", embed_dim=32, channels=32, eval_scale=(256, 128)
    ),
    "hrda_mit_test": ModelConfig(
        backbone="mit_test", embed_dim=32, channels=32, hrda=_HRDA_TEST,
        inference_window=128, inference_stride=64, eval_scale=(256, 128),
    ),
    "cluda_daformer_mit_test": ModelConfig(
        backbone="mit_test", embed_dim=64, channels=32, eval_scale=(256, 128)
    ),
    "cluda_hrda_mit_test": ModelConfig(
        backbone="mit_test", embed_dim=64, channels=32, hrda=_HRDA_CLUDA_TEST,
        inference_window=128, inference_stride=64, eval_scale=(256, 128),
    ),
}.items():
    register_model_config(_name, _cfg)
