"""Training configuration: nested frozen dataclasses and the named presets (SPEC §2).

Numbers default to the released code (release_code.md §4–§6): a preset changes only what its
paper setup changes, with ``dataclasses.replace``. Every field is reachable from the command line
with ``--set dotted.key=value`` (:mod:`training.overrides`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace

from models.classes import THING_CLASSES
from models.config import ModelConfig, get_model_config

from .data.config import DATA_PRESETS, DataConfig


@dataclass(frozen=True)
class UDAConfig:
    """DACS self-training (release_code.md §4) and the optional MIC consistency (§9).

    Attributes:
        mode: "dacs" (self-training), "source_only" (no target loss) or "target_only" (the oracle:
            supervised on the target's labels).
        ema_alpha: EMA teacher momentum; the warm-up ``min(1 − 1/(t+1), alpha)`` applies.
        pseudo_threshold: β, the confidence a target pixel needs to count in the pseudo-weight.
        fd_lambda: ImageNet feature-distance weight (0 disables it and the ImageNet model).
        fd_classes: classes whose pixels carry the feature distance (DAFormer's thing classes).
        fd_scale_min_ratio: share a class needs in a feature cell of the downscaled label.
        mix_exclude_ignore: leave 255 out of the ClassMix class draw (the release includes it).
        color_jitter_strength: kornia ColorJitter strength on mixed images.
        color_jitter_probability: probability of applying it (per iteration).
        blur: Gaussian blur on mixed images with probability 0.5.
        hr_loss_weight: HRDA's weight of the detail-crop CE (fused CE gets 1 − this).
        mic: MIC masked-image consistency on target images.
        mic_block_size: mask block size in input pixels.
        mic_mask_ratio: share of blocks masked.
        mic_loss_weight: weight of the masked-image loss.
    """

    mode: str = "dacs"
    ema_alpha: float = 0.999
    pseudo_threshold: float = 0.968
    fd_lambda: float = 0.005
    fd_classes: tuple[int, ...] = THING_CLASSES
    fd_scale_min_ratio: float = 0.75
    mix_exclude_ignore: bool = False
    color_jitter_strength: float = 0.2
    color_jitter_probability: float = 0.2
    blur: bool = True
    hr_loss_weight: float = 0.1
    mic: bool = False
    mic_block_size: int = 64
    mic_mask_ratio: float = 0.7
    mic_loss_weight: float = 1.0


@dataclass(frozen=True)
class ContrastConfig:
    """CLUDA's pixel contrastive losses (paper eq. 2–5, 7; release_code.md §5).

    Attributes:
        enabled: add the source and mixed-image contrastive losses.
        variant: "paper" (default: the release's bugs fixed, SPEC §2) or "release" (reproduces
            user0407/CLUDA exactly, ordering bug included).
        temperature: τ of the InfoNCE loss (the release uses 1).
        grid: (height, width) the features and labels are resized to (65×65 in the release).
        source_weight: weight of the source-image loss.
        mix_weight: weight of the mixed-image loss.
        block_size: anchors per row block (memory); 0 computes the dense N×N matrices.
        entropy_crop: HRDA detail crop of mixed images at the window of highest entropy.
        entropy_crop_start: first iteration using it (the release: after 12000).
    """

    enabled: bool = True
    variant: str = "paper"
    temperature: float = 1.0
    grid: tuple[int, int] = (65, 65)
    source_weight: float = 1.0
    mix_weight: float = 1.0
    block_size: int = 1024
    entropy_crop: bool = True
    entropy_crop_start: int = 12000


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with head ×10 and a warmed-up poly schedule (release_code.md §6).

    Attributes:
        lr: base learning rate of the encoder.
        head_lr_mult: multiplier for parameters whose name contains "head".
        weight_decay: AdamW decay (0 for parameters whose name contains "norm").
        betas: AdamW betas.
        warmup_iters: linear warm-up length.
        warmup_ratio: starting factor of the warm-up.
        power: poly decay power (1.1 for Swin-L DAFormer+CLUDA).
        min_lr: floor of the poly decay.
    """

    lr: float = 6e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 1.0
    min_lr: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        preset: name of the preset this config came from.
        model: architecture (a registered model config, possibly overridden).
        data: datasets and pipelines.
        uda: self-training settings.
        contrast: CLUDA losses.
        optim: optimiser and schedule.
        iterations: training iterations.
        seed: seed of every random stream.
        pretrained: ImageNet MiT weights file ("" = random init, e.g. the toy presets).
        eval_interval: iterations between target-val evaluations (0 = only at the end).
        eval_mode: "hrda" (sliding windows) or "whole".
        checkpoint_interval: iterations between checkpoints.
        log_interval: iterations between log lines.
        debug_image_interval: iterations between debug image grids (0 = never).
        device: "auto", "cpu", "cuda" or "cuda:N".
        precision: "fp32" (the reference) or "bf16" (autocast on CUDA).
        tf32: allow TF32 matmuls on CUDA.
        per_term_backward: backward each loss term separately (less activation memory).
        allow_cpu: run a GPU-sized preset on a CPU anyway.
    """

    preset: str = "custom"
    model: ModelConfig = field(default_factory=lambda: get_model_config("cluda_hrda_mit_b5"))
    data: DataConfig = DATA_PRESETS["hrda_gta"]
    uda: UDAConfig = UDAConfig()
    contrast: ContrastConfig = ContrastConfig()
    optim: OptimConfig = OptimConfig()
    iterations: int = 40000
    seed: int = 1
    pretrained: str = "pretrained/mit_b5.pth"
    eval_interval: int = 4000
    eval_mode: str = "hrda"
    checkpoint_interval: int = 4000
    log_interval: int = 50
    debug_image_interval: int = 1000
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = True
    per_term_backward: bool = False
    allow_cpu: bool = False


_HRDA_CLUDA = TrainConfig(preset="gta_hrda", data=DATA_PRESETS["hrda_gta"])
_DAFORMER_CLUDA = TrainConfig(
    preset="gta_daformer",
    model=get_model_config("cluda_daformer_mit_b5"),
    data=DATA_PRESETS["daformer_gta"],
    contrast=ContrastConfig(entropy_crop=False),
    seed=0,
    eval_mode="whole",
)


def _toy_model(name: str) -> ModelConfig:
    """The test-size networks at the synthetic dataset's scale: 256² crops, 128² detail crops."""
    model = replace(get_model_config(name), eval_scale=(512, 256))
    if model.hrda is None:
        return model
    hrda = replace(model.hrda, hr_crop_size=128, hr_slide_stride=64)
    return replace(model, hrda=hrda, inference_window=256, inference_stride=128)


def _toy(preset: str, model: str, **changes) -> TrainConfig:
    base = TrainConfig(
        preset=preset,
        model=_toy_model(model),
        data=DATA_PRESETS["toy"],
        optim=OptimConfig(lr=6e-4, warmup_iters=50),
        iterations=400,
        seed=0,
        pretrained="",
        eval_interval=200,
        checkpoint_interval=200,
        log_interval=20,
        debug_image_interval=200,
        contrast=ContrastConfig(grid=(17, 17), entropy_crop_start=200),
    )
    return replace(base, **changes)


PRESETS: dict[str, TrainConfig] = {
    "gta_hrda": _HRDA_CLUDA,
    "synthia_hrda": replace(_HRDA_CLUDA, preset="synthia_hrda", data=DATA_PRESETS["hrda_synthia"]),
    "gta_daformer": _DAFORMER_CLUDA,
    "synthia_daformer": replace(_DAFORMER_CLUDA, preset="synthia_daformer",
                                data=DATA_PRESETS["daformer_synthia"]),
    "gta_hrda_nocl": replace(_HRDA_CLUDA, preset="gta_hrda_nocl",
                             model=get_model_config("hrda_mit_b5"),
                             contrast=ContrastConfig(enabled=False, entropy_crop=False)),
    "gta_daformer_nocl": replace(_DAFORMER_CLUDA, preset="gta_daformer_nocl",
                                 model=get_model_config("daformer_mit_b5"),
                                 contrast=ContrastConfig(enabled=False, entropy_crop=False)),
    "gta_source_only": replace(_DAFORMER_CLUDA, preset="gta_source_only",
                               model=get_model_config("daformer_mit_b5"),
                               uda=UDAConfig(mode="source_only", fd_lambda=0.0),
                               contrast=ContrastConfig(enabled=False, entropy_crop=False)),
    "gta_hrda_mic": replace(_HRDA_CLUDA, preset="gta_hrda_mic", uda=UDAConfig(mic=True), seed=2),
}


_NO_CL = ContrastConfig(enabled=False, entropy_crop=False)
_TOY_DAFORMER_CL = ContrastConfig(grid=(17, 17), entropy_crop=False)
PRESETS.update({
    "toy_hrda": _toy("toy_hrda", "cluda_hrda_mit_test"),
    "toy_hrda_nocl": _toy("toy_hrda_nocl", "hrda_mit_test", contrast=_NO_CL),
    "toy_daformer": _toy("toy_daformer", "cluda_daformer_mit_test", eval_mode="whole",
                         contrast=_TOY_DAFORMER_CL),
    "toy_daformer_nocl": _toy("toy_daformer_nocl", "daformer_mit_test", eval_mode="whole",
                              contrast=_NO_CL),
    "toy_source_only": _toy("toy_source_only", "daformer_mit_test", eval_mode="whole",
                            contrast=_NO_CL, uda=UDAConfig(mode="source_only", fd_lambda=0.0)),
    "toy_target_only": _toy("toy_target_only", "daformer_mit_test", eval_mode="whole",
                            contrast=_NO_CL, uda=UDAConfig(mode="target_only", fd_lambda=0.0)),
})

DESCRIPTIONS: dict[str, str] = {
    "gta_hrda": "HRDA+CLUDA, MiT-B5, GTA→Cityscapes, 1024² crops (paper: 74.4 mIoU)",
    "synthia_hrda": "HRDA+CLUDA, MiT-B5, Synthia→Cityscapes (paper: 66.8 mIoU16)",
    "gta_daformer": "DAFormer+CLUDA, MiT-B5, GTA→Cityscapes, 512² crops (paper: 70.1)",
    "synthia_daformer": "DAFormer+CLUDA, MiT-B5, Synthia→Cityscapes",
    "gta_hrda_nocl": "HRDA baseline without the contrastive losses (paper: 73.8)",
    "gta_daformer_nocl": "DAFormer baseline without the contrastive losses (paper: 68.3)",
    "gta_source_only": "MiT-B5 DAFormer trained on GTA only (no adaptation)",
    "gta_hrda_mic": "HRDA+CLUDA with MIC masked-image consistency",
    "toy_hrda": "HRDA+CLUDA, tiny MiT, synthetic data, CPU in minutes (the embedded default)",
    "toy_hrda_nocl": "toy HRDA without the contrastive losses",
    "toy_daformer": "DAFormer+CLUDA, tiny MiT, synthetic data",
    "toy_daformer_nocl": "toy DAFormer without the contrastive losses",
    "toy_source_only": "tiny MiT trained on the synthetic source only (lower bound)",
    "toy_target_only": "tiny MiT trained on the synthetic target labels (oracle, upper bound)",
}


def get_preset(name: str) -> TrainConfig:
    """The named preset, or a KeyError listing every preset."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def config_to_dict(config: TrainConfig) -> dict:
    """JSON-safe dict of a config (saved beside runs and inside checkpoints)."""
    return dataclasses.asdict(config)
