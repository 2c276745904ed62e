"""Reading and writing image and label files, with errors that name the file.

Images are decoded with OpenCV and returned in RGB order (mmseg decodes with cv2 as BGR and converts
with ``to_rgb=True``). Raw label files are decoded the way each reference conversion script does it:
PIL for palette / grey PNGs (GTA, Cityscapes, custom), OpenCV ``IMREAD_UNCHANGED`` for Synthia's
16-bit multi-channel PNGs, which PIL cannot read.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError

# JPEG streams end with the EOI marker; a file cut short loses it, and OpenCV would then return a
# partially grey image with only a warning on stderr.
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_JPEG_END_OF_IMAGE = b"\xff\xd9"

# Suffix of the temporary files written before an atomic rename (see write_bytes_atomic).
TEMP_SUFFIX = ".cluda-tmp"


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {what} {path}: {error.strerror or error}") from error


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB.

    Args:
        path: PNG, JPEG or any format OpenCV decodes.

    Returns:
        uint8 array H×W×3 in RGB order.

    Raises:
        DatasetError: the file is missing, unreadable, truncated or not an image.
    """
    data = _read_bytes(path, "image")
    if path.suffix.lower() in _JPEG_SUFFIXES and not data.rstrip(b"\x00").endswith(
        _JPEG_END_OF_IMAGE
    ):
        raise DatasetError(f"image file is truncated: {path}")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"cannot decode image (unreadable, truncated or not an image): {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label_pil(path: Path) -> np.ndarray:
    """Decode a single-channel label PNG (palette indices, 8-bit or 16-bit grey) with PIL.

    Palette PNGs (GTA5 labels) give their palette indices, not the colours, which is what the
    reference conversion script relies on.

    Args:
        path: the label file.

    Returns:
        Integer array H×W (uint8 for 8-bit files, a wider integer type for 16-bit files).

    Raises:
        DatasetError: the file is missing, unreadable or truncated, or holds colour (RGB) values.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
                raise DatasetError(
                    f"label file {path} has PIL mode {image.mode!r}; expected one value per pixel "
                    "(palette 'P', grey 'L' or 16-bit 'I;16'). Colour-coded labels must be "
                    "converted to ids first."
                )
            return np.asarray(image)
    except FileNotFoundError as error:
        raise DatasetError(f"label file not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(
            f"cannot decode label (unreadable or truncated): {path}: {error}"
        ) from error


def read_synthia_label(path: Path) -> np.ndarray:
    """Decode a Synthia RAND-CITYSCAPES label PNG as the reference script does.

    OpenCV ``IMREAD_UNCHANGED`` keeps the 16-bit depth; channel ``[..., -1]`` of OpenCV's BGR array
    is the first (R) channel stored in the file, which holds the class id.

    Args:
        path: a ``GT/LABELS/NNNNNNN.png`` file.

    Returns:
        Integer array H×W of Synthia class ids.

    Raises:
        DatasetError: the file is missing, unreadable or truncated.
    """
    data = _read_bytes(path, "label")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(f"cannot decode label (unreadable or truncated): {path}")
    return array[..., -1] if array.ndim == 3 else array


def read_train_ids(path: Path) -> np.ndarray:
    """Decode a ``*_labelTrainIds.png`` file (8-bit grey, trainIds 0..18 and 255).

    Args:
        path: a label file written by ``prepare`` (or by the Cityscapes scripts).

    Returns:
        uint8 array H×W.

    Raises:
        DatasetError: the file is missing, unreadable, truncated or not single-channel 8-bit.
    """
    data = _read_bytes(path, "label")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DatasetError(f"cannot decode label (unreadable or truncated): {path}")
    if array.ndim != 2 or array.dtype != np.uint8:
        raise DatasetError(
            f"trainId label {path} must be a single-channel 8-bit PNG, got shape {array.shape} "
            f"and dtype {array.dtype}"
        )
    return array


def image_size(path: Path) -> tuple[int, int]:
    """Read an image's size from its header only (no decoding).

    Args:
        path: any image file PIL can identify.

    Returns:
        (width, height).

    Raises:
        DatasetError: the file is missing or not a recognisable image.
    """
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as error:
        raise DatasetError(f"file not found: {path}") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"cannot read the header of {path}: {error}") from error


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old file or the complete new one.

    The bytes go to a hidden temporary file in the same folder, which is then renamed over the
    destination (``os.replace`` is atomic on one file system). An interrupted run therefore never
    leaves a truncated output behind, only a stray temporary file that
    :func:`remove_stale_temp_files` deletes.

    Args:
        path: destination file.
        data: its full content.
    """
    temp_path = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(temp_path, "wb") as handle:
            handle.write(data)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


def write_label_png_atomic(path: Path, label: np.ndarray) -> None:
    """Write an 8-bit single-channel label PNG atomically.

    Args:
        path: destination, ending in ``.png``.
        label: uint8 array H×W.
    """
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(label, dtype=np.uint8))
    if not ok:
        raise DatasetError(f"PNG encoding failed for {path}")
    write_bytes_atomic(path, encoded.tobytes())


def process_is_running(pid: int) -> bool:
    """Whether a process with this id exists (on this machine).

    Args:
        pid: process id.

    Returns:
        False only when the process is known to be gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete temporary files left by an interrupted :func:`write_bytes_atomic` under ``folder``.

    Files of a process that is still running (a concurrent writer) are left alone.

    Args:
        folder: searched recursively.

    Returns:
        The number of files removed.
    """
    removed = 0
    for temp_path in folder.rglob(f".*{TEMP_SUFFIX}"):
        pid = temp_path.name[: -len(TEMP_SUFFIX)].rsplit(".", 1)[-1]
        if pid.isdigit() and process_is_running(int(pid)):
            continue
        temp_path.unlink(missing_ok=True)
        removed += 1
    return removed
