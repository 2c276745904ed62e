"""Presets, --set overrides, the optimiser rules, the schedule and the mIoU computation."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from models.config import model_config_from_dict, get_model_config
from training.config import TrainConfig, get_preset
from training.metrics import ConfusionMatrix, scores
from training.optim import build_optimizer, lr_factor, parameter_groups
from training.overrides import (
    OverrideError,
    apply_overrides,
    dataclass_from_dict,
    field_paths,
    to_dict,
)

REQUIRED_PRESETS = ["gta_hrda", "synthia_hrda", "gta_daformer", "synthia_daformer",
                    "gta_hrda_nocl", "gta_daformer_nocl", "gta_source_only", "gta_hrda_mic",
                    "toy_hrda", "toy_daformer", "toy_source_only", "toy_target_only"]


def test_every_required_preset_exists_and_round_trips_through_json() -> None:
    for name in REQUIRED_PRESETS:
        config = get_preset(name)
        assert config.preset == name
        restored = dataclass_from_dict(TrainConfig, json.loads(json.dumps(to_dict(config))))
        assert restored == config


def test_paper_numbers_in_presets() -> None:
    hrda = get_preset("gta_hrda")
    assert hrda.model.embed_dim == 512 and hrda.model.hrda.feature_weight_head
    assert hrda.data.crop_size == (1024, 1024) and hrda.seed == 1
    assert hrda.uda.ema_alpha == 0.999 and hrda.uda.pseudo_threshold == 0.968
    assert hrda.contrast.grid == (65, 65) and hrda.contrast.temperature == 1.0
    assert hrda.optim.lr == 6e-5 and hrda.iterations == 40000
    assert get_preset("gta_hrda_nocl").model.embed_dim == 256
    assert get_preset("gta_daformer").seed == 0


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="toy_hrda"):
        get_preset("toy")


def test_overrides_reach_nested_fields_and_check_types() -> None:
    config = apply_overrides(get_preset("toy_hrda"), [
        "iterations=7", "model.hrda.hr_crop_size=64", "data.crop_size=128,128",
        "contrast.variant=release", "uda.blur=false", "optim.betas=(0.8, 0.99)",
    ])
    assert config.iterations == 7 and config.model.hrda.hr_crop_size == 64
    assert config.data.crop_size == (128, 128) and config.contrast.variant == "release"
    assert config.uda.blur is False and config.optim.betas == (0.8, 0.99)
    with pytest.raises(OverrideError, match="valid keys here: .*iterations"):
        apply_overrides(config, ["iteration=3"])
    with pytest.raises(OverrideError, match="expected an integer"):
        apply_overrides(config, ["iterations=many"])
    with pytest.raises(OverrideError, match="expected 2 comma-separated"):
        apply_overrides(config, ["data.crop_size=1,2,3"])
    with pytest.raises(OverrideError, match="key=value"):
        apply_overrides(config, ["iterations"])
    with pytest.raises(OverrideError, match="group of settings"):
        apply_overrides(config, ["model=3"])


def test_every_field_path_can_be_set_to_its_own_value() -> None:
    config = get_preset("toy_hrda")
    for path in field_paths(config):
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        if isinstance(value, tuple):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        assert apply_overrides(config, [f"{path}={text}"]) == config, path


def test_model_config_from_dict_rejects_unknown_fields() -> None:
    data = dataclasses.asdict(get_model_config("hrda_mit_b5"))
    data["hrda"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        model_config_from_dict(data)


def test_parameter_groups_follow_mmcv_paramwise_rules() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.ModuleDict({"norm1": torch.nn.LayerNorm(4),
                                                 "fc": torch.nn.Linear(4, 4)})
            self.decode_head = torch.nn.ModuleDict({"bn": torch.nn.BatchNorm2d(4),
                                                    "conv": torch.nn.Conv2d(4, 2, 1)})

    model = Tiny()
    config = get_preset("gta_hrda").optim
    by_param = {}
    for group in parameter_groups(model, config):
        for parameter in group["params"]:
            by_param[id(parameter)] = (group["lr"], group["weight_decay"])
    named = dict(model.named_parameters())
    assert by_param[id(named["backbone.norm1.weight"])] == (6e-5, 0.0)
    assert by_param[id(named["backbone.fc.weight"])] == (6e-5, 0.01)
    assert by_param[id(named["backbone.fc.bias"])] == (6e-5, 0.01)
    assert by_param[id(named["decode_head.bn.weight"])] == pytest.approx((6e-4, 0.01))
    assert by_param[id(named["decode_head.conv.weight"])] == pytest.approx((6e-4, 0.01))
    assert len(build_optimizer(model, config).param_groups) == 3


def test_schedule_matches_mmcv_poly_with_linear_warmup() -> None:
    config = get_preset("gta_hrda").optim
    total = 40000
    assert lr_factor(0, total, config) == pytest.approx(1e-6)
    t = 750
    poly = 1 - t / total
    assert lr_factor(t, total, config) == pytest.approx(poly * (1 - (1 - t / 1500) * (1 - 1e-6)))
    assert lr_factor(1500, total, config) == pytest.approx(1 - 1500 / total)
    assert lr_factor(20000, total, config) == pytest.approx(0.5)
    assert lr_factor(total, total, config) == 0.0


def test_confusion_matrix_and_miou_by_hand() -> None:
    matrix = ConfusionMatrix(num_classes=3)
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    matrix.update(prediction, label)
    # class 0: TP 1, FP 1 (a 2 predicted as 0), FN 1 → 1/3; class 1: TP 2, FP 1, FN 1 → 2/4;
    # class 2: TP 1, FP 1, FN 1 → 1/3. The ignored pixel counts nowhere.
    assert matrix.iou() == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert matrix.matrix.sum() == 7


def test_miou_subsets_and_absent_classes() -> None:
    matrix = ConfusionMatrix(num_classes=19)
    label = torch.arange(19).repeat(2)
    prediction = label.clone()
    prediction[:19] = torch.where(label[:19] == 3, torch.tensor(4), label[:19])
    matrix.update(prediction, label)
    result = scores(matrix)
    iou = list(result.per_class_iou.values())
    assert iou[3] == pytest.approx(0.5) and iou[4] == pytest.approx(2 / 3)
    assert result.miou19 == pytest.approx((17 + 0.5 + 2 / 3) / 19)
    assert result.miou13 == pytest.approx(1.0)
    empty = ConfusionMatrix(num_classes=19)
    empty.update(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    assert math.isnan(empty.iou()[5]) and scores(empty).miou19 == 1.0
    assert "mIoU16" in result.table()
