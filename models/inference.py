"""The one sliding-window inference path.

Evaluation, pseudo-labelling, export and serving all go through :func:`slide_inference`; HRDA's
detail-crop slide inside a window is the same function at output stride 4. ``forward_fn`` may be a
PyTorch module, an ONNX Runtime session wrapper or a TensorRT engine wrapper: anything that maps a
batch of fixed-size windows to logits.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ForwardFn = Callable[[Tensor], Tensor]
Box = tuple[int, int, int, int]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return pair  # type: ignore[return-value]


def slide_windows(
    height: int, width: int, crop: int | Sequence[int], stride: int | Sequence[int]
) -> list[Box]:
    """Window boxes covering an image, on mmseg's ``slide_inference`` grid.

    The grid has ``max(size - crop + stride - 1, 0) // stride + 1`` windows per axis; the last
    window is shifted back so that it ends at the border, and windows are clipped to the image
    when the image is smaller than the crop.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        crop: window size, an int or (height, width).
        stride: step between windows, an int or (height, width).

    Returns:
        Boxes ``(y1, y2, x1, x2)`` in row-major order; together they cover every pixel.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    crop_h, crop_w = _pair(crop, "crop")
    stride_h, stride_w = _pair(stride, "stride")
    h_grids = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    w_grids = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * stride_h + crop_h, height)
            x2 = min(w_idx * stride_w + crop_w, width)
            boxes.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return boxes


def pad_to_size(
    image: Tensor, height: int, width: int, value: float | Sequence[float] = 0.0
) -> Tensor:
    """Pads a B×C×H×W image at the bottom and right to at least ``height``×``width``.

    ``value`` is one number or one per channel (for raw RGB input the ImageNet mean pads with
    what becomes zero after the model's normalisation, as mmseg's padding of normalised images).
    """
    pad_h = max(height - image.shape[-2], 0)
    pad_w = max(width - image.shape[-1], 0)
    if pad_h == 0 and pad_w == 0:
        return image
    if isinstance(value, (int, float)):
        return F.pad(image, (0, pad_w, 0, pad_h), value=float(value))
    values = torch.as_tensor(value, dtype=image.dtype, device=image.device)
    if values.numel() != image.shape[1]:
        raise ValueError(
            f"pad value has {values.numel()} entries but the image has {image.shape[1]} channels"
        )
    padded = values.view(1, -1, 1, 1).expand(
        image.shape[0], -1, image.shape[-2] + pad_h, image.shape[-1] + pad_w
    ).clone()
    padded[..., : image.shape[-2], : image.shape[-1]] = image
    return padded


def slide_inference(
    forward_fn: ForwardFn,
    image: Tensor,
    crop: int | Sequence[int],
    stride: int | Sequence[int],
    num_classes: int,
    output_stride: int = 1,
    window_batch: int | None = None,
    pad_value: float | Sequence[float] = 0.0,
) -> Tensor:
    """Averages the logits of overlapping fixed-size windows over an image of any size.

    Every window handed to ``forward_fn`` has exactly the crop size: images smaller than the crop
    are padded at the bottom/right first (with ``pad_value``) and the output is cut back, so a
    fixed-shape exported network can serve any input.

    Args:
        forward_fn: maps windows ``N×C×crop_h×crop_w`` to logits
            ``N×num_classes×(crop_h/output_stride)×(crop_w/output_stride)``.
        image: ``B×C×H×W`` input.
        crop: window size, an int or (height, width).
        stride: window step, an int or (height, width).
        num_classes: number of logit channels ``K``.
        output_stride: ratio between input and logit resolution (HRDA's detail slide works on
            H/4 logits); H, W, crop and stride must then be divisible by it.
        window_batch: how many windows (over all images) go through ``forward_fn`` at once;
            None sends them all in one batch (mmseg's ``batched_slide``).
        pad_value: padding for images smaller than the crop, one value or one per channel.

    Returns:
        ``B×K×(H/output_stride)×(W/output_stride)`` averaged logits, float32 unless the
        forward returns another floating dtype.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be B×C×H×W, got shape {tuple(image.shape)}")
    crop_h, crop_w = _pair(crop, "crop")
    stride_h, stride_w = _pair(stride, "stride")
    batch, _, height, width = image.shape
    if output_stride > 1:
        for name, size in (("height", height), ("width", width), ("crop height", crop_h),
                           ("crop width", crop_w), ("stride height", stride_h),
                           ("stride width", stride_w)):
            if size % output_stride:
                raise ValueError(
                    f"{name} {size} is not divisible by the output stride {output_stride}"
                )
    padded = pad_to_size(image, crop_h, crop_w, pad_value)
    pad_h, pad_w = padded.shape[-2:]
    boxes = slide_windows(pad_h, pad_w, (crop_h, crop_w), (stride_h, stride_w))
    windows = torch.cat([padded[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes], dim=0)

    if window_batch is None:
        # One call without a Python loop over the window count: under torch.export the count
        # is symbolic (batch × windows), and a range() over it would fix the batch size.
        window_logits = forward_fn(windows)
    else:
        chunk = max(int(window_batch), 1)
        outputs = [forward_fn(windows[i : i + chunk]) for i in range(0, windows.shape[0], chunk)]
        window_logits = torch.cat(outputs, dim=0)
    expected = (num_classes, crop_h // output_stride, crop_w // output_stride)
    if tuple(window_logits.shape[1:]) != expected:
        raise ValueError(
            f"forward_fn returned windows of shape {tuple(window_logits.shape[1:])}, "
            f"expected {expected} (num_classes, crop/output_stride)"
        )

    out_h, out_w = pad_h // output_stride, pad_w // output_stride
    dtype = window_logits.dtype if window_logits.is_floating_point() else torch.float32
    logits = image.new_zeros((batch, num_classes, out_h, out_w), dtype=dtype)
    counts = image.new_zeros((1, 1, out_h, out_w), dtype=dtype)
    for index, (y1, y2, x1, x2) in enumerate(boxes):
        ys, ye = y1 // output_stride, y2 // output_stride
        xs, xe = x1 // output_stride, x2 // output_stride
        logits[:, :, ys:ye, xs:xe] += window_logits[index * batch : (index + 1) * batch]
        counts[:, :, ys:ye, xs:xe] += 1
    logits = logits / counts
    return logits[:, :, : height // output_stride, : width // output_stride]


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """Keep-ratio target size fitting ``scale = (long, short)`` (mmcv ``imrescale`` rounding).

    The image is scaled by ``min(long / max(h, w), short / min(h, w))``, up or down, and the new
    size rounded half up, as mmseg's ``Resize(img_scale, keep_ratio=True)``.
    """
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)
