"""The shared sliding-window path against naive references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.inference import pad_to_size, rescale_size, slide_inference, slide_windows


def _coverage(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    count = torch.zeros(height, width, dtype=torch.int64)
    for y1, y2, x1, x2 in boxes:
        count[y1:y2, x1:x2] += 1
    return count


def test_slide_windows_matches_reference_grid_for_cityscapes() -> None:
    # release_code.md §7: a 1024×2048 image with 1024 windows at stride 512 gives x = 0, 512, 1024.
    boxes = slide_windows(1024, 2048, 1024, 512)
    assert boxes == [(0, 1024, 0, 1024), (0, 1024, 512, 1536), (0, 1024, 1024, 2048)]
    # HRDA's detail slide inside one 1024 window: 3×3 crops of 512 at stride 256.
    assert len(slide_windows(1024, 1024, 512, 256)) == 9


@pytest.mark.parametrize("height,width", [(1, 1), (37, 41), (100, 30), (128, 128), (129, 300)])
@pytest.mark.parametrize("crop,stride", [(64, 32), ((48, 64), (16, 40)), (128, 128)])
def test_slide_windows_cover_every_pixel(height, width, crop, stride) -> None:
    boxes = slide_windows(height, width, crop, stride)
    assert (_coverage(height, width, boxes) >= 1).all()
    crop_h, crop_w = (crop, crop) if isinstance(crop, int) else crop
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width
        assert y2 - y1 == min(crop_h, height) and x2 - x1 == min(crop_w, width)


def test_slide_windows_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="positive"):
        slide_windows(0, 10, 4, 2)
    with pytest.raises(ValueError, match="stride"):
        slide_windows(10, 10, 4, 0)


def _pointwise_net(weight: torch.Tensor):
    """A 1×1 convolution: its output at a pixel depends on that pixel only, so every window
    agrees and the average must equal the whole-image result."""

    def forward(windows: torch.Tensor) -> torch.Tensor:
        return F.conv2d(windows, weight)

    return forward


@pytest.mark.parametrize("height,width", [(64, 64), (70, 150), (150, 70), (33, 47)])
def test_slide_equals_whole_for_pointwise_model(height, width) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 3, 1, 1, generator=generator)
    image = torch.rand(2, 3, height, width, generator=generator) * 255
    forward = _pointwise_net(weight)
    slid = slide_inference(forward, image, crop=64, stride=24, num_classes=5)
    torch.testing.assert_close(slid, forward(image), rtol=1e-5, atol=1e-4)


def test_slide_equals_whole_when_one_window_covers_the_image() -> None:
    generator = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(3, 4, 5, padding=2)
    image = torch.rand(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(
            slide_inference(conv, image, crop=64, stride=32, num_classes=4), conv(image)
        )


def test_slide_inference_against_naive_average() -> None:
    generator = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    image = torch.rand(2, 3, 50, 90, generator=generator)
    crop, stride = 32, 20
    with torch.no_grad():
        result = slide_inference(conv, image, crop, stride, num_classes=2, window_batch=3)
        total = torch.zeros(2, 2, 50, 90, dtype=torch.float64)
        count = torch.zeros(50, 90, dtype=torch.float64)
        for y1, y2, x1, x2 in slide_windows(50, 90, crop, stride):
            total[:, :, y1:y2, x1:x2] += conv(image[:, :, y1:y2, x1:x2]).double()
            count[y1:y2, x1:x2] += 1
    torch.testing.assert_close(result.double(), total / count, rtol=1e-6, atol=1e-6)


def test_output_stride_averages_on_the_coarse_grid() -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 64, 96, generator=generator)

    def forward(windows: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(windows, 4)

    result = slide_inference(forward, image, crop=32, stride=16, num_classes=3, output_stride=4)
    torch.testing.assert_close(result, F.avg_pool2d(image, 4), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        slide_inference(forward, image[..., :63, :], 32, 16, 3, output_stride=4)


def test_small_image_is_padded_and_cut_back() -> None:
    seen = []

    def forward(windows: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(windows.shape[-2:]))
        return windows[:, :1] * 2

    image = torch.rand(1, 3, 10, 20)
    result = slide_inference(forward, image, crop=32, stride=16, num_classes=1,
                             pad_value=(1.0, 2.0, 3.0))
    assert seen == [(32, 32)]
    assert result.shape == (1, 1, 10, 20)
    torch.testing.assert_close(result, image[:, :1] * 2)


def test_wrong_window_output_is_reported() -> None:
    with pytest.raises(ValueError, match="expected"):
        slide_inference(lambda w: w, torch.rand(1, 3, 32, 32), 32, 16, num_classes=5)


def test_pad_to_size_per_channel_value() -> None:
    padded = pad_to_size(torch.zeros(1, 3, 2, 2), 3, 4, (1.0, 2.0, 3.0))
    assert padded.shape == (1, 3, 3, 4)
    assert padded[0, 2, 2, 3] == 3.0 and padded[0, 0, 0, 0] == 0.0


def test_rescale_size_matches_mmcv_rounding() -> None:
    # release_code.md §1.3: GTA 1914×1052 → 1280×704 at (1280, 720), 2560×1407 at (2560, 1440).
    assert rescale_size(1052, 1914, (1280, 720)) == (704, 1280)
    assert rescale_size(1052, 1914, (2560, 1440)) == (1407, 2560)
    assert rescale_size(1024, 2048, (1024, 512)) == (512, 1024)
    assert rescale_size(1024, 2048, (2048, 1024)) == (1024, 2048)
    # Portrait input: the long side is bounded by the long edge of the box.
    assert rescale_size(1920, 1080, (2048, 1024)) == (1820, 1024)
