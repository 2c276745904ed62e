"""CLUDA contrastive losses: paper variant vs explicit loops, release variant vs a literal
transcription of the released tensor ops, blockwise vs dense, and memory behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from training.contrastive import (
    contrastive_loss,
    multi_resolution_contrastive_loss,
    release_contrastive_loss,
    release_multi_resolution_cl,
    to_grid_bilinear,
    to_grid_nearest,
)

THINGS = (6, 7, 11, 12, 13)
CLASS_POOL = torch.tensor([0, 1, 2, 6, 11, 13, 255])


def make_inputs(batch_size=2, channels=6, height=3, width=4, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, channels, height, width)
    lr = torch.randn(shape, generator=generator, dtype=dtype)
    hr = torch.randn(shape, generator=generator, dtype=dtype)
    labels = CLASS_POOL[
        torch.randint(0, len(CLASS_POOL), (batch_size, height, width), generator=generator)
    ]
    weight = torch.rand(batch_size, height, width, generator=generator, dtype=dtype)
    crop = torch.zeros(batch_size, height, width, dtype=torch.bool)
    crop[:, 1:, 1:3] = True
    target = torch.rand(batch_size, height, width, generator=generator) > 0.5
    pseudo = torch.rand(batch_size, height, width, generator=generator, dtype=dtype)
    return lr, hr, labels, weight, crop, target, pseudo


# ---------------------------------------------------------------------------------------------
# paper variant: explicit per-anchor loops in float64
# ---------------------------------------------------------------------------------------------


def naive_nce(anchor, contrasts, positives, negatives, temperature):
    """Eq. 2 for one anchor with explicit sets; 0 without positives."""
    if not positives:
        return 0.0
    total = 0.0
    for j in positives:
        positive_term = math.exp(float(anchor @ contrasts[j]) / temperature)
        negative_sum = sum(math.exp(float(anchor @ contrasts[k]) / temperature) for k in negatives)
        total += -math.log(positive_term / (positive_term + negative_sum))
    return total / len(positives)


def naive_paper_loss(
    lr, labels, hr=None, weight=None, crop=None, target=None, gamma=1.0, temperature=1.0
):
    batch_size, channels = lr.shape[:2]
    lr_rows = torch.nn.functional.normalize(lr.permute(0, 2, 3, 1).reshape(-1, channels), dim=1)
    hr_rows = (
        None
        if hr is None
        else torch.nn.functional.normalize(hr.permute(0, 2, 3, 1).reshape(-1, channels), dim=1)
    )
    y = labels.reshape(-1).tolist()
    n = len(y)
    in_crop = [False] * n if crop is None else crop.reshape(-1).tolist()
    is_target = [False] * n if target is None else target.reshape(-1).tolist()
    delta = None if weight is None else weight.reshape(-1).tolist()
    total = 0.0
    for i in range(n):
        if y[i] == 255:
            continue
        thing_i = y[i] in THINGS
        positives = [j for j in range(n) if j != i and y[j] == y[i]]
        negatives = [
            k for k in range(n) if y[k] != 255 and y[k] != y[i] and (y[k] in THINGS) == thing_i
        ]
        lr_term = naive_nce(lr_rows[i], lr_rows, positives, negatives, temperature)
        if hr is not None and in_crop[i]:
            hr_positives = [j for j in positives if in_crop[j]]
            hr_negatives = [k for k in negatives if in_crop[k]]
            hr_term = naive_nce(lr_rows[i], hr_rows, hr_positives, hr_negatives, temperature)
            anchor_loss = delta[i] * lr_term + (1 - delta[i]) * hr_term
        else:
            anchor_loss = lr_term
        total += (gamma if is_target[i] else 1.0) * anchor_loss
    return total / n


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_single_resolution_matches_naive_loops(batch_size, temperature):
    lr, _, labels, _, _, target, _ = make_inputs(batch_size=batch_size, seed=batch_size)
    expected = naive_paper_loss(lr, labels, target=target, gamma=0.3, temperature=temperature)
    actual = contrastive_loss(
        lr,
        labels,
        target_mask=target,
        confidence=0.3,
        thing_classes=THINGS,
        temperature=temperature,
    )
    assert actual.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert expected > 0


@pytest.mark.parametrize("batch_size", [1, 2])
def test_multi_resolution_matches_naive_loops(batch_size):
    lr, hr, labels, weight, crop, target, _ = make_inputs(
        batch_size=batch_size, seed=10 + batch_size
    )
    expected = naive_paper_loss(lr, labels, hr, weight, crop, target, gamma=0.6, temperature=0.5)
    actual = multi_resolution_contrastive_loss(
        lr,
        hr,
        labels,
        weight,
        crop,
        target_mask=target,
        confidence=torch.tensor(0.6, dtype=torch.float64),
        thing_classes=THINGS,
        temperature=0.5,
    )
    assert actual.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_stuff_and_thing_are_never_paired():
    # Two stuff pixels of one class and one thing pixel: with stuff-thing pairs excluded no anchor
    # has both a positive and a negative, so every term is -log(1) or absent.
    features = torch.randn(1, 4, 1, 3, dtype=torch.float64)
    labels = torch.tensor([[[0, 0, 13]]])
    assert contrastive_loss(features, labels, thing_classes=THINGS).item() == 0.0
    assert release_contrastive_loss(features, labels, thing_classes=THINGS).item() != 0.0


def test_ignored_pixels_are_neither_anchors_nor_contrasts():
    lr, hr, labels, weight, crop, _, _ = make_inputs(seed=3)
    labels[0, 0, :] = 255
    lr.requires_grad_(True)
    hr.requires_grad_(True)
    loss = multi_resolution_contrastive_loss(lr, hr, labels, weight, crop, thing_classes=THINGS)
    lr_grad, hr_grad = torch.autograd.grad(loss, [lr, hr])
    assert torch.count_nonzero(lr_grad[0, :, 0, :]) == 0
    assert torch.count_nonzero(hr_grad[0, :, 0, :]) == 0
    assert torch.count_nonzero(lr_grad[0, :, 1:, :]) > 0


def test_confidence_weighs_only_target_anchors():
    lr, _, labels, _, _, target, _ = make_inputs(seed=4)
    plain = contrastive_loss(lr, labels, thing_classes=THINGS)
    assert contrastive_loss(
        lr, labels, target_mask=target, confidence=1.0, thing_classes=THINGS
    ).item() == pytest.approx(plain.item())
    source_only = contrastive_loss(lr, labels.masked_fill(target, 255), thing_classes=THINGS)
    target_muted = contrastive_loss(
        lr, labels, target_mask=target, confidence=0.0, thing_classes=THINGS
    )
    # With Γ = 0 target cells stay contrasts, so the loss differs from dropping them, but it is
    # smaller than the full loss and target anchors receive no weight.
    assert target_muted.item() != pytest.approx(source_only.item())
    assert 0 < target_muted.item() < plain.item()


def test_outside_crop_anchors_ignore_the_feature_weight():
    lr, hr, labels, weight, crop, _, _ = make_inputs(seed=5)
    weight.requires_grad_(True)
    loss = multi_resolution_contrastive_loss(lr, hr, labels, weight, crop, thing_classes=THINGS)
    (grad,) = torch.autograd.grad(loss, weight)
    assert torch.count_nonzero(grad[~crop]) == 0
    assert torch.count_nonzero(grad[crop & (labels != 255)]) > 0


def test_small_temperature_stays_finite():
    features = torch.zeros(1, 2, 1, 4, dtype=torch.float32)
    features[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    features[0, :, 0, 1] = torch.tensor([-1.0, 0.0])  # positive of pixel 0, far away
    features[0, :, 0, 2] = torch.tensor([1.0, 0.0])  # negative, identical to pixel 0
    features[0, :, 0, 3] = torch.tensor([0.0, 1.0])
    labels = torch.tensor([[[1, 1, 2, 3]]])
    features.requires_grad_(True)
    loss = contrastive_loss(features, labels, temperature=0.005)
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # s/τ = ±200 overflows exp in float32. Anchor 0: ℓ = −200 − log(e^−200 + e^200 + e^0) ≈ −400;
    # anchor 1: ℓ = −200 − log(e^−200 + e^−200 + e^0) ≈ −200; anchors 2, 3 have no positive.
    assert loss.item() == pytest.approx(600 / 4, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# release variant: literal dense transcription of user0407/CLUDA's tensor operations
# ---------------------------------------------------------------------------------------------


def literal_contrast(feats, labels, imnet_mask=None, sim_weight=None, feat_ext=None):
    contrast_feature = torch.cat(torch.unbind(feats, dim=1), dim=0)
    if feat_ext is not None:
        contrast_feature_ext = torch.cat(torch.unbind(feat_ext, dim=1), dim=0)
        anchor_dot_contrast = torch.matmul(contrast_feature, contrast_feature_ext.transpose(0, 1))
    else:
        anchor_dot_contrast = torch.matmul(contrast_feature, contrast_feature.transpose(0, 1))
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = torch.eq(labels, labels.transpose(0, 1)).to(feats.dtype)
    neg_mask = 1 - mask
    logits_mask = torch.eye(mask.shape[0], mask.shape[0]).logical_not()
    mask = mask * logits_mask
    neg_logits = (torch.exp(logits) * neg_mask).sum(1, keepdim=True)
    log_prob = logits - torch.log(torch.exp(logits) + neg_logits)
    if imnet_mask is not None:
        mask = mask * imnet_mask
    if sim_weight is not None:
        log_prob = log_prob * (sim_weight if feat_ext is None else 1 - sim_weight)
    return log_prob * mask, mask


def literal_imnet_mask(labels, fdist_classes):
    fdist_mask = torch.any(labels[..., None] == torch.tensor(fdist_classes), -1)
    imnet_mask = fdist_mask.logical_not().view(-1, 1)
    return torch.eq(imnet_mask, imnet_mask.transpose(0, 1)).double()


def literal_multi_resolution_cl(
    lr_feats, hr_feats, labels, att, hr_lbl, pseudo_weight=None, fdist_classes=THINGS
):
    labels = labels.reshape(labels.shape[0], -1, 1).reshape(-1, 1)
    hr_lbl = hr_lbl.reshape(hr_lbl.shape[0], -1, 1).reshape(-1, 1)
    imnet_mask = literal_imnet_mask(labels, fdist_classes)
    if pseudo_weight is not None:
        pw = pseudo_weight.reshape(-1, 1)
        lbl_sim_weight = torch.matmul(pw, pw.transpose(0, 1))
    lr_feats = lr_feats.permute(0, 2, 3, 1)
    lr_feats = torch.nn.functional.normalize(
        lr_feats.reshape(lr_feats.shape[0], -1, lr_feats.shape[3]), dim=-1
    )
    hr_feats = hr_feats.permute(0, 2, 3, 1)
    hr_feats = torch.nn.functional.normalize(
        hr_feats.reshape(hr_feats.shape[0], -1, hr_feats.shape[3]), dim=-1
    )
    mix_mask = torch.where(hr_lbl == 0, 0, 1)
    mix_lbl = mix_mask * hr_lbl + (1 - mix_mask) * labels
    att = att.reshape(labels.shape[0], -1, 1).reshape(-1, 1)
    ld_sim_weight = torch.matmul(att, att.transpose(0, 1)) * mix_mask.view(-1, 1)
    lr_cl, mask = literal_contrast(
        lr_feats, labels, imnet_mask=imnet_mask, sim_weight=ld_sim_weight
    )
    mx_cl, _ = literal_contrast(
        lr_feats, mix_lbl, imnet_mask=imnet_mask, sim_weight=ld_sim_weight, feat_ext=hr_feats
    )
    log_prob = lr_cl + mx_cl
    if pseudo_weight is not None:
        log_prob = log_prob * lbl_sim_weight
    den = mask.sum(1)
    den[den == 0] = 1
    return 0.5 * (-log_prob.sum(1) / den).mean()


def literal_contrastive_loss(
    feats_, labels_, fdist_classes=THINGS, pseudo_weight=None, temperature=1, base_temperature=1
):
    feats_ = feats_.permute(0, 2, 3, 1)
    feats_ = torch.nn.functional.normalize(
        feats_.reshape(feats_.shape[0], -1, feats_.shape[3]), dim=-1
    )
    labels_ = labels_.reshape(labels_.shape[0], -1, 1)
    labels = labels_.reshape(-1, 1)
    imnet_mask = literal_imnet_mask(labels, fdist_classes)
    if pseudo_weight is not None:
        pw = pseudo_weight.reshape(-1, 1)
        sim_weight = torch.matmul(pw, pw.transpose(0, 1))
    mask = torch.eq(labels, labels.transpose(0, 1)).double()
    contrast_feature = torch.cat(torch.unbind(feats_, dim=1), dim=0)
    anchor_dot_contrast = torch.matmul(contrast_feature, contrast_feature.transpose(0, 1))
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    neg_mask = 1 - mask
    mask = mask * torch.eye(mask.shape[0], mask.shape[0]).logical_not()
    neg_logits = (torch.exp(logits) * neg_mask).sum(1, keepdim=True)
    log_prob = logits - torch.log(torch.exp(logits) + neg_logits)
    mask = mask * imnet_mask
    den = mask.sum(1)
    den[den == 0] = 1
    if pseudo_weight is not None:
        log_prob = log_prob * sim_weight
    mean_log_prob_pos = (mask * log_prob).sum(1) / den
    return (-(temperature / base_temperature) * mean_log_prob_pos).mean()


@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("with_pseudo_weight", [False, True])
def test_release_multi_resolution_matches_literal(batch_size, with_pseudo_weight):
    lr, hr, labels, weight, crop, _, pseudo = make_inputs(
        batch_size=batch_size, seed=20 + batch_size
    )
    hr = hr * crop.unsqueeze(1)  # the release pastes HR features on a zero canvas
    hr_labels = crop * labels
    pseudo = pseudo if with_pseudo_weight else None
    expected = literal_multi_resolution_cl(lr, hr, labels, weight, hr_labels, pseudo_weight=pseudo)
    for thing_classes in (THINGS, None):
        actual = release_multi_resolution_cl(
            lr, hr, labels, weight, hr_labels, pseudo_weight=pseudo, thing_classes=thing_classes
        )
        torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_release_multi_resolution_uses_hr_labels_as_given():
    # hr_labels that are not crop·labels exercise the release's
    # mix_lbl = where(hr != 0, hr, labels).
    lr, hr, labels, weight, _, _, pseudo = make_inputs(seed=31)
    hr_labels = torch.randint(0, 3, labels.shape, generator=torch.Generator().manual_seed(1))
    expected = literal_multi_resolution_cl(lr, hr, labels, weight, hr_labels, pseudo_weight=pseudo)
    actual = release_multi_resolution_cl(
        lr, hr, labels, weight, hr_labels, pseudo_weight=pseudo, thing_classes=THINGS
    )
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    # Here the thing mask matters: a pair can share the mixed label but not the stuff/thing kind.
    without_mask = release_multi_resolution_cl(
        lr, hr, labels, weight, hr_labels, pseudo_weight=pseudo
    )
    assert without_mask.item() != pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_release_contrastive_loss_matches_literal(batch_size):
    lr, _, labels, _, _, _, pseudo = make_inputs(batch_size=batch_size, seed=40 + batch_size)
    expected = literal_contrastive_loss(
        lr, labels, pseudo_weight=pseudo, temperature=0.7, base_temperature=0.5
    )
    actual = release_contrastive_loss(
        lr,
        labels,
        thing_classes=THINGS,
        pseudo_weight=pseudo,
        temperature=0.7,
        base_temperature=0.5,
    )
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert release_contrastive_loss(lr, labels).item() == pytest.approx(
        literal_contrastive_loss(lr, labels).item(), rel=1e-10
    )


def test_release_ordering_bug_is_reproduced():
    # Stacking the two images into one tall image gives the same pixels and labels without the
    # pixel-major/image-major mismatch (B = 1); the B = 2 release value must differ from it, and
    # B = 1 must agree with the aligned literal computation.
    lr, _, labels, _, _, _, _ = make_inputs(seed=50)
    tall_features = torch.cat(list(lr), dim=1).unsqueeze(0)
    tall_labels = torch.cat(list(labels), dim=0).unsqueeze(0)
    aligned = literal_contrastive_loss(tall_features, tall_labels)
    torch.testing.assert_close(release_contrastive_loss(tall_features, tall_labels), aligned)
    assert release_contrastive_loss(lr, labels).item() != pytest.approx(aligned.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# blockwise == dense
# ---------------------------------------------------------------------------------------------


def all_losses(lr, hr, labels, weight, crop, target, pseudo, block_size):
    return {
        "paper": contrastive_loss(
            lr, labels, target_mask=target, confidence=0.4, block_size=block_size
        ),
        "paper_mr": multi_resolution_contrastive_loss(
            lr,
            hr,
            labels,
            weight,
            crop,
            target_mask=target,
            confidence=0.4,
            temperature=0.3,
            block_size=block_size,
        ),
        "release": release_contrastive_loss(
            lr, labels, pseudo_weight=pseudo, thing_classes=THINGS, block_size=block_size
        ),
        "release_mr": release_multi_resolution_cl(
            lr,
            hr,
            labels,
            weight,
            crop * labels,
            pseudo_weight=pseudo,
            thing_classes=THINGS,
            block_size=block_size,
        ),
    }


@pytest.mark.parametrize("block_size", [3, 7, 64])
def test_blockwise_equals_dense_in_value_and_gradient(block_size):
    lr, hr, labels, weight, crop, target, pseudo = make_inputs(
        batch_size=2, height=4, width=5, seed=60, dtype=torch.float32
    )
    leaves = [lr.requires_grad_(True), hr.requires_grad_(True), weight.requires_grad_(True)]
    dense = all_losses(lr, hr, labels, weight, crop, target, pseudo, None)
    blocked = all_losses(lr, hr, labels, weight, crop, target, pseudo, block_size)
    for name in dense:
        torch.testing.assert_close(blocked[name], dense[name], rtol=1e-5, atol=1e-6, msg=name)
        dense_grads = torch.autograd.grad(
            dense[name], leaves, allow_unused=True, materialize_grads=True
        )
        blocked_grads = torch.autograd.grad(
            blocked[name], leaves, allow_unused=True, materialize_grads=True
        )
        for dense_grad, blocked_grad in zip(dense_grads, blocked_grads, strict=True):
            torch.testing.assert_close(blocked_grad, dense_grad, rtol=1e-4, atol=1e-6, msg=name)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("name", ["paper_mr", "release_mr"])
def test_blockwise_never_builds_the_full_matrix(name):
    lr, hr, labels, weight, crop, target, pseudo = make_inputs(
        batch_size=2, channels=4, height=8, width=8, seed=70, dtype=torch.float32
    )
    lr.requires_grad_(True)
    num_cells = labels.numel()  # 128
    sizes = {}
    for block_size in (None, 16):
        with LargestTensor() as probe:
            loss = all_losses(lr, hr, labels, weight, crop, target, pseudo, block_size)[name]
            loss.backward()
        sizes[block_size] = probe.largest
    assert sizes[None] >= num_cells * num_cells
    assert sizes[16] <= 16 * num_cells


# ---------------------------------------------------------------------------------------------
# grid resizing
# ---------------------------------------------------------------------------------------------


def test_grid_resizing_modes():
    features = torch.arange(2 * 3 * 9 * 9, dtype=torch.float32).view(2, 3, 9, 9)
    grid = to_grid_bilinear(features, (5, 5))
    assert grid.shape == (2, 3, 5, 5)
    # align_corners=True keeps the corner values and samples every second source cell.
    torch.testing.assert_close(grid, features[:, :, ::2, ::2])
    weight = torch.rand(2, 9, 9)
    assert to_grid_bilinear(weight, (5, 5)).shape == (2, 5, 5)
    labels = torch.randint(0, 19, (2, 1, 9, 9))
    small = to_grid_nearest(labels, (3, 3))
    assert small.dtype == labels.dtype and small.shape == (2, 1, 3, 3)
    torch.testing.assert_close(small, labels[:, :, ::3, ::3])
    mask = torch.rand(2, 9, 9) > 0.5
    assert to_grid_nearest(mask, (3, 3)).dtype == torch.bool


def test_losses_stay_float32_inside_bf16_autocast():
    # A bf16 training step runs under autocast; the similarities must still be float32 products
    # (bf16 would change the loss in the 3rd significant digit). bf16 feature maps are promoted.
    lr, hr, labels, weight, crop, target, pseudo = make_inputs(
        batch_size=2, channels=32, height=6, width=7, seed=5, dtype=torch.float32
    )
    hr_labels = crop * labels
    losses = {
        "paper": lambda f: contrastive_loss(f, labels, target_mask=target, confidence=0.4,
                                            thing_classes=THINGS),
        "paper multi": lambda f: multi_resolution_contrastive_loss(
            f, hr, labels, weight, crop, target_mask=target, thing_classes=THINGS),
        "release": lambda f: release_contrastive_loss(f, labels, pseudo_weight=pseudo,
                                                      thing_classes=THINGS),
        "release multi": lambda f: release_multi_resolution_cl(
            f, hr, labels, weight, hr_labels, pseudo_weight=pseudo, thing_classes=THINGS),
    }
    for name, loss in losses.items():
        reference = loss(lr).item()
        features = lr.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(features)
            bf16_input = loss(lr.bfloat16())
        value.backward()
        assert value.dtype == torch.float32 and features.grad.dtype == torch.float32, name
        assert value.item() == pytest.approx(reference, rel=1e-6), name
        # bf16 inputs lose their own precision, but the loss is still computed in float32.
        assert bf16_input.dtype == torch.float32, name
        assert bf16_input.item() == pytest.approx(reference, rel=2e-2), name
