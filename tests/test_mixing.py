"""ClassMix, mixing, kornia-0.5.8 colour jitter and Gaussian blur, DACS's augmentation gates."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch

from training.mixing import (
    ColorJitterParameters,
    apply_strong_augmentation,
    blur_kernel_size,
    class_mix_masks,
    color_jitter,
    gaussian_blur,
    mix,
    sample_color_jitter,
    sample_strong_augmentation,
)


def labels_with_all_classes(classes, batch_size=2, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes)[
        torch.randint(0, len(classes), (batch_size, 1, size, size), generator=generator)
    ]
    labels[:, 0, 0, : len(classes)] = torch.tensor(classes)  # every image shows every class
    return labels


@pytest.mark.parametrize("exclude_ignore, expected_k", [(False, 3), (True, 2)])
def test_class_mix_picks_half_of_the_batch_classes(exclude_ignore, expected_k):
    labels = labels_with_all_classes([0, 1, 5, 13, 255])
    before = labels.clone()
    for seed in range(10):
        masks = class_mix_masks(
            labels, torch.Generator().manual_seed(seed), exclude_ignore=exclude_ignore
        )
        assert masks.shape == labels.shape and masks.dtype == torch.bool
        for image_labels, image_mask in zip(labels, masks, strict=True):
            chosen = set(image_labels[image_mask].tolist())
            assert len(chosen) == expected_k
            if exclude_ignore:
                assert 255 not in chosen
    assert torch.equal(labels, before)


def test_class_mix_candidates_come_from_the_whole_batch():
    # Image 1 shows only class 0; the batch has 4 classes, so k = 2 classes are drawn for it too
    # and its mask is exactly the pixels of its own label that belong to the chosen classes.
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0] = torch.tensor([0, 1, 2, 3]).repeat(4, 1)
    seen_empty = seen_full = False
    for seed in range(40):
        masks = class_mix_masks(labels, torch.Generator().manual_seed(seed))
        assert len(set(labels[0][masks[0, 0]].tolist())) == 2
        chosen_in_1 = masks[1, 0]
        assert chosen_in_1.all() or not chosen_in_1.any()
        seen_empty |= not chosen_in_1.any()
        seen_full |= bool(chosen_in_1.all())
    assert seen_empty and seen_full


def test_class_mix_is_reproducible_with_the_generator():
    labels = labels_with_all_classes([0, 1, 2, 3, 4, 5, 6])
    first = class_mix_masks(labels, torch.Generator().manual_seed(3))
    second = class_mix_masks(labels, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_mix_images_labels_and_weights():
    mask = torch.tensor([[[[True, False], [False, True]]]])
    source_image, target_image = torch.full((1, 3, 2, 2), 10.0), torch.full((1, 3, 2, 2), 20.0)
    source_label, target_label = torch.full((1, 2, 2), 4), torch.full((1, 2, 2), 7)
    weight = torch.full((1, 2, 2), 0.25)
    copies = [t.clone() for t in (source_image, target_image, source_label, target_label, weight)]
    mixed = mix(mask, source_image, target_image)
    assert torch.equal(mixed[0, 1], torch.tensor([[10.0, 20.0], [20.0, 10.0]]))
    assert torch.equal(mix(mask, source_label, target_label)[0], torch.tensor([[4, 7], [7, 4]]))
    assert torch.equal(
        mix(mask, torch.ones_like(weight), weight)[0], torch.tensor([[1.0, 0.25], [0.25, 1.0]])
    )
    for original, copy in zip(
        (source_image, target_image, source_label, target_label, weight), copies, strict=True
    ):
        assert torch.equal(original, copy)


def test_blur_kernel_size_rule():
    assert blur_kernel_size(512) == 51
    assert blur_kernel_size(1024) == 103
    for length in range(8, 2100, 37):
        tenth = math.ceil(0.1 * length)
        assert blur_kernel_size(length) == int(np.floor(tenth - 0.5 + tenth % 2))
        assert blur_kernel_size(length) % 2 == 1


def naive_blur(image, sigma, kernel_size):
    """Explicit 2-D correlation with a normalised Gaussian and reflect padding (numpy, float64)."""
    size_y, size_x = kernel_size
    y = np.arange(size_y) - size_y // 2
    x = np.arange(size_x) - size_x // 2
    kernel = np.outer(np.exp(-(y**2) / (2 * sigma**2)), np.exp(-(x**2) / (2 * sigma**2)))
    kernel /= kernel.sum()
    padded = np.pad(
        image, ((0, 0), (size_y // 2, size_y // 2), (size_x // 2, size_x // 2)), mode="reflect"
    )
    out = np.zeros_like(image)
    for channel in range(image.shape[0]):
        for row in range(image.shape[1]):
            for column in range(image.shape[2]):
                out[channel, row, column] = (
                    padded[channel, row : row + size_y, column : column + size_x] * kernel
                ).sum()
    return out


def test_gaussian_blur_matches_naive_correlation():
    images = torch.rand(2, 3, 32, 25, dtype=torch.float64) * 255
    sigma = torch.tensor([0.4, 1.1], dtype=torch.float64)
    blurred = gaussian_blur(images, sigma)
    kernel_size = (blur_kernel_size(32), blur_kernel_size(25))
    assert kernel_size == (3, 3)
    for index in range(2):
        expected = naive_blur(images[index].numpy(), sigma[index].item(), (5, 3))
        actual = gaussian_blur(images[index : index + 1], sigma[index : index + 1], (5, 3))[0]
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-9)
    expected_default = naive_blur(images[1].numpy(), 1.1, kernel_size)
    np.testing.assert_allclose(blurred[1].numpy(), expected_default, rtol=1e-10, atol=1e-9)


def naive_color_jitter(image, brightness, contrast, saturation, hue, order):
    """Per-pixel reference with Python's colorsys; image (3, H, W) in 0..1, float64."""
    out = image.copy()
    for operation in order:
        for row in range(out.shape[1]):
            for column in range(out.shape[2]):
                red, green, blue = out[:, row, column]
                if operation == 0:
                    pixel = [min(max(v + brightness - 1, 0.0), 1.0) for v in (red, green, blue)]
                elif operation == 1:
                    pixel = [min(max(v * contrast, 0.0), 1.0) for v in (red, green, blue)]
                else:
                    h, s, v = colorsys.rgb_to_hsv(red, green, blue)
                    if operation == 2:
                        s = min(max(s * saturation, 0.0), 1.0)
                    else:
                        h = (h + hue) % 1.0
                    pixel = colorsys.hsv_to_rgb(h, s, v)
                out[:, row, column] = pixel
    return out


