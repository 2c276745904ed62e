"""MIC block mask."""

from __future__ import annotations

import torch

from models.classes import IMAGENET_MEAN
from training.masking import block_mask, mask_images


def test_block_mask_is_blockwise_and_keeps_about_thirty_percent():
    mask = block_mask(
        4, (256, 192), torch.Generator().manual_seed(0), block_size=64, mask_ratio=0.7
    )
    assert mask.shape == (4, 1, 256, 192)
    blocks = mask.view(4, 1, 4, 64, 3, 64)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
    many = block_mask(64, (64, 64), torch.Generator().manual_seed(1), block_size=8, mask_ratio=0.7)
    assert 0.25 < many.mean().item() < 0.35
    again = block_mask(
        4, (256, 192), torch.Generator().manual_seed(0), block_size=64, mask_ratio=0.7
    )
    assert torch.equal(mask, again)


def test_mask_images_fills_the_mean_colour():
    images = torch.rand(2, 3, 4, 4) * 255
    mask = torch.ones(2, 1, 4, 4)
    mask[0, 0, 1, 2] = 0
    masked = mask_images(images, mask)
    torch.testing.assert_close(masked[0, :, 1, 2], torch.tensor(IMAGENET_MEAN))
    keep = mask.bool().expand_as(images)
    assert torch.equal(masked[keep], images[keep])
