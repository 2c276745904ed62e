"""One full UDA step on tiny models: terms, gradients, EMA, options."""

from __future__ import annotations

import copy

import pytest
import torch

from models.segmentor import build_segmentor
from training.config import TrainConfig, get_preset
from training.ema import ema_alpha
from training.overrides import apply_overrides
from training.uda_step import UDABatch, uda_step

SIZE = 64


def _config(preset: str, *extra: str) -> TrainConfig:
    changes = [f"data.crop_size={SIZE},{SIZE}", "contrast.grid=9,9", "contrast.block_size=40"]
    if get_preset(preset).model.hrda is not None:
        changes += ["model.hrda.hr_crop_size=32", "model.hrda.hr_slide_stride=16"]
    return apply_overrides(get_preset(preset), changes + list(extra))


def _batch(seed: int = 0) -> UDABatch:
    generator = torch.Generator().manual_seed(seed)
    source_label = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    source_label[:, :20] = 10  # sky
    source_label[:, 20:40] = 2  # building
    source_label[:, 32:, :32] = 13  # car, a thing class: one whole stride-32 feature cell
    source_label[:, 40:, 32:] = 0  # road
    source_label[:, :3] = 255
    valid = torch.ones(2, SIZE, SIZE)
    valid[:, -6:] = 0
    return UDABatch(
        src_img=torch.rand(2, 3, SIZE, SIZE, generator=generator) * 255,
        src_label=source_label,
        tgt_img=torch.rand(2, 3, SIZE, SIZE, generator=generator) * 255,
        tgt_valid_mask=valid,
        tgt_label=source_label.flip(-1),
    )


def _models(config: TrainConfig, with_imagenet: bool = True):
    torch.manual_seed(0)
    student = build_segmentor(config.model).train()
    teacher = copy.deepcopy(student)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    imagenet = None
    if with_imagenet:
        imagenet = copy.deepcopy(student).eval()
        for parameter in imagenet.parameters():
            parameter.requires_grad_(False)
    # A teacher that already differs from the student makes the EMA check meaningful.
    with torch.no_grad():
        for parameter in teacher.parameters():
            parameter.add_(0.01)
    return student, teacher, imagenet


@pytest.mark.parametrize("preset,expected_terms", [
    ("toy_hrda", {"seg_src", "fd", "cl_src", "seg_mix", "cl_mix"}),
    ("toy_daformer", {"seg_src", "fd", "cl_src", "seg_mix", "cl_mix"}),
])
def test_full_step_terms_gradients_and_ema(preset: str, expected_terms: set[str]) -> None:
    config = _config(preset, "uda.fd_lambda=0.005")
    student, teacher, imagenet = _models(config)
    teacher_before = [p.clone() for p in teacher.parameters()]
    student_before = [p.clone() for p in student.parameters()]
    iteration = 10
    result = uda_step(student, teacher, imagenet, _batch(), config, iteration,
                      torch.Generator().manual_seed(1))
    assert set(result.terms) == expected_terms
    for name in expected_terms | {"loss", "pseudo_confidence"}:
        assert name in result.logs and torch.isfinite(torch.tensor(result.logs[name])), name
    assert result.logs["cl_src"] > 0 and result.logs["cl_mix"] > 0
    if config.model.hrda is None:
        assert result.logs["fd"] > 0  # the car cell, features differing through drop path
    assert result.logs["loss"] == pytest.approx(sum(result.logs[t] for t in expected_terms),
                                                rel=1e-5)
    result.loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in imagenet.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    alpha = ema_alpha(iteration, config.uda.ema_alpha)
    for after, before, source in zip(teacher.parameters(), teacher_before, student_before):
        torch.testing.assert_close(after, alpha * before + (1 - alpha) * source)


def test_feature_distance_pulls_thing_features_towards_imagenet() -> None:
    config = _config("toy_daformer", "uda.fd_lambda=0.005", "contrast.enabled=false")
    student, teacher, imagenet = _models(config)
    with torch.no_grad():
        for parameter in imagenet.backbone.parameters():
            parameter.mul_(1.1)
    result = uda_step(student, teacher, imagenet, _batch(), config, 1,
                      torch.Generator().manual_seed(0))
    assert result.logs["fd"] > 0
    result.terms["fd"].backward()
    assert all(p.grad is None for p in student.decode_head.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.backbone.parameters())


def test_zero_feature_distance_has_finite_gradients() -> None:
    from training.feature_distance import thing_feature_distance

    features = torch.randn(2, 8, 2, 2, requires_grad=True)
    labels = torch.full((2, 64, 64), 13)
    loss = thing_feature_distance(features, features.detach().clone(), labels)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(features.grad).all()


def test_ema_copies_the_student_at_iteration_zero() -> None:
    config = _config("toy_daformer", "contrast.enabled=false")
    student, teacher, _ = _models(config, with_imagenet=False)
    uda_step(student, teacher, None, _batch(), config, 0, torch.Generator().manual_seed(0))
    for a, b in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(a, b)


def test_feature_weight_head_learns_only_from_the_contrastive_loss() -> None:
    config = _config("toy_hrda")
    student, teacher, _ = _models(config, with_imagenet=False)
    result = uda_step(student, teacher, None, _batch(), config, 3,
                      torch.Generator().manual_seed(0))
    result.terms["seg_src"].backward(retain_graph=True)
    weighter = list(student.decode_head.feat_weighter.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in weighter)
    result.terms["cl_src"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in weighter)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_per_term_backward_gives_the_same_gradients(variant: str) -> None:
    gradients = []
    for per_term in (False, True):
        config = _config("toy_hrda", f"per_term_backward={per_term}",
                         f"contrast.variant={variant}", "uda.mic=true")
        student, teacher, _ = _models(config, with_imagenet=False)
        torch.manual_seed(5)
        result = uda_step(student, teacher, None, _batch(), config, 4,
                          torch.Generator().manual_seed(2))
        assert result.backward_done is per_term
        if not per_term:
            result.loss.backward()
        assert "mic" in result.terms
        gradients.append([p.grad.clone() for p in student.parameters() if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1])
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_entropy_crop_is_used_after_its_start_iteration() -> None:
    config = _config("toy_hrda", "contrast.entropy_crop_start=5")
    student, teacher, _ = _models(config, with_imagenet=False)
    result = uda_step(student, teacher, None, _batch(), config, 6,
                      torch.Generator().manual_seed(0))
    assert torch.isfinite(result.loss)


@pytest.mark.parametrize("mode,terms", [("source_only", {"seg_src", "fd", "cl_src"}),
                                        ("target_only", {"seg_tgt"})])
def test_baseline_modes(mode: str, terms: set[str]) -> None:
    config = _config("toy_daformer_nocl", f"uda.mode={mode}")
    student, teacher, _ = _models(config, with_imagenet=False)
    result = uda_step(student, teacher, None, _batch(), config, 1,
                      torch.Generator().manual_seed(0))
    assert set(result.terms) == terms
    result.loss.backward()


def test_unknown_mode_and_variant_are_rejected() -> None:
    config = _config("toy_daformer", "uda.mode=oracle")
    student, teacher, _ = _models(config, with_imagenet=False)
    with pytest.raises(ValueError, match="uda.mode"):
        uda_step(student, teacher, None, _batch(), config, 1, torch.Generator())
    config = _config("toy_daformer", "contrast.variant=other")
    with pytest.raises(ValueError, match="contrast.variant"):
        uda_step(student, teacher, None, _batch(), config, 1, torch.Generator())
