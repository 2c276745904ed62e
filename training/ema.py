"""Mean-teacher EMA update with DACS's warm-up rule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def ema_alpha(iteration: int, alpha: float = 0.999) -> float:
    """EMA decay ``min(1 - 1/(t + 1), alpha)`` at iteration t (0.5 at t = 1, alpha from t = 999)."""
    return min(1.0 - 1.0 / (iteration + 1), alpha)


def _parameters(model: nn.Module | Iterable[Tensor]) -> list[tuple[str, Tensor]]:
    if isinstance(model, nn.Module):
        return list(model.named_parameters())
    return [(str(index), tensor) for index, tensor in enumerate(model)]


@torch.no_grad()
def ema_update(
    teacher: nn.Module | Iterable[Tensor],
    student: nn.Module | Iterable[Tensor],
    iteration: int,
    alpha: float = 0.999,
) -> None:
    """Move the teacher's parameters towards the student's, in place; returns nothing.

    At ``iteration == 0`` the student's parameters are copied (DACS's ``_init_ema_weights``);
    afterwards ``θ_teacher ← a·θ_teacher + (1 - a)·θ_student`` with ``a = ema_alpha(iteration,
    alpha)``. Only parameters are averaged: buffers (BatchNorm statistics) are never touched, as in
    DACS. The student is not modified. Modules are paired by parameter name; plain sequences by
    position.

    Args:
        teacher: module or parameter tensors updated in place.
        student: module or parameter tensors read.
        iteration: the training iteration t (0 for the first step).
        alpha: the EMA decay once warmed up (0.999).
    """
    teacher_parameters = _parameters(teacher)
    student_parameters = _parameters(student)
    if len(teacher_parameters) != len(student_parameters):
        raise ValueError(
            f"teacher has {len(teacher_parameters)} parameters, student {len(student_parameters)}"
        )
    decay = ema_alpha(iteration, alpha)
    for (teacher_name, teacher_tensor), (student_name, student_tensor) in zip(
        teacher_parameters, student_parameters, strict=True
    ):
        if teacher_name != student_name or teacher_tensor.shape != student_tensor.shape:
            raise ValueError(
                f"teacher parameter {teacher_name} {tuple(teacher_tensor.shape)} does not match "
                f"student parameter {student_name} {tuple(student_tensor.shape)}"
            )
        if iteration == 0:
            teacher_tensor.copy_(student_tensor)
        else:
            teacher_tensor.mul_(decay).add_(student_tensor, alpha=1.0 - decay)
