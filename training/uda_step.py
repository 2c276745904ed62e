"""One UDA iteration, written as the CLUDA objective (paper eq. 6):

    L = L_seg(src) + λ_FD·L_FD + w_s·L_CL(src) + L_seg(mix) + w_m·L_CL(mix) [+ λ_MIC·L_MIC]

The step does no I/O and no optimiser call: it updates the EMA teacher (which the reference does
at the start of every iteration), computes every term as a named local, and returns the total,
the terms and a few tensors for debug images. With ``per_term_backward`` it back-propagates the
source terms before the mixed forward so the source graph is freed early (the reference's own
memory trick); the gradients are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from models.classes import IGNORE_INDEX

from . import contrastive
from .config import ContrastConfig, TrainConfig
from .cropping import entropy_crop_boxes
from .ema import ema_update
from .feature_distance import thing_feature_distance
from .losses import hrda_segmentation_loss, segmentation_ce
from .masking import block_mask, mask_images
from .mixing import apply_strong_augmentation, class_mix_masks, mix, sample_strong_augmentation
from .pseudo_label import confident_fraction, pseudo_labels, pseudo_weight


@dataclass
class UDABatch:
    """One training batch (float RGB images in 0..255, labels with 255 = ignore).

    Attributes:
        src_img: ``B×3×H×W`` source crops.
        src_label: ``B×H×W`` source labels.
        tgt_img: ``B×3×H×W`` target crops.
        tgt_valid_mask: ``B×H×W`` 1 where pseudo-labels may be used (the margins are 0).
        tgt_label: ``B×H×W`` target labels, used only by the target-only oracle.
    """

    src_img: Tensor
    src_label: Tensor
    tgt_img: Tensor
    tgt_valid_mask: Tensor
    tgt_label: Tensor | None = None

    def to(self, device: torch.device) -> "UDABatch":
        return UDABatch(*(None if t is None else t.to(device, non_blocking=True)
                          for t in (self.src_img, self.src_label, self.tgt_img,
                                    self.tgt_valid_mask, self.tgt_label)))


@dataclass
class StepResult:
    """What one step produced.

    Attributes:
        loss: the total objective (detached when ``backward_done``).
        terms: every weighted term of the sum, by name (graph attached unless ``backward_done``).
        logs: floats to log (terms, unweighted parts, pseudo-label confidence).
        debug: detached tensors for debug images.
        backward_done: gradients were already accumulated (``per_term_backward``).
    """

    loss: Tensor
    terms: dict[str, Tensor]
    logs: dict[str, float] = field(default_factory=dict)
    debug: dict[str, Tensor] = field(default_factory=dict)
    backward_done: bool = False


def set_teacher_mode(teacher: nn.Module) -> None:
    """Train mode with dropout and stochastic depth off, as the reference's teacher: its
    BatchNorms normalise with the target batch's statistics."""
    teacher.train()
    for module in teacher.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) or type(module).__name__ == "DropPath":
            module.eval()


def _segmentation_loss(output, labels: Tensor, weight: Tensor | None, config: TrainConfig
                       ) -> tuple[Tensor, dict[str, float]]:
    if config.model.hrda is None:
        loss = segmentation_ce(output.logits, labels, weight)
        return loss, {}
    parts = hrda_segmentation_loss(output.logits, output.hr_logits, labels, output.crop_boxes,
                                   weight, config.uda.hr_loss_weight)
    return parts.total, {"fused_ce": parts.fused.item(), "detail_ce": parts.detail.item()}


