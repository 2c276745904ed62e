"""CLUDA's pixel contrastive losses, computed in row blocks so no N×N matrix is held whole.

Two variants (SPEC §2):

* ``paper`` (default): ``contrastive_loss`` (paper eq. 2, 3, 5: single resolution, the
  DAFormer+CLUDA form) and ``multi_resolution_contrastive_loss`` (eq. 7, HRDA+CLUDA). Features and
  labels are aligned for any batch size; pixels labelled ``ignore_index`` are neither anchors nor
  contrasts; stuff and thing pixels are contrasted separately (a stuff–thing pair is neither a
  positive nor a negative; paper §4.4, Table 3b "S-S + T-T"); the HR-crop indicator is an explicit
  mask built from the crop box; Γ (eq. 4) weights the target anchors of the mixed image.
* ``release``: ``release_contrastive_loss`` and ``release_multi_resolution_cl`` reproduce
  ``contrastive_loss`` and ``multi_resolution_cl`` of ``user0407/CLUDA``
  (``mmseg/models/losses/contrastive_loss.py``) for the same inputs, the feature/label ordering bug
  included (``release_code.md`` §5.2–5.3, §10).

Notation: the N = B·h·w grid cells of the batch are the anchors (rows); every cell is also a
contrast (column). For anchor i, ``ℓ_ij = s_ij − log(exp(s_ij) + Σ_{k∈N_i} exp(s_ik))`` with
``s_ij = v_i·v_j / τ`` on L2-normalised features; ``L_NCE(i) = −(1/|P_i|) Σ_{j∈P_i} ℓ_ij`` (eq. 2).

Memory: each row block computes its similarities, masks and log-probabilities, reduces them to a
scalar and, under autograd, is wrapped in ``torch.utils.checkpoint`` so that backward recomputes
it instead of keeping its ``block × N`` intermediates. Peak memory is O(block_size · N) in forward
and backward; ``block_size=None`` computes the whole N×N matrices at once (same value and
gradients to float tolerance). Computation is in float32 (float64 inputs stay float64), also
inside a bf16 autocast training step: autocast would run the similarity products in bf16, whose
~3 significant digits blur the many near-equal similarities InfoNCE compares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from models.classes import IGNORE_INDEX, THING_CLASSES

GridSize = tuple[int, int]
DEFAULT_GRID: GridSize = (65, 65)
DEFAULT_BLOCK_SIZE = 512


def to_grid_bilinear(tensor: Tensor, grid_size: GridSize = DEFAULT_GRID) -> Tensor:
    """Resize features or weights to the contrastive grid, bilinear with ``align_corners=True``.

    ``align_corners=True`` is what CLUDA's DACS uses here (the rest of the pipeline uses
    ``False``); kept for faithfulness.

    Args:
        tensor: ``(B, C, H, W)`` features, or ``(B, H, W)`` / ``(B, 1, H, W)`` weights.
        grid_size: ``(h, w)``, default 65×65.

    Returns:
        Same rank as the input, spatial size ``grid_size``.
    """
    squeeze = tensor.dim() == 3
    batched = tensor.unsqueeze(1) if squeeze else tensor
    resized = F.interpolate(batched, size=grid_size, mode="bilinear", align_corners=True)
    return resized[:, 0] if squeeze else resized


def to_grid_nearest(tensor: Tensor, grid_size: GridSize = DEFAULT_GRID) -> Tensor:
    """Resize labels or masks to the contrastive grid with nearest sampling, keeping the dtype.

    Args:
        tensor: ``(B, H, W)`` or ``(B, 1, H, W)`` labels (int) or masks (bool / 0-1).
        grid_size: ``(h, w)``.

    Returns:
        Same rank and dtype as the input, spatial size ``grid_size``.
    """
    squeeze = tensor.dim() == 3
    batched = tensor.unsqueeze(1) if squeeze else tensor
    resized = F.interpolate(batched.float(), size=grid_size, mode="nearest").to(tensor.dtype)
    return resized[:, 0] if squeeze else resized


def _without_autocast(loss: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Runs ``loss`` with autocast off for the device of its first argument."""

    @functools.wraps(loss)
    def wrapper(features: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(features.device.type, enabled=False):
            return loss(features, *args, **kwargs)

    return wrapper


def _at_least_float32(tensor: Tensor) -> Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _flatten_features(features: Tensor) -> Tensor:
    """``(B, C, h, w)`` → ``(B, h·w, C)`` L2-normalised over C (zero vectors stay zero)."""
    batch_size, channels = features.shape[:2]
    flat = _at_least_float32(features).permute(0, 2, 3, 1).reshape(batch_size, -1, channels)
    return F.normalize(flat, dim=-1)


def _log_probabilities(logits: Tensor, negative: Tensor) -> Tensor:
    """``ℓ_ij = l_ij − log(exp(l_ij) + Σ_{k: negative_ik} exp(l_ik))`` for a block of rows.

    Computed as ``−softplus(z_i − l_ij)`` with ``z_i`` the log-sum-exp of the row's negatives
    (−inf without negatives, giving ℓ = 0), which stays finite for any temperature.
    """
    negative_logits = logits.masked_fill(~negative, float("-inf"))
    has_negative = negative.any(dim=1, keepdim=True)
    shift = negative_logits.amax(dim=1, keepdim=True).detach()
    shift = torch.where(has_negative, shift, torch.zeros_like(shift))
    negative_sum = (negative_logits - shift).exp().sum(dim=1, keepdim=True)
    # log(1) on rows without negatives keeps their (discarded) branch free of -inf gradients.
    safe_sum = torch.where(has_negative, negative_sum, torch.ones_like(negative_sum))
    log_negative_sum = torch.where(
        has_negative, safe_sum.log() + shift, torch.full_like(shift, float("-inf"))
    )
    return -F.softplus(log_negative_sum - logits)


def _not_self(start: int, stop: int, num_columns: int, device: torch.device) -> Tensor:
    rows = torch.arange(start, stop, device=device).unsqueeze(1)
    return rows != torch.arange(num_columns, device=device).unsqueeze(0)


def _sum_over_row_blocks(
    block_loss: Callable[..., Tensor], num_rows: int, block_size: int | None, *inputs: Tensor | None
) -> Tensor:
    """Sum ``block_loss(start, stop, *inputs)`` over row blocks (checkpointed under autograd)."""
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be positive or None, got {block_size}")
    step = num_rows if block_size is None else block_size
    needs_graph = torch.is_grad_enabled() and any(
        tensor is not None and tensor.requires_grad for tensor in inputs
    )
    total = None
    for start in range(0, num_rows, step):
        stop = min(start + step, num_rows)
        if needs_graph and step < num_rows:
            part = checkpoint(
                block_loss, start, stop, *inputs, use_reentrant=False, preserve_rng_state=False
            )
        else:
            part = block_loss(start, stop, *inputs)
        total = part if total is None else total + part
    return total


def _thing_flags(labels: Tensor, thing_classes: Sequence[int]) -> Tensor:
    return torch.isin(labels, torch.as_tensor(list(thing_classes), device=labels.device))


def _flatten_per_pixel(tensor: Tensor) -> Tensor:
    """Per-pixel ``(B, h, w)`` / ``(B, 1, h, w)`` → ``(B·h·w,)`` in image-major order."""
    return tensor.reshape(-1)


def _flatten_weight(tensor: Tensor) -> Tensor:
    return _at_least_float32(_flatten_per_pixel(tensor))


# ----------------------------------------------------------------------------------------------
# paper variant
# ----------------------------------------------------------------------------------------------


def _mean_positive_log_probability(logits: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
    """``(1/|P_i|) Σ_{j∈P_i} ℓ_ij`` per row (0 for rows without positives)."""
    log_probability = _log_probabilities(logits, negative)
    positive_sum = torch.where(positive, log_probability, torch.zeros_like(log_probability)).sum(1)
    return positive_sum / positive.sum(1).clamp_min(1)


def _paper_block(
    start: int,
    stop: int,
    lr_rows: Tensor,
    hr_rows: Tensor | None,
    labels: Tensor,
    valid: Tensor,
    thing: Tensor,
    in_crop: Tensor,
    anchor_weight: Tensor,
    lr_share: Tensor,
    temperature: float,
) -> Tensor:
    rows = slice(start, stop)
    same_label = labels[rows, None] == labels[None, :]
    same_group = thing[rows, None] == thing[None, :]
    positive = same_label & _not_self(start, stop, labels.numel(), labels.device) & valid[None, :]
    negative = ~same_label & same_group & valid[None, :]
    anchors = lr_rows[rows]
    anchor_loss = lr_share[rows] * _mean_positive_log_probability(
        anchors @ lr_rows.T / temperature, positive, negative
    )
    if hr_rows is not None:
        hr_columns = in_crop[None, :]
        anchor_loss = anchor_loss + (1 - lr_share[rows]) * _mean_positive_log_probability(
            anchors @ hr_rows.T / temperature, positive & hr_columns, negative & hr_columns
        )
    return -(anchor_weight[rows] * anchor_loss).sum()


def _paper_loss(
    lr_features: Tensor,
    hr_features: Tensor | None,
    labels: Tensor,
    feature_weight: Tensor | None,
    crop_mask: Tensor | None,
    target_mask: Tensor | None,
    confidence: float | Tensor,
    thing_classes: Sequence[int],
    temperature: float,
    ignore_index: int,
    block_size: int | None,
) -> Tensor:
    lr_rows = _flatten_features(lr_features).reshape(-1, lr_features.shape[1])
    labels = _flatten_per_pixel(labels).to(lr_rows.device)
    if labels.numel() != lr_rows.shape[0]:
        raise ValueError(f"{labels.numel()} labels for {lr_rows.shape[0]} feature cells")
    valid = labels != ignore_index
    anchor_weight = valid.to(lr_rows.dtype)
    if target_mask is not None:
        is_target = _flatten_per_pixel(target_mask).bool()
        confidence = torch.as_tensor(confidence, dtype=lr_rows.dtype, device=labels.device)
        anchor_weight = anchor_weight * torch.where(
            is_target, confidence, torch.ones_like(confidence)
        )
    hr_rows = in_crop = None
    lr_share = torch.ones_like(anchor_weight)
    if hr_features is not None:
        hr_rows = _flatten_features(hr_features).reshape(-1, hr_features.shape[1])
        in_crop = _flatten_per_pixel(crop_mask).bool()
        lr_share = torch.where(in_crop, _flatten_weight(feature_weight), lr_share)
    total = _sum_over_row_blocks(
        lambda start, stop, *tensors: _paper_block(start, stop, *tensors, temperature),
        labels.numel(),
        block_size,
        lr_rows,
        hr_rows,
        labels,
        valid,
        _thing_flags(labels, thing_classes),
        in_crop,
        anchor_weight,
        lr_share,
    )
    return total / labels.numel()


@_without_autocast
def contrastive_loss(
    features: Tensor,
    labels: Tensor,
    *,
    target_mask: Tensor | None = None,
    confidence: float | Tensor = 1.0,
    thing_classes: Sequence[int] = THING_CLASSES,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    block_size: int | None = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """Single-resolution CLUDA loss, paper eq. 3 (source) and eq. 5 (mixed image).

    ``L = (1/A) [Σ_{s∈S} L_NCE(s) + Γ Σ_{t∈T} L_NCE(t)]`` over the anchors of the whole batch, with
    every valid cell of the batch a contrast candidate: positives are the other cells with the same
    label, negatives the cells with a different label of the same kind (stuff or thing).

    Decisions: A = B·h·w, the number of grid cells of the batch (the paper's A = h·w per image,
    averaged over the images), so ignored cells and anchors without positives add 0 but still
    count; Γ multiplies the anchors whose pixel came from the target image (``target_mask``),
    source anchors weigh 1. Cells to leave out entirely (void labels, and on mixed images the
    pseudo-label margins whose weight is 0) must carry ``ignore_index``.

    Args:
        features: ``(B, C, h, w)`` fused features on the grid (``to_grid_bilinear``).
        labels: ``(B, h, w)`` or ``(B, 1, h, w)`` labels on the grid (``to_grid_nearest``).
        target_mask: ``(B, h, w)`` or ``(B, 1, h, w)``, True where the mixed image shows the target
            (the inverse ClassMix mask on the grid); None for source images.
        confidence: Γ, the fraction of confident target pixels
            (``pseudo_label.confident_fraction``).
        thing_classes: classes contrasted among themselves; all others are stuff.
        temperature: τ (1.0).
        ignore_index: label of cells that are neither anchors nor contrasts.
        block_size: anchor rows per block; None for the dense computation.

    Returns:
        Scalar loss.
    """
    return _paper_loss(
        features,
        None,
        labels,
        None,
        None,
        target_mask,
        confidence,
        thing_classes,
        temperature,
        ignore_index,
        block_size,
    )


@_without_autocast
def multi_resolution_contrastive_loss(
    lr_features: Tensor,
    hr_features: Tensor,
    labels: Tensor,
    feature_weight: Tensor,
    crop_mask: Tensor,
    *,
    target_mask: Tensor | None = None,
    confidence: float | Tensor = 1.0,
    thing_classes: Sequence[int] = THING_CLASSES,
    temperature: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    block_size: int | None = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """HRDA+CLUDA's learned-weighted LR/HR loss, paper eq. 7.

    For anchor i (its LR feature), ``δ_i · L_NCE^LR(i) + (1 − δ_i) · L_NCE^HR(i)``, weighted by Γ
    for target anchors and summed over the batch divided by A = B·h·w (as ``contrastive_loss``).
    ``L_NCE^LR`` contrasts the anchor with the LR features of all valid cells; ``L_NCE^HR`` with
    the HR features of the valid cells inside the detail crop (HR features are never compared with
    each other, §4.5). ``δ_i`` is the feature-weighter output for anchors inside the crop and 1 for
    anchors outside it ("the weightage is 1 for pixels ... not available in the HR crop"). As in
    the release, the LR_i–HR_i pair of the anchor's own cell is not a positive.

    Unlike the release: δ weighs each anchor (the release weighs pairs by ``a_i·a_j``), the crop
    indicator is ``crop_mask`` (the release uses ``label != 0``, dropping road), each term is
    normalised by its own positive count, and there is no 0.5 factor — multiply by 0.5 outside to
    match the release's magnitude (SPEC §2's "internal 0.5").

    Args:
        lr_features: ``(B, C, h, w)`` LR fused features on the grid.
        hr_features: ``(B, C, h, w)`` HR fused features pasted on the LR grid (values outside
            the crop are not used).
        labels: ``(B, h, w)`` or ``(B, 1, h, w)`` labels on the grid.
        feature_weight: ``(B, h, w)`` or ``(B, 1, h, w)`` δ in [0, 1] (sigmoid of the
            feature-weight head, on the grid).
        crop_mask: ``(B, h, w)`` or ``(B, 1, h, w)``, True inside the detail crop.
        target_mask: as in ``contrastive_loss``.
        confidence: Γ.
        thing_classes: classes contrasted among themselves.
        temperature: τ (1.0).
        ignore_index: label of cells that are neither anchors nor contrasts.
        block_size: anchor rows per block; None for dense.

    Returns:
        Scalar loss.
    """
    return _paper_loss(
        lr_features,
        hr_features,
        labels,
        feature_weight,
        crop_mask,
        target_mask,
        confidence,
        thing_classes,
        temperature,
        ignore_index,
        block_size,
    )


# ----------------------------------------------------------------------------------------------
# release variant
# ----------------------------------------------------------------------------------------------


def _release_row_order(flat_features: Tensor) -> Tensor:
    """The release's ``cat(unbind(feats, dim=1), dim=0)``: row r is image r mod B, pixel r div B."""
    return flat_features.transpose(0, 1).reshape(-1, flat_features.shape[-1])


def _release_block(
    start: int,
    stop: int,
    lr_rows: Tensor,
    hr_rows: Tensor | None,
    labels: Tensor,
    mixed_labels: Tensor | None,
    thing: Tensor | None,
    row_weight: Tensor | None,
    column_weight: Tensor | None,
    confidence: Tensor | None,
) -> Tensor:
    rows = slice(start, stop)
    not_self = _not_self(start, stop, labels.numel(), labels.device)
    same_label = labels[rows, None] == labels[None, :]
    positive = same_label & not_self
    same_group = None
    if thing is not None:
        # The release's thing/stuff mask only touches positives; for same-label pairs it is 1.
        same_group = thing[rows, None] == thing[None, :]
        positive = positive & same_group
    anchors = lr_rows[rows]
    lr_log_probability = _log_probabilities(anchors @ lr_rows.T, ~same_label)
    if hr_rows is None:
        pair_terms = torch.where(positive, lr_log_probability, torch.zeros_like(lr_log_probability))
    else:
        lr_weight = row_weight[rows, None] * column_weight[None, :]
        same_mixed_label = mixed_labels[rows, None] == mixed_labels[None, :]
        mixed_positive = same_mixed_label & not_self
        if same_group is not None:
            mixed_positive = mixed_positive & same_group
        hr_log_probability = _log_probabilities(anchors @ hr_rows.T, ~same_mixed_label)
        zeros = torch.zeros_like(lr_log_probability)
        pair_terms = torch.where(positive, lr_weight * lr_log_probability, zeros) + torch.where(
            mixed_positive, (1 - lr_weight) * hr_log_probability, zeros
        )
    if confidence is not None:
        pair_terms = pair_terms * (confidence[rows, None] * confidence[None, :])
    return -(pair_terms.sum(1) / positive.sum(1).clamp_min(1)).sum()


@_without_autocast
def release_multi_resolution_cl(
    lr_features: Tensor,
    hr_features: Tensor,
    labels: Tensor,
    feature_weight: Tensor,
    hr_labels: Tensor,
    *,
    pseudo_weight: Tensor | None = None,
    thing_classes: Sequence[int] | None = None,
    block_size: int | None = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """The release's ``multi_resolution_cl(lr_feats, hr_feats, labels, att, hr_lbl, ...)``.

    Arguments keep the reference's order and meaning (``att`` → ``feature_weight``,
    ``fdist_classes`` → ``thing_classes``); its unused ``hr_max_feats``, ``hr_max_lbl`` and
    ``hr_pseudo_weight`` are left out. With ``m_i = 1[hr_labels_i ≠ 0]`` (crop membership, road
    excluded), ``w_ij = a_i·a_j·m_i`` and ``Γ_ij = g_i·g_j``:
    ``L = 0.5 · mean_i −(1/max(1, |P_i|)) Σ_j Γ_ij [P_ij w_ij ℓ^LL_ij + P'_ij (1 − w_ij) ℓ^LH_ij]``
    where P (and the LL negatives) come from ``labels`` and P' (and the LH negatives) from
    ``where(m, hr_labels, labels)``; 255 is an ordinary class; τ = 1. Feature rows are ordered
    pixel-major (the ordering bug) while labels and weights are image-major, exactly as released.

    Args:
        lr_features: ``(B, C, h, w)``.
        hr_features: ``(B, C, h, w)`` (zero outside the crop in the release).
        labels: ``(B, h, w)`` or ``(B, 1, h, w)``.
        feature_weight: ``(B, h, w)`` or ``(B, 1, h, w)``, the feature-weighter output ``a``.
        hr_labels: ``(B, h, w)`` or ``(B, 1, h, w)``, ``crop_mask · labels`` in the release.
        pseudo_weight: ``(B, h, w)`` or ``(B, 1, h, w)`` g, or None (source images).
        thing_classes: the release's ``fdist_classes``: removes positive pairs of different kind
            (stuff/thing, from ``labels``); a no-op when ``hr_labels = crop · labels`` as the
            release calls it, but not for arbitrary ``hr_labels``.
        block_size: anchor rows per block; None for dense.

    Returns:
        Scalar loss.
    """
    labels_flat = _flatten_per_pixel(labels)
    hr_labels_flat = _flatten_per_pixel(hr_labels)
    in_crop = hr_labels_flat != 0
    mixed_labels = torch.where(in_crop, hr_labels_flat, labels_flat)
    total = _sum_over_row_blocks(
        _release_block,
        labels_flat.numel(),
        block_size,
        _release_row_order(_flatten_features(lr_features)),
        _release_row_order(_flatten_features(hr_features)),
        labels_flat,
        mixed_labels,
        None if thing_classes is None else _thing_flags(labels_flat, thing_classes),
        _flatten_weight(feature_weight) * in_crop,
        _flatten_weight(feature_weight),
        None if pseudo_weight is None else _flatten_weight(pseudo_weight),
    )
    return 0.5 * total / labels_flat.numel()


@_without_autocast
def release_contrastive_loss(
    features: Tensor,
    labels: Tensor,
    *,
    thing_classes: Sequence[int] | None = None,
    pseudo_weight: Tensor | None = None,
    temperature: float = 1.0,
    base_temperature: float = 1.0,
    block_size: int | None = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """The release's ``contrastive_loss(feats_, labels_, ...)`` (present there but unused).

    ``L = −(temperature / base_temperature) · mean_i (1/max(1, |P_i|)) Σ_j P_ij Γ_ij ℓ_ij`` with
    the same ordering bug, 255 as a class and no 0.5 factor. ``temperature`` only rescales the loss
    (the similarities are never divided by it), as released. The unused ``feats_teacher_``
    argument is left out and the hard-coded ``.cuda()`` is not reproduced.

    Args:
        features: ``(B, C, h, w)``.
        labels: ``(B, h, w)`` or ``(B, 1, h, w)``.
        thing_classes: the release's ``fdist_classes`` (a no-op on the value).
        pseudo_weight: ``(B, h, w)`` or ``(B, 1, h, w)`` g, or None.
        temperature: multiplies the loss.
        base_temperature: divides the loss.
        block_size: anchor rows per block; None for dense.

    Returns:
        Scalar loss.
    """
    labels_flat = _flatten_per_pixel(labels)
    total = _sum_over_row_blocks(
        _release_block,
        labels_flat.numel(),
        block_size,
        _release_row_order(_flatten_features(features)),
        None,
        labels_flat,
        None,
        None if thing_classes is None else _thing_flags(labels_flat, thing_classes),
        None,
        None,
        None if pseudo_weight is None else _flatten_weight(pseudo_weight),
    )
    return (temperature / base_temperature) * total / labels_flat.numel()
