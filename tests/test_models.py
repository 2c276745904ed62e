"""Networks: MiT and its timm registration, the DAFormer/HRDA heads and the segmentors.

Reference key/shape tables are written out here from ``release_code.md`` §8, independently of the
model code; full-size models are only built on the meta device.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import pytest
import timm
import torch
import torch.nn.functional as F

import models  # noqa: F401  (registers mit_* with timm)
from models.backbones import build_backbone
from models.backbones.mix_transformer import EfficientSelfAttention, MixVisionTransformer
from models.classes import IMAGENET_MEAN, IMAGENET_STD
from models.config import ModelConfig, get_model_config, list_model_configs
from models.heads.daformer import DAFormerHead
from models.segmentor import (
    DAFormerSegmentor,
    HRDASegmentor,
    build_segmentor,
    random_crop_box,
)

TEST_CONFIGS = [n for n in list_model_configs() if get_model_config(n).backbone == "mit_test"]
HRDA_TEST_CONFIGS = [n for n in TEST_CONFIGS if get_model_config(n).hrda is not None]
MIT_B5_CHANNELS = (64, 128, 320, 512)

Shapes = dict[str, tuple[int, ...]]


# ------------------------------------------------------------------------------------------
# Reference tables (release_code.md §8)
# ------------------------------------------------------------------------------------------


def mit_b5_table() -> Shapes:
    table: Shapes = {}
    depths = (3, 6, 40, 3)
    sr_kernels = (8, 4, 2)
    previous = 3
    for k, (channels, depth) in enumerate(zip(MIT_B5_CHANNELS, depths), start=1):
        kernel = 7 if k == 1 else 3
        table[f"patch_embed{k}.proj.weight"] = (channels, previous, kernel, kernel)
        table[f"patch_embed{k}.proj.bias"] = (channels,)
        table[f"patch_embed{k}.norm.weight"] = (channels,)
        table[f"patch_embed{k}.norm.bias"] = (channels,)
        for i in range(depth):
            block = f"block{k}.{i}"
            for name in ("norm1", "norm2"):
                table[f"{block}.{name}.weight"] = (channels,)
                table[f"{block}.{name}.bias"] = (channels,)
            table[f"{block}.attn.q.weight"] = (channels, channels)
            table[f"{block}.attn.q.bias"] = (channels,)
            table[f"{block}.attn.kv.weight"] = (2 * channels, channels)
            table[f"{block}.attn.kv.bias"] = (2 * channels,)
            table[f"{block}.attn.proj.weight"] = (channels, channels)
            table[f"{block}.attn.proj.bias"] = (channels,)
            if k < 4:
                sr = sr_kernels[k - 1]
                table[f"{block}.attn.sr.weight"] = (channels, channels, sr, sr)
                table[f"{block}.attn.sr.bias"] = (channels,)
                table[f"{block}.attn.norm.weight"] = (channels,)
                table[f"{block}.attn.norm.bias"] = (channels,)
            table[f"{block}.mlp.fc1.weight"] = (4 * channels, channels)
            table[f"{block}.mlp.fc1.bias"] = (4 * channels,)
            table[f"{block}.mlp.dwconv.dwconv.weight"] = (4 * channels, 1, 3, 3)
            table[f"{block}.mlp.dwconv.dwconv.bias"] = (4 * channels,)
            table[f"{block}.mlp.fc2.weight"] = (channels, 4 * channels)
            table[f"{block}.mlp.fc2.bias"] = (channels,)
        table[f"norm{k}.weight"] = (channels,)
        table[f"norm{k}.bias"] = (channels,)
        previous = channels
    return table


def batch_norm(prefix: str, channels: int) -> Shapes:
    shapes: Shapes = {f"{prefix}.num_batches_tracked": ()}
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (channels,)
    return shapes


def embed_table(embed_dim: int) -> Shapes:
    table: Shapes = {}
    for i, channels in enumerate(MIT_B5_CHANNELS):
        table[f"embed_layers.{i}.proj.weight"] = (embed_dim, channels)
        table[f"embed_layers.{i}.proj.bias"] = (embed_dim,)
    return table


def daformer_head_table(embed_dim: int, num_classes: int = 19) -> Shapes:
    fused = 4 * embed_dim
    table = embed_table(embed_dim)
    table["fuse_layer.aspp_modules.0.conv.weight"] = (256, fused, 1, 1)
    table.update(batch_norm("fuse_layer.aspp_modules.0.bn", 256))
    for branch in (1, 2, 3):
        prefix = f"fuse_layer.aspp_modules.{branch}"
        table[f"{prefix}.depthwise_conv.conv.weight"] = (fused, 1, 3, 3)
        table.update(batch_norm(f"{prefix}.depthwise_conv.bn", fused))
        table[f"{prefix}.pointwise_conv.conv.weight"] = (256, fused, 1, 1)
        table.update(batch_norm(f"{prefix}.pointwise_conv.bn", 256))
    table["fuse_layer.bottleneck.conv.weight"] = (256, 1024, 3, 3)
    table.update(batch_norm("fuse_layer.bottleneck.bn", 256))
    table["conv_seg.weight"] = (num_classes, 256, 1, 1)
    table["conv_seg.bias"] = (num_classes,)
    return table


def auxiliary_head_table(outputs: int) -> Shapes:
    table = embed_table(256)
    table["fuse_layer.conv.weight"] = (256, 1024, 1, 1)
    table.update(batch_norm("fuse_layer.bn", 256))
    table["conv_seg.weight"] = (outputs, 256, 1, 1)
    table["conv_seg.bias"] = (outputs,)
    return table


def prefixed(prefix: str, table: Shapes) -> Shapes:
    return {prefix + key: shape for key, shape in table.items()}


def shapes_of(module: torch.nn.Module) -> Shapes:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def random_image(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator) * 255


# ------------------------------------------------------------------------------------------
# MiT
# ------------------------------------------------------------------------------------------


def test_mit_b5_matches_reference_keys_and_parameter_count() -> None:
    with torch.device("meta"):
        model = timm.create_model("mit_b5")
    expected = mit_b5_table()
    assert shapes_of(model) == expected
    expected_count = sum(math.prod(shape) for shape in expected.values())
    assert sum(p.numel() for p in model.parameters()) == expected_count == 81_443_008


def test_mit_b5_features_only_reports_feature_info() -> None:
    with torch.device("meta"):
        features = timm.create_model("mit_b5", features_only=True)
        plain = timm.create_model("mit_b5")
    assert features.feature_info.channels() == list(MIT_B5_CHANNELS)
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    assert plain.feature_info.channels() == list(MIT_B5_CHANNELS)


def test_mit_b5_norms_and_stochastic_depth_follow_the_reference() -> None:
    with torch.device("meta"):
        model = timm.create_model("mit_b5")
    assert model.patch_embed1.norm.eps == 1e-5
    assert model.block1[0].attn.norm.eps == 1e-5
    assert model.block1[0].norm1.eps == model.block3[5].norm2.eps == model.norm4.eps == 1e-6
    assert not hasattr(model.block4[0].attn, "sr")
    rates = [
        block.drop_path.drop_prob if hasattr(block.drop_path, "drop_prob") else 0.0
        for stage in (model.block1, model.block2, model.block3, model.block4)
        for block in stage
    ]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 52).tolist(), abs=1e-7)


def test_mit_plain_module_and_features_only() -> None:
    plain = timm.create_model("mit_test").eval()
    assert isinstance(plain, MixVisionTransformer)
    image = torch.randn(2, 3, 64, 96)
    outputs = plain(image)
    assert [tuple(o.shape) for o in outputs] == [
        (2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)
    ]
    features = timm.create_model("mit_test", features_only=True, out_indices=(1, 2)).eval()
    assert features.feature_info.channels() == [32, 64]
    assert features.feature_info.reduction() == [8, 16]
    # Pruned after the last requested stage; weights keep the NVlabs names under "model.".
    assert not any(key.startswith("model.block4") for key in features.state_dict())
    features.load_state_dict({
        "model." + key: value for key, value in plain.state_dict().items()
        if not key.startswith(("patch_embed4", "block4", "norm4"))
    })
    for got, expected in zip(features(image), outputs[1:3]):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("height,width", [(37, 41), (70, 150), (150, 70)])
def test_mit_accepts_any_size(height: int, width: int) -> None:
    model = timm.create_model("mit_test")
    outputs = model(torch.randn(1, 3, height, width))
    for stage, output in enumerate(outputs):
        stride = 4 * 2**stage
        assert tuple(output.shape[-2:]) == (math.ceil(height / stride), math.ceil(width / stride))


def test_efficient_attention_equals_explicit_softmax_attention() -> None:
    torch.manual_seed(0)
    attention = EfficientSelfAttention(dim=16, num_heads=2, sr_ratio=2)
    height, width = 6, 4
    x = torch.randn(3, height * width, 16)
    query = attention.q(x).reshape(3, -1, 2, 8).permute(0, 2, 1, 3)
    grid = x.permute(0, 2, 1).reshape(3, 16, height, width)
    reduced = attention.norm(attention.sr(grid).reshape(3, 16, -1).permute(0, 2, 1))
    key_value = attention.kv(reduced).reshape(3, -1, 2, 2, 8).permute(2, 0, 3, 1, 4)
    weights = (query @ key_value[0].transpose(-2, -1) * 8**-0.5).softmax(dim=-1)
    expected = attention.proj((weights @ key_value[1]).transpose(1, 2).reshape(3, -1, 16))
    torch.testing.assert_close(attention(x, height, width), expected)


def test_mit_registration_is_idempotent() -> None:
    entrypoint = timm.models.model_entrypoint("mit_b5")
    importlib.import_module("models")
    importlib.import_module("models.backbones.mix_transformer")
    assert timm.models.model_entrypoint("mit_b5") is entrypoint
    assert timm.list_models("mit_*") == [
        "mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5", "mit_test"
    ]


# ------------------------------------------------------------------------------------------
# Other backbones
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,channels",
    [
        ("resnet101", [256, 512, 1024, 2048]),
        ("swin_large_patch4_window12_384", [192, 384, 768, 1536]),
    ],
)
def test_paper_timm_backbones_feature_info(name: str, channels: list[int]) -> None:
    with torch.device("meta"):
        backbone = build_backbone(name)
    assert backbone.feature_info.channels() == channels
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]


# resnet18 and Swin-T stand in for ResNet-101 and Swin-L in forward passes: same timm classes and
# the same build_backbone path, a fraction of the CPU time.
@pytest.mark.parametrize(
    "name,channels",
    [("resnet18", [64, 128, 256, 512]), ("swin_tiny_patch4_window7_224", [96, 192, 384, 768])],
)
def test_timm_backbones_give_nchw_strides_4_to_32(name: str, channels: list[int]) -> None:
    backbone = build_backbone(name).eval()
    assert backbone.feature_info.channels() == channels
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [
        (1, c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32))
    ]
    if name.startswith("swin"):
        with pytest.raises(ValueError, match="divisible by 4"):
            backbone(torch.randn(1, 3, 37, 41))


def test_unknown_or_unsuitable_backbone() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("not_a_model")
    with pytest.raises(ValueError, match="no features at reductions"):
        build_backbone("vit_tiny_patch16_224")


def test_segmentor_with_timm_backbone_any_size() -> None:
    config = dataclasses.replace(get_model_config("daformer_r101"), backbone="resnet18")
    model = build_segmentor(config).eval()
    with torch.no_grad():
        logits = model(random_image(1, 37, 41))
    assert logits.shape == (1, 19, 37, 41) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------
# Heads: exact release key names and shapes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("embed_dim", [256, 512])
def test_daformer_head_matches_release_table(embed_dim: int) -> None:
    with torch.device("meta"):
        head = DAFormerHead(MIT_B5_CHANNELS, embed_dim, 256, 19)
    assert shapes_of(head) == daformer_head_table(embed_dim)


@pytest.mark.parametrize(
    "name,embed_dim", [("daformer_mit_b5", 256), ("cluda_daformer_mit_b5", 512)]
)
def test_daformer_segmentor_state_dict_matches_release(name: str, embed_dim: int) -> None:
    with torch.device("meta"):
        model = build_segmentor(name)
    expected = prefixed("backbone.", mit_b5_table())
    expected.update(prefixed("decode_head.", daformer_head_table(embed_dim)))
    assert shapes_of(model) == expected


@pytest.mark.parametrize(
    "name,embed_dim,weighter",
    [("hrda_mit_b5", 256, False), ("cluda_hrda_mit_b5", 512, True)],
)
def test_hrda_segmentor_state_dict_matches_release(
    name: str, embed_dim: int, weighter: bool
) -> None:
    with torch.device("meta"):
        model = build_segmentor(name)
    expected = prefixed("backbone.", mit_b5_table())
    expected.update(prefixed("decode_head.head.", daformer_head_table(embed_dim)))
    expected.update(prefixed("decode_head.scale_attention.", auxiliary_head_table(19)))
    if weighter:
        expected.update(prefixed("decode_head.feat_weighter.", auxiliary_head_table(1)))
    assert shapes_of(model) == expected


def test_daformer_head_outputs_and_init() -> None:
    torch.manual_seed(0)
    head = DAFormerHead((16, 32, 64, 128), 32, 24, 5)
    features = [torch.randn(2, c, 16 // 2**i, 20 // 2**i) for i, c in enumerate((16, 32, 64, 128))]
    fused, logits = head(features)
    assert fused.shape == (2, 24, 16, 20) and logits.shape == (2, 5, 16, 20)
    assert (fused >= 0).all()
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert (head.conv_seg.bias == 0).all()
    head.eval()
    with torch.no_grad():
        fused, logits = head(features)
        torch.testing.assert_close(head.conv_seg(fused), logits)


# ------------------------------------------------------------------------------------------
# Segmentors over the registry
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEST_CONFIGS)
def test_segmentor_train_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    config = get_model_config(name)
    model = build_segmentor(name).train()
    generator = torch.Generator().manual_seed(1)
    output = model.forward_train(random_image(2, 96, 96), generator=generator)
    classes, channels = config.num_classes, config.channels
    assert output.logits.shape == (2, classes, 24, 24)
    assert output.features.shape == (2, channels, 24, 24)
    assert [f.shape[1] for f in output.backbone_features] == [16, 32, 64, 128]
    loss = output.logits.logsumexp(dim=1).mean() + output.features.mean()
    if config.hrda is not None:
        crop = config.hrda.hr_crop_size
        assert output.hr_logits.shape == (2, classes, crop // 4, crop // 4)
        assert output.lr_logits.shape == (2, classes, 12, 12)
        assert output.attention.shape == (2, classes, 12, 12)
        assert output.hr_features.shape == (2, channels, 24, 24)
        assert output.crop_mask.shape == (2, 1, 12, 12)
        assert output.backbone_features[0].shape[-2:] == (12, 12)
        assert len(output.crop_boxes) == 2
        loss = loss + output.hr_logits.logsumexp(dim=1).mean() + output.hr_features.mean()
        if config.hrda.feature_weight_head:
            assert output.feature_weight.shape == (2, 1, 24, 24)
            loss = loss + output.feature_weight.mean()
        else:
            assert output.feature_weight is None
    loss.backward()
    assert torch.isfinite(loss)
    for key, parameter in model.named_parameters():
        assert parameter.grad is not None, key
        assert torch.isfinite(parameter.grad).all(), key


@pytest.mark.parametrize("name", TEST_CONFIGS)
def test_segmentor_forward_fp32_and_bf16_autocast(name: str) -> None:
    torch.manual_seed(0)
    model = build_segmentor(name).eval()
    image = random_image(2, 64, 64)
    with torch.no_grad():
        reference = model(image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_precision = model(image)
    assert reference.shape == (2, 19, 64, 64) and reference.dtype == torch.float32
    assert torch.isfinite(reference).all() and torch.isfinite(low_precision.float()).all()
    error = (low_precision.float() - reference).abs().max()
    assert error <= 0.05 * reference.abs().max() + 1e-3


# One DAFormer and one HRDA (with every auxiliary head) cover both padding paths.
@pytest.mark.parametrize("name", ["daformer_mit_test", "cluda_hrda_mit_test"])
@pytest.mark.parametrize("height,width", [(70, 150), (150, 70), (37, 41)])
def test_segmentor_forward_any_size(name: str, height: int, width: int) -> None:
    model = build_segmentor(name).eval()
    with torch.no_grad():
        logits = model(random_image(1, height, width))
    assert logits.shape == (1, 19, height, width)
    assert torch.isfinite(logits).all()


def test_normalisation_lives_in_the_model() -> None:
    model = build_segmentor("daformer_mit_test").eval()
    assert "pixel_mean" not in model.state_dict()
    image = random_image(1, 37, 41)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # Padding to a multiple of 32 happens after normalisation, with zeros (the mean colour).
    padded = F.pad((image - mean) / std, (0, 23, 0, 27))
    with torch.no_grad():
        logits = model.decode_head(model.backbone(padded))[1]
        expected = F.interpolate(logits, size=(64, 64), mode="bilinear")[:, :, :37, :41]
        torch.testing.assert_close(model(image), expected)
        torch.testing.assert_close(
            model.extract_features(image)[0], model.backbone((image - mean) / std)[0]
        )


def test_daformer_rejects_crop_boxes() -> None:
    model = build_segmentor("daformer_mit_test")
    with pytest.raises(ValueError, match="no detail crop"):
        model.forward_train(random_image(1, 64, 64), crop_boxes=[(0, 32, 0, 32)])


def test_build_segmentor_errors() -> None:
    with pytest.raises(KeyError, match="hrda_mit_test"):
        build_segmentor("no_such_model")
    with pytest.raises(ValueError, match="HRDASegmentor"):
        DAFormerSegmentor(get_model_config("hrda_mit_test"))
    with pytest.raises(ValueError, match="DAFormerSegmentor"):
        HRDASegmentor(get_model_config("daformer_mit_test"))
    with pytest.raises(ValueError, match="fusion_order"):
        build_segmentor(_hrda_test_config(fusion_order="sideways"))
    with pytest.raises(ValueError, match="crop_coord_divisible"):
        build_segmentor(_hrda_test_config(crop_coord_divisible=4))


# ------------------------------------------------------------------------------------------
# HRDA fusion against hand-written references
# ------------------------------------------------------------------------------------------


def _hrda_test_config(**hrda_changes) -> ModelConfig:
    config = get_model_config("cluda_hrda_mit_test")
    return dataclasses.replace(config, hrda=dataclasses.replace(config.hrda, **hrda_changes))


def _hrda_model(fusion_order: str, seed: int = 0) -> HRDASegmentor:
    torch.manual_seed(seed)
    model = build_segmentor(_hrda_test_config(fusion_order=fusion_order)).eval()
    # A wide classifier spreads the attention over (0, 1), so the fusion orders differ visibly.
    torch.nn.init.normal_(model.decode_head.scale_attention.conv_seg.weight, std=1.0)
    torch.nn.init.normal_(model.decode_head.head.conv_seg.weight, std=1.0)
    return model


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _reference_fusion(
    lr: torch.Tensor, hr: torch.Tensor, attention: torch.Tensor, fusion_order: str
) -> torch.Tensor:
    """release_code.md §3.4, written with the reference's scale_factor resizes."""
    if fusion_order == "hrda":
        return _up2((1 - attention) * lr) + _up2(attention) * hr
    return _up2(attention) * hr + (1 - _up2(attention)) * _up2(lr)