def contrastive_term(
    output,
    labels: Tensor,
    contrast: ContrastConfig,
    thing_classes: tuple[int, ...],
    pixel_weight: Tensor | None = None,
    target_mask: Tensor | None = None,
    confidence: Tensor | float = 1.0,
) -> Tensor:
    """CLUDA's loss on one forward's fused features, in the configured variant.

    Features, the feature weight and the pixel weight are resized to the grid bilinearly
    (``align_corners=True``), labels and masks with nearest (release_code.md §5.1).

    Args:
        output: the student's ``SegmentorOutput``.
        labels: ``B×H×W`` (mixed) labels at input resolution.
        contrast: the CLUDA settings.
        thing_classes: classes contrasted apart from stuff.
        pixel_weight: ``B×H×W`` mixed-image weight (1 on source pixels, q on target pixels,
            0 on margins), None for source images.
        target_mask: ``B×H×W`` 1 where the mixed image shows the target, None for source images.
        confidence: Γ, the fraction of confident target pixels.
    """
    grid = contrast.grid
    block = contrast.block_size or None
    features = contrastive.to_grid_bilinear(output.features, grid)
    grid_labels = contrastive.to_grid_nearest(labels[:, None].float(), grid).long()
    multi_resolution = output.feature_weight is not None
    if contrast.variant == "release":
        grid_weight = None if pixel_weight is None else contrastive.to_grid_bilinear(
            pixel_weight[:, None].float(), grid)
        if not multi_resolution:
            return contrastive.release_contrastive_loss(
                features, grid_labels, thing_classes=thing_classes, pseudo_weight=grid_weight,
                temperature=contrast.temperature, block_size=block)
        crop = contrastive.to_grid_nearest(output.crop_mask.float(), grid)
        return contrastive.release_multi_resolution_cl(
            features, contrastive.to_grid_bilinear(output.hr_features, grid), grid_labels,
            contrastive.to_grid_bilinear(output.feature_weight, grid),
            (crop * grid_labels).long(), pseudo_weight=grid_weight, thing_classes=thing_classes,
            block_size=block)
    if contrast.variant != "paper":
        raise ValueError(f"contrast.variant must be 'paper' or 'release', got {contrast.variant!r}")
    if pixel_weight is not None:
        # Pseudo-label margins (weight 0) carry no usable label: they neither anchor nor contrast.
        unusable = contrastive.to_grid_nearest((pixel_weight[:, None] <= 0).float(), grid) > 0
        grid_labels = grid_labels.masked_fill(unusable, IGNORE_INDEX)
    grid_target = None if target_mask is None else contrastive.to_grid_nearest(
        target_mask[:, None].float(), grid) > 0
    if not multi_resolution:
        return contrastive.contrastive_loss(
            features, grid_labels, target_mask=grid_target, confidence=confidence,
            thing_classes=thing_classes, temperature=contrast.temperature, block_size=block)
    # SPEC §2: the release's internal 0.5 is kept, so the default weights of 1 match its scale.
    return 0.5 * contrastive.multi_resolution_contrastive_loss(
        features, contrastive.to_grid_bilinear(output.hr_features, grid), grid_labels,
        contrastive.to_grid_bilinear(output.feature_weight, grid),
        contrastive.to_grid_nearest(output.crop_mask.float(), grid) > 0,
        target_mask=grid_target, confidence=confidence, thing_classes=thing_classes,
        temperature=contrast.temperature, block_size=block)


def _entropy_crops(config: TrainConfig, image_size: tuple[int, int]
                   ) -> Callable[[Tensor], list] | None:
    hrda = config.model.hrda
    crop = (hrda.hr_crop_size, hrda.hr_crop_size)
    return lambda lr_logits: entropy_crop_boxes(lr_logits, image_size, crop)


