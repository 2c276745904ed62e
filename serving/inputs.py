"""Request inputs: the uploaded image and the options, checked before any model work.

Shared by the BentoML service and the Gradio demo. Every rejection is a :class:`RequestError`
with an HTTP status and a message that names the problem, so clients can fix their request.
Images are decoded with Pillow, restricted to PNG, JPEG and WebP; nothing received is ever
unpickled. The byte size is checked before reading and the pixel count from the header before
decoding, so a small file that expands to gigabytes of pixels (a decompression bomb) is refused
without allocating them.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MODES = ("hrda", "whole")
OUTPUTS = ("json", "mask", "overlay")
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")

# Leading bytes of formats we refuse, to tell "unsupported format" apart from "not an image".
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
)


class RequestError(ValueError):
    """A client mistake: carries the HTTP status to answer with.

    Args:
        message: what was wrong, phrased for the client.
        status: 400 (bad value or bad data), 413 (too large) or 415 (not a supported image).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds on what a request may carry.

    Attributes:
        max_pixels: largest accepted width × height.
        max_bytes: largest accepted encoded file size.
    """

    max_pixels: int
    max_bytes: int


@dataclass(frozen=True)
class SegmentOptions:
    """Validated ``/segment`` options.

    Attributes:
        mode: "hrda" (sliding windows) or "whole" (single pass).
        output: "json", "mask" (PNG of trainIds) or "overlay" (PNG of the blended palette).
        opacity: weight of the palette colours in the overlay, 0..1.
    """

    mode: str = "hrda"
    output: str = "json"
    opacity: float = 0.5


def parse_options(mode: str, output: str, opacity: float) -> SegmentOptions:
    """Checks the option values of a ``/segment`` request.

    Raises:
        RequestError: (400) an unknown mode or output, or an opacity outside 0..1.
    """
    if mode not in MODES:
        raise RequestError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if output not in OUTPUTS:
        raise RequestError(f"unknown output {output!r}: expected one of {', '.join(OUTPUTS)}")
    if not (math.isfinite(opacity) and 0.0 <= opacity <= 1.0):
        raise RequestError(f"opacity must be a number between 0 and 1, got {opacity!r}")
    return SegmentOptions(mode=mode, output=output, opacity=float(opacity))


def apply_pil_limits(limits: ImageLimits) -> None:
    """Makes Pillow itself refuse images above the pixel limit.

    Our own decoder checks the header explicitly; this process-wide setting also covers code
    paths we do not own, such as Gradio opening an upload to preview it.
    """
    Image.MAX_IMAGE_PIXELS = limits.max_pixels


def _sniff_format(data: bytes) -> str | None:
    """Name of an accepted format whose signature ``data`` starts with, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _not_accepted(data: bytes) -> RequestError:
    head = data[:16].lstrip()
    for signature, name in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return RequestError(
                f"unsupported image format {name}: send a PNG, JPEG or WebP image", status=415
            )
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return RequestError(
            "unsupported image format (HEIF/AVIF container): send a PNG, JPEG or WebP image",
            status=415,
        )
    return RequestError(
        "the upload is not an image: expected a PNG, JPEG or WebP file", status=415
    )


def _png_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, read without Pillow."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# What Pillow raises on damaged data (a truncated stream is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def _too_large(what: str, limits: ImageLimits) -> RequestError:
    return RequestError(
        f"image is too large: {what}, the limit is {limits.max_pixels:,} pixels "
        f"(CLUDA_MAX_PIXELS)",
        status=413,
    )


def _corrupt(kind: str, error: Exception) -> RequestError:
    return RequestError(f"the {kind} image is truncated or corrupt ({error})")


def to_rgb(image: Image.Image) -> np.ndarray:
    """Converts a decoded Pillow image of any mode to a uint8 ``H×W×3`` RGB array.

    Grayscale is replicated over the three channels; 16-bit samples keep their 8 most
    significant bits; palette images are expanded; alpha is dropped (the network looks at the
    colours only, as :meth:`models.predictor.Predictor.predict` does with RGBA arrays); CMYK and
    other colour spaces go through Pillow's RGB conversion.
    """
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        samples = np.asarray(image).astype(np.int64)
        gray = (np.clip(samples, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("L", "1"):
        gray = np.asarray(image.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    converted = image.convert("RGBA" if has_alpha else "RGB")
    return np.ascontiguousarray(np.asarray(converted, dtype=np.uint8)[:, :, :3])


def decode_image(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decodes an uploaded PNG, JPEG or WebP file into a uint8 ``H×W×3`` RGB array.

    The EXIF orientation of photos is applied, so the mask matches the image as viewers show it.
    Animated images contribute their first frame.

    Args:
        data: the file's bytes.
        limits: byte and pixel bounds.

    Returns:
        ``H×W×3`` uint8 RGB.

    Raises:
        RequestError: empty (400), too many bytes (413), not an image or an unsupported format
            (415), zero-size (400), too many pixels (413), truncated or corrupt (400).
    """
    if len(data) == 0:
        raise RequestError("the uploaded file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise RequestError(
            f"the upload is {len(data):,} bytes, the limit is {limits.max_bytes:,} "
            f"(CLUDA_MAX_UPLOAD_BYTES)",
            status=413,
        )
    kind = _sniff_format(data)
    if kind is None:
        raise _not_accepted(data)
    if kind == "PNG":
        # Pillow refuses a zero-width or zero-height PNG as "cannot identify"; say what it is.
        size = _png_header_size(data)
        if size is not None and 0 in size:
            raise RequestError(f"the image has zero size ({size[0]}×{size[1]} pixels)")
        if size is not None and size[0] * size[1] > limits.max_pixels:
            raise _too_large(f"{size[0]}×{size[1]} = {size[0] * size[1]:,} pixels", limits)
    try:
        with warnings.catch_warnings():
            # Our explicit limit below is the policy; Pillow's own warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError:
        # Pillow's own guard (see apply_pil_limits) fires at twice its limit.
        raise _too_large("more pixels than allowed", limits) from None
    except UnidentifiedImageError:
        raise RequestError(f"the {kind} image is corrupt: its header cannot be read") from None
    except _DECODE_ERRORS as error:
        raise _corrupt(kind, error) from None
    width, height = image.size
    if width == 0 or height == 0:
        raise RequestError(f"the image has zero size ({width}×{height} pixels)")
    if width * height > limits.max_pixels:
        raise _too_large(f"{width}×{height} = {width * height:,} pixels", limits)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except _DECODE_ERRORS as error:
        raise _corrupt(kind, error) from None


def read_upload(path: Path, limits: ImageLimits) -> bytes:
    """Reads an uploaded file after checking its size, so an oversized upload is never loaded.

    Raises:
        RequestError: (413) the file is larger than ``limits.max_bytes``.
    """
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise RequestError(
            f"the upload is {size:,} bytes, the limit is {limits.max_bytes:,} "
            f"(CLUDA_MAX_UPLOAD_BYTES)",
            status=413,
        )
    return path.read_bytes()


def load_upload(path: Path, limits: ImageLimits) -> np.ndarray:
    """:func:`read_upload` then :func:`decode_image`: an uploaded file to uint8 RGB."""
    return decode_image(read_upload(path, limits), limits)