@pytest.mark.parametrize("fusion_order", ["hrda", "cluda"])
def test_hrda_inference_matches_hand_written_reference(fusion_order: str) -> None:
    model = _hrda_model(fusion_order)
    image = random_image(1, 128, 96)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        normalised = F.pad((image - mean) / std, (0, 32))  # padded to 128×128 (multiple of 64)
        lr_features = model.backbone(F.interpolate(normalised, scale_factor=0.5, mode="bilinear"))
        lr = model.decode_head.head(lr_features)[1]
        attention = torch.sigmoid(model.decode_head.scale_attention(lr_features)[1])
        # HR: 64² crops at stride 32 over 128² (3×3 crops), each decoded alone, averaged at H/4.
        hr = torch.zeros(1, 19, 32, 32)
        count = torch.zeros(1, 1, 32, 32)
        for y in (0, 32, 64):
            for x in (0, 32, 64):
                crop = normalised[:, :, y : y + 64, x : x + 64]
                hr[:, :, y // 4 : y // 4 + 16, x // 4 : x // 4 + 16] += model.decode_head.head(
                    model.backbone(crop)
                )[1]
                count[:, :, y // 4 : y // 4 + 16, x // 4 : x // 4 + 16] += 1
        hr = hr / count
        fused = _reference_fusion(lr, hr, attention, fusion_order)
        expected = F.interpolate(fused, size=(128, 128), mode="bilinear")[:, :, :, :96]
        torch.testing.assert_close(model(image), expected, rtol=1e-4, atol=1e-4)
        other = "cluda" if fusion_order == "hrda" else "hrda"
        assert not torch.allclose(_reference_fusion(lr, hr, attention, other), fused, atol=1e-4)


@pytest.mark.parametrize("fusion_order", ["hrda", "cluda"])
def test_hrda_training_fusion_and_crop_placement(fusion_order: str) -> None:
    model = _hrda_model(fusion_order)
    image = random_image(2, 96, 96)
    boxes = [(0, 64, 32, 96), (32, 96, 8, 72)]
    with torch.no_grad():
        output = model.forward_train(image, crop_boxes=boxes)
    assert output.crop_boxes == boxes
    hr_canvas = torch.zeros(2, 19, 24, 24)
    mask = torch.zeros(2, 1, 12, 12)
    for index, (y1, y2, x1, x2) in enumerate(boxes):
        hr_canvas[index, :, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = output.hr_logits[index]
        mask[index, :, y1 // 8 : y2 // 8, x1 // 8 : x2 // 8] = 1
        crop = model.normalize(image)[index : index + 1, :, y1:y2, x1:x2]
        with torch.no_grad():
            crop_features = model.decode_head.head(model.backbone(crop))[0][0]
        torch.testing.assert_close(
            output.hr_features[index, :, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4], crop_features
        )
    torch.testing.assert_close(output.crop_mask, mask)
    assert (output.hr_features * (1 - F.interpolate(mask, scale_factor=2)) == 0).all()
    with torch.no_grad():
        attention = torch.sigmoid(model.decode_head.scale_attention(output.backbone_features)[1])
    torch.testing.assert_close(output.attention, attention * mask)
    expected = _reference_fusion(output.lr_logits, hr_canvas, attention * mask, fusion_order)
    torch.testing.assert_close(output.logits, expected)

    # Away from the crop (one H/4 pixel of bilinear reach), the fused logits are pure LR.
    near_crop = F.max_pool2d(F.interpolate(mask, scale_factor=2), 3, stride=1, padding=1) > 0
    up_lr = _up2(output.lr_logits)
    outside = (~near_crop).expand_as(up_lr)
    assert outside.any()
    torch.testing.assert_close(output.logits[outside], up_lr[outside])


def test_hrda_training_features_follow_release() -> None:
    model = _hrda_model("cluda")
    image = random_image(1, 96, 96)
    with torch.no_grad():
        output = model.forward_train(image, crop_boxes=[(32, 96, 0, 64)])
        lr_fused = model.decode_head.head(output.backbone_features)[0]
        weight = torch.sigmoid(model.decode_head.feat_weighter(output.backbone_features)[1])
    torch.testing.assert_close(
        output.features,
        F.interpolate(lr_fused, scale_factor=2, mode="bilinear", align_corners=True),
    )
    torch.testing.assert_close(output.feature_weight, _up2(weight))
    torch.testing.assert_close(model.extract_features(image)[0], output.backbone_features[0])
    torch.testing.assert_close(model.lr_logits(image), output.lr_logits)


def test_fixed_attention_zero_gives_lr_only() -> None:
    torch.manual_seed(0)
    model = build_segmentor(_hrda_test_config(fixed_attention=0.0)).eval()
    assert model.decode_head.scale_attention is None
    assert not any("scale_attention" in key for key in model.state_dict())
    image = random_image(1, 64, 64)
    with torch.no_grad():
        lr = _up2(model.lr_logits(image))
        torch.testing.assert_close(model(image), F.interpolate(lr, size=(64, 64), mode="bilinear"))


# ------------------------------------------------------------------------------------------
# HRDA crop boxes
# ------------------------------------------------------------------------------------------


def test_crop_box_callable_gets_detached_lr_logits() -> None:
    model = build_segmentor("hrda_mit_test").train()
    seen = []

    def choose(lr_logits: torch.Tensor) -> list[tuple[int, int, int, int]]:
        seen.append(lr_logits)
        return [(8, 72, 32, 96), (0, 64, 0, 64)]

    output = model.forward_train(random_image(2, 96, 96), crop_boxes=choose)
    assert len(seen) == 1 and seen[0].shape == (2, 19, 12, 12) and not seen[0].requires_grad
    torch.testing.assert_close(seen[0], output.lr_logits.detach())
    assert output.crop_boxes == [(8, 72, 32, 96), (0, 64, 0, 64)]


@pytest.mark.parametrize(
    "boxes,message",
    [
        ([(0, 64, 0, 64)], "2 images"),
        ([(0, 64, 0, 64), (4, 68, 0, 64)], "divisible by 8"),
        ([(0, 64, 0, 64), (0, 64, 40, 104)], "outside"),
        ([(0, 64, 0, 64), (0, 72, 0, 72)], "64x64"),
        ([(0, 64, 0, 64), (0, 64, 0)], r"\(y1, y2, x1, x2\)"),
    ],
)
def test_crop_box_validation(boxes, message: str) -> None:
    model = build_segmentor("hrda_mit_test")
    with pytest.raises(ValueError, match=message):
        model.forward_train(random_image(2, 96, 96), crop_boxes=boxes)


def test_hrda_training_input_size_errors() -> None:
    model = build_segmentor("hrda_mit_test")
    with pytest.raises(ValueError, match="divisible by 8"):
        model.forward_train(random_image(1, 100, 96))
    with pytest.raises(ValueError, match="smaller than the detail crop"):
        model.forward_train(random_image(1, 56, 96))


def test_random_crop_box_follows_hrda() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = {random_crop_box(128, 96, 64, 8, generator) for _ in range(300)}
    assert {y1 for y1, *_ in draws} == set(range(0, 64, 8))
    assert {x1 for *_, x1, _ in draws} == set(range(0, 32, 8))
    assert all(y2 - y1 == 64 and x2 - x1 == 64 for y1, y2, x1, x2 in draws)
    assert random_crop_box(64, 64, 64, 8, generator) == (0, 64, 0, 64)
    first = random_crop_box(1024, 1024, 512, 8, torch.Generator().manual_seed(3))
    assert first == random_crop_box(1024, 1024, 512, 8, torch.Generator().manual_seed(3))
    model = build_segmentor("hrda_mit_test")
    generator = torch.Generator().manual_seed(5)
    output = model.forward_train(random_image(2, 96, 96), generator=generator)
    assert output.crop_boxes[0] == output.crop_boxes[1]
    assert output.crop_boxes[0] == random_crop_box(96, 96, 64, 8, torch.Generator().manual_seed(5))