def uda_step(
    student: nn.Module,
    teacher: nn.Module,
    imagenet_model: nn.Module | None,
    batch: UDABatch,
    config: TrainConfig,
    iteration: int,
    generator: torch.Generator,
) -> StepResult:
    """Computes one iteration's objective (and, optionally, its gradients term by term).

    Args:
        student: the segmentor being trained (train mode).
        teacher: its EMA copy; updated here first, then used without gradients.
        imagenet_model: frozen ImageNet-initialised copy for the feature distance, or None.
        batch: source and target crops.
        config: the run's settings.
        iteration: 0-based iteration (EMA warm-up, entropy-crop start).
        generator: every random draw of the step (crops, ClassMix, augmentation, masks).

    Returns:
        ``StepResult`` whose ``loss`` is the visible sum of ``terms``.
    """
    uda, contrast = config.uda, config.contrast
    hrda = config.model.hrda is not None
    use_cl = contrast.enabled
    logs: dict[str, float] = {}
    debug: dict[str, Tensor] = {}
    zero = batch.src_img.new_zeros(())
    ema_update(teacher, student, iteration, uda.ema_alpha)

    if uda.mode == "target_only":
        if batch.tgt_label is None:
            raise ValueError("the target-only oracle needs target labels in the batch")
        tgt_out = student.forward_train(batch.tgt_img, generator=generator)
        loss_tgt, parts = _segmentation_loss(tgt_out, batch.tgt_label, None, config)
        logs.update({f"tgt.{k}": v for k, v in parts.items()})
        terms = {"seg_tgt": loss_tgt}
        return _finish(terms, logs, debug, per_term_done=False)

    # Source: supervised segmentation, feature distance, source contrastive loss.
    src_out = student.forward_train(batch.src_img, generator=generator)
    loss_seg_src, parts = _segmentation_loss(src_out, batch.src_label, None, config)
    logs.update({f"src.{k}": v for k, v in parts.items()})
    loss_fd = zero
    if imagenet_model is not None and uda.fd_lambda > 0:
        with torch.no_grad():
            imagenet_features = imagenet_model.extract_features(batch.src_img)[-1]
        loss_fd = thing_feature_distance(src_out.backbone_features[-1], imagenet_features,
                                         batch.src_label, uda.fd_classes,
                                         uda.fd_scale_min_ratio)
    loss_cl_src = contrastive_term(src_out, batch.src_label, contrast, uda.fd_classes) \
        if use_cl else zero
    source_terms = {"seg_src": loss_seg_src, "fd": uda.fd_lambda * loss_fd,
                    "cl_src": contrast.source_weight * loss_cl_src}
    if uda.mode == "source_only":
        return _finish(source_terms, logs, debug, per_term_done=False)
    if uda.mode != "dacs":
        raise ValueError(f"uda.mode must be dacs, source_only or target_only, got {uda.mode!r}")
    if config.per_term_backward:
        sum(source_terms.values()).backward()
        source_terms = {k: v.detach() for k, v in source_terms.items()}
        del src_out

    # Target: teacher pseudo-labels (the shared window network, HRDA's LR + detail slide).
    set_teacher_mode(teacher)
    with torch.no_grad():
        tgt_labels, tgt_confidence = pseudo_labels(teacher(batch.tgt_img))
    tgt_weight = pseudo_weight(tgt_confidence, uda.pseudo_threshold, batch.tgt_valid_mask)
    gamma = confident_fraction(tgt_confidence, uda.pseudo_threshold)
    logs["pseudo_confidence"] = float(gamma)

    # ClassMix and the strong augmentation of the mixed image.
    mix_mask = class_mix_masks(batch.src_label, generator, uda.mix_exclude_ignore)
    mix_img = mix(mix_mask, batch.src_img, batch.tgt_img)
    mix_label = mix(mix_mask, batch.src_label, tgt_labels).long()
    mix_weight = mix(mix_mask, torch.ones_like(tgt_weight), tgt_weight)
    augmentation = sample_strong_augmentation(
        mix_img.shape[0], generator, uda.color_jitter_strength, uda.color_jitter_probability,
        uda.blur)
    mix_img = apply_strong_augmentation(mix_img, augmentation)
    crop_boxes = None
    if hrda and contrast.entropy_crop and iteration > contrast.entropy_crop_start:
        crop_boxes = _entropy_crops(config, tuple(mix_img.shape[-2:]))
    mix_out = student.forward_train(mix_img, crop_boxes=crop_boxes, generator=generator)
    loss_seg_mix, parts = _segmentation_loss(mix_out, mix_label, mix_weight, config)
    logs.update({f"mix.{k}": v for k, v in parts.items()})
    loss_cl_mix = contrastive_term(mix_out, mix_label, contrast, uda.fd_classes, mix_weight,
                                   ~mix_mask[:, 0], gamma) \
        if use_cl else zero
    mixed_terms = {"seg_mix": loss_seg_mix, "cl_mix": contrast.mix_weight * loss_cl_mix}
    if config.per_term_backward:
        sum(mixed_terms.values()).backward()
        mixed_terms = {k: v.detach() for k, v in mixed_terms.items()}
        del mix_out

    # MIC: the student on a masked target image must match the (unmixed) pseudo-labels.
    mic_terms: dict[str, Tensor] = {}
    if uda.mic:
        masked_aug = sample_strong_augmentation(
            batch.tgt_img.shape[0], generator, uda.color_jitter_strength,
            uda.color_jitter_probability, True)
        mask = block_mask(batch.tgt_img.shape[0], tuple(batch.tgt_img.shape[-2:]), generator,
                          uda.mic_block_size, uda.mic_mask_ratio, batch.tgt_img.device)
        masked_img = mask_images(apply_strong_augmentation(batch.tgt_img, masked_aug), mask)
        masked_out = student.forward_train(masked_img, generator=generator)
        loss_mic, _ = _segmentation_loss(masked_out, tgt_labels, tgt_weight, config)
        mic_terms["mic"] = uda.mic_loss_weight * loss_mic
        if config.per_term_backward:
            mic_terms["mic"].backward()
            mic_terms = {k: v.detach() for k, v in mic_terms.items()}

    debug.update({"src_img": batch.src_img, "src_label": batch.src_label,
                  "tgt_img": batch.tgt_img, "pseudo_label": tgt_labels,
                  "mix_img": mix_img, "mix_mask": mix_mask, "mix_label": mix_label,
                  "mix_weight": mix_weight})
    terms = {**source_terms, **mixed_terms, **mic_terms}
    return _finish(terms, logs, debug, per_term_done=config.per_term_backward)


def _finish(terms: dict[str, Tensor], logs: dict[str, float], debug: dict[str, Tensor],
            per_term_done: bool) -> StepResult:
    loss = sum(terms.values())
    logs = {**{name: value.item() for name, value in terms.items()}, **logs, "loss": loss.item()}
    return StepResult(loss=loss.detach() if per_term_done else loss, terms=terms, logs=logs,
                      debug={k: v.detach() for k, v in debug.items()},
                      backward_done=per_term_done)