def test_color_jitter_matches_colorsys_reference():
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(3, 3, 4, 5, generator=generator, dtype=torch.float64) * 255
    images[0, :, 0, 0] = 128.0  # a grey pixel (undefined hue)
    parameters = ColorJitterParameters(
        brightness=torch.tensor([0.8, 1.15, 1.0]),
        contrast=torch.tensor([1.2, 0.85, 1.0]),
        saturation=torch.tensor([0.9, 1.2, 1.0]),
        hue=torch.tensor([0.2, -0.15, 0.05]),
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]]),
    )
    before = images.clone()
    jittered = color_jitter(images, parameters)
    assert torch.equal(images, before)
    for index in range(3):
        expected = naive_color_jitter(
            images[index].numpy() / 255,
            parameters.brightness[index].item(),
            parameters.contrast[index].item(),
            parameters.saturation[index].item(),
            parameters.hue[index].item(),
            parameters.order[index].tolist(),
        )
        # kornia's saturation divides by (V + 1e-6): agreement to ~1e-5 of the 0..255 range.
        np.testing.assert_allclose(jittered[index].numpy(), expected * 255, atol=2e-3)


def test_color_jitter_parameter_ranges():
    parameters = sample_color_jitter(500, torch.Generator().manual_seed(0), strength=0.2)
    for factors in (parameters.brightness, parameters.contrast, parameters.saturation):
        assert factors.min() >= 0.8 and factors.max() <= 1.2 and factors.std() > 0.05
    assert parameters.hue.min() >= -0.2 and parameters.hue.max() <= 0.2
    assert torch.equal(parameters.order.sort(dim=1).values, torch.arange(4).expand(500, 4))
    assert len({tuple(order) for order in parameters.order.tolist()}) > 1


def test_strong_augmentation_gates_follow_dacs():
    seen = set()
    for seed in range(30):
        generator = torch.Generator().manual_seed(seed)
        jitter_gate, blur_gate = torch.rand(
            2, generator=torch.Generator().manual_seed(seed)
        ).tolist()
        augmentation = sample_strong_augmentation(2, generator, jitter_probability=0.2)
        assert (augmentation.color_jitter is not None) == (jitter_gate > 0.2)
        assert (augmentation.blur_sigma is not None) == (blur_gate > 0.5)
        if augmentation.blur_sigma is not None:
            assert augmentation.blur_sigma.shape == (2,)
            assert ((augmentation.blur_sigma >= 0.15) & (augmentation.blur_sigma < 1.15)).all()
        seen.add((augmentation.color_jitter is None, augmentation.blur_sigma is None))
    assert len(seen) == 4
    no_blur = sample_strong_augmentation(2, torch.Generator().manual_seed(1), blur=False)
    assert no_blur.blur_sigma is None


def test_apply_strong_augmentation():
    images = torch.rand(2, 3, 16, 16) * 255
    generator = torch.Generator().manual_seed(0)
    jitter = sample_color_jitter(2, generator)
    sigma = torch.tensor([0.5, 1.0])
    both = apply_strong_augmentation(
        images, type(sample_strong_augmentation(2, generator))(jitter, sigma)
    )
    torch.testing.assert_close(both, gaussian_blur(color_jitter(images, jitter), sigma))
    unchanged = apply_strong_augmentation(
        images, type(sample_strong_augmentation(2, generator))(None, None)
    )
    assert torch.equal(unchanged, images)
