"""EMA teacher: the warm-up rule, parameters only, copy at t = 0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.ema import ema_alpha, ema_update


def test_ema_alpha_warm_up():
    assert ema_alpha(0) == 0.0
    assert ema_alpha(1) == 0.5
    assert ema_alpha(9) == pytest.approx(0.9)
    assert ema_alpha(999) == pytest.approx(0.999)
    assert ema_alpha(5000) == 0.999
    assert ema_alpha(3, alpha=0.5) == 0.5


def make_pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student[1].running_mean.fill_(5.0)
    return teacher, student


def test_first_update_copies_parameters_but_not_buffers():
    teacher, student = make_pair()
    ema_update(teacher, student, iteration=0)
    for teacher_parameter, student_parameter in zip(
        teacher.parameters(), student.parameters(), strict=True
    ):
        assert torch.equal(teacher_parameter, student_parameter)
    assert teacher[1].running_mean.eq(0).all()


def test_update_moves_by_the_expected_amount():
    teacher, student = make_pair()
    before = [p.detach().clone() for p in teacher.parameters()]
    student_before = [p.detach().clone() for p in student.parameters()]
    ema_update(teacher, student, iteration=1)
    for old, new, source in zip(before, teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * source)
    for source, source_before in zip(student.parameters(), student_before, strict=True):
        assert torch.equal(source, source_before)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(list(teacher.parameters()), list(student.parameters()), iteration=2000, alpha=0.999)
    for old, new, source in zip(before, teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new, 0.999 * old + 0.001 * source)
    assert teacher[1].running_mean.eq(0).all()


def test_mismatched_models_are_rejected():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Linear(4, 3), iteration=1)
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), nn.Sequential(nn.Linear(3, 4)), iteration=1)
