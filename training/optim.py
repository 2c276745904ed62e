"""AdamW with mmcv's paramwise rules and the warmed-up poly schedule (release_code.md §6)."""

from __future__ import annotations

import torch
from torch import nn

from .config import OptimConfig

# mmcv tries custom keys longest first, ties alphabetically: "head" before "norm".
_CUSTOM_KEYS = ("head", "norm")


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """One AdamW group per (lr multiplier, decay multiplier) class of parameter names.

    Names containing "head" get ``head_lr_mult`` × lr (the decode head, the scale attention and
    CLUDA's feature weighter); names containing "norm" get no weight decay (MiT LayerNorms; the
    decoder's BatchNorms are named "bn" and are decayed, as in the reference). Frozen parameters
    are left out.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        lr_mult, decay_mult = 1.0, 1.0
        for key in _CUSTOM_KEYS:
            if key in name:
                if key == "head":
                    lr_mult = config.head_lr_mult
                else:
                    decay_mult = 0.0
                break
        groups.setdefault((lr_mult, decay_mult), []).append(parameter)
    return [
        {"params": params, "lr": config.lr * lr_mult, "weight_decay": config.weight_decay * decay,
         "lr_mult": lr_mult}
        for (lr_mult, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the student's parameters with the paramwise groups."""
    return torch.optim.AdamW(parameter_groups(model, config), lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay)


def lr_factor(iteration: int, total: int, config: OptimConfig) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based) relative to the base lr.

    mmcv ``poly`` with ``min_lr``: ``(1 − t/T)^power`` scaled between min_lr and the base lr, then
    the linear warm-up ``1 − (1 − t/W)(1 − warmup_ratio)`` multiplied on the decayed value for
    ``t < W``.
    """
    progress = min(iteration, total) / total
    base = config.lr
    decayed = (base - config.min_lr) * (1 - progress) ** config.power + config.min_lr
    factor = decayed / base
    if iteration < config.warmup_iters:
        factor *= 1 - (1 - iteration / config.warmup_iters) * (1 - config.warmup_ratio)
    return factor


def set_learning_rate(optimizer: torch.optim.Optimizer, iteration: int, total: int,
                      config: OptimConfig) -> float:
    """Writes the scheduled lr into every group (stateless: resuming needs only the iteration).

    Returns:
        The base (encoder) learning rate now in use.
    """
    factor = lr_factor(iteration, total, config)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * group["lr_mult"] * factor
    return config.lr * factor
