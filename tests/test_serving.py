"""The BentoML service, started for real with ``bentoml serve`` and called over HTTP.

One server (a tiny random checkpoint, small limits so that the limit cases stay small) serves
every HTTP test of this module; unit tests of the settings, the decoder and the batcher run
in-process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import (
    bentoml_command,
    free_port,
    log_tail,
    running_server,
    server_environment,
    stop,
    write_tiny_checkpoint,
)

from models.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from serving.engine import AdaptiveBatcher
from serving.inputs import ImageLimits, RequestError, decode_image
from serving.outputs import colorize
from serving.settings import SettingsError, resolve_settings

MAX_PIXELS = 250_000
MAX_UPLOAD_BYTES = 200_000
REQUEST_TIMEOUT_S = 120.0


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------


def _scene(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=fmt, **options)
    return stream.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB or zero-size images)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header)
    if rows:
        chunks += _png_chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IEND", b"")


def _png_rgb16(image: np.ndarray) -> bytes:
    samples = image.astype(">u2") * 257
    rows = b"".join(b"\x00" + samples[row].tobytes() for row in range(image.shape[0]))
    return _raw_png(image.shape[1], image.shape[0], 16, 2, rows)


def _palette_png(image: np.ndarray) -> bytes:
    return _encode(Image.fromarray(image).quantize(colors=16), "PNG")


# Every accepted kind of input: (bytes, expected RGB after decoding or None if lossy).
def _input_kinds() -> dict[str, tuple[bytes, np.ndarray | None]]:
    rgb = _scene()
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    gray16 = (gray.astype(np.uint16) * 257).astype(np.uint16)
    palette = Image.fromarray(rgb).quantize(colors=16)
    return {
        "png_rgb": (_encode(Image.fromarray(rgb), "PNG"), rgb),
        "jpeg": (_encode(Image.fromarray(rgb), "JPEG", quality=90), None),
        "webp": (_encode(Image.fromarray(rgb), "WEBP", lossless=True), rgb),
        "png_gray": (_encode(Image.fromarray(gray), "PNG"), np.repeat(gray[:, :, None], 3, 2)),
        "png_rgba": (_encode(Image.fromarray(rgba), "PNG"), rgb),
        "png_palette": (_encode(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        "png_gray16": (_encode(Image.fromarray(gray16), "PNG"), np.repeat(gray[:, :, None], 3, 2)),
        "png_rgb16": (_png_rgb16(rgb), rgb),
    }


INPUT_KINDS = _input_kinds()


# ------------------------------------------------------------------------------------------
# The server
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("bentoml-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_environment(
        home, CLUDA_MODEL=str(checkpoint), CLUDA_DEVICE="cpu", CLUDA_MAX_PIXELS=str(MAX_PIXELS),
        CLUDA_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
    )  # fmt: skip
    with running_server(bentoml_command(port), env, f"{url}/healthz", home / "server.log"):
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    with httpx.Client(base_url=server, timeout=REQUEST_TIMEOUT_S, limits=limits) as session:
        yield session


def _segment(
    client: httpx.Client, data: bytes, filename: str = "image.png", **options: object
) -> httpx.Response:
    return client.post("/segment", files={"image": (filename, data)},
                       data={key: str(value) for key, value in options.items()})  # fmt: skip


def _mask(answer: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png_base64"]))))


def _assert_good_answer(response: httpx.Response, height: int = 48, width: int = 64) -> dict:
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["width"], answer["height"]) == (width, height)
    mask = _mask(answer)
    assert mask.shape == (height, width) and mask.dtype == np.uint8 and mask.max() < 19
    shares = {entry["id"]: entry for entry in answer["classes"]}
    assert set(shares) == set(np.unique(mask).tolist())
    for class_id, entry in shares.items():
        assert entry["name"] == CITYSCAPES_CLASSES[class_id]
        assert entry["pixels"] == int((mask == class_id).sum())
    assert sum(entry["share"] for entry in answer["classes"]) == pytest.approx(1.0, abs=1e-4)
    assert 1 / 19 - 1e-6 <= answer["mean_confidence"] <= 1.0
    assert answer["model"]["name"] == "tiny-test"
    assert len(answer["model"]["sha256"]) == 16 and answer["model"]["device"] == "cpu"
    assert {"decode_s", "queue_s", "inference_s", "encode_s", "total_s"} <= set(answer["timings"])
    return answer


# ------------------------------------------------------------------------------------------
# Routes and accepted inputs
# ------------------------------------------------------------------------------------------


def test_healthz_and_classes(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    response = client.get("/classes")
    assert response.status_code == 200
    classes = response.json()["classes"]
    assert [entry["name"] for entry in classes] == list(CITYSCAPES_CLASSES)
    assert [tuple(entry["color"]) for entry in classes] == list(CITYSCAPES_PALETTE)
    assert [entry["id"] for entry in classes] == list(range(19))


def test_ui_is_mounted(client: httpx.Client) -> None:
    response = client.get("/ui/")
    assert response.status_code == 200 and "gradio" in response.text.lower()


@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
def test_every_input_kind_is_segmented(client: httpx.Client, kind: str) -> None:
    data, _ = INPUT_KINDS[kind]
    _assert_good_answer(_segment(client, data, filename=f"{kind}.img"))


@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
def test_decoder_converts_every_kind_to_rgb(kind: str) -> None:
    data, expected = INPUT_KINDS[kind]
    decoded = decode_image(data, ImageLimits(max_pixels=MAX_PIXELS, max_bytes=MAX_UPLOAD_BYTES))
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    if expected is not None:
        np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("mode", ["hrda", "whole"])
def test_mask_and_overlay_outputs_match_the_json_mask(client: httpx.Client, mode: str) -> None:
    rgb = _scene(40, 72, seed=3)
    data = _encode(Image.fromarray(rgb), "PNG")
    answer = _assert_good_answer(_segment(client, data, mode=mode), height=40, width=72)
    assert answer["mode"] == mode
    mask_response = _segment(client, data, mode=mode, output="mask")
    assert mask_response.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(mask_response.content))
    assert mask.mode == "L"
    np.testing.assert_array_equal(np.asarray(mask), _mask(answer))
    for opacity, expected in ((0.0, rgb), (1.0, colorize(_mask(answer)))):
        response = _segment(client, data, mode=mode, output="overlay", opacity=opacity)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        picture = Image.open(io.BytesIO(response.content))
        assert picture.mode == "RGB" and picture.size == (72, 40)
        np.testing.assert_array_equal(np.asarray(picture), expected)


def test_concurrent_requests_are_batched_without_errors(client: httpx.Client) -> None:
    # Two image sizes: a batch only stacks images of one size, and each answer must keep its own.
    sizes = [(48, 64), (40, 72)]
    payloads = [
        (sizes[i % 2], _encode(Image.fromarray(_scene(*sizes[i % 2], seed=i)), "PNG"))
        for i in range(32)
    ]
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda item: (item[0], _segment(client, item[1], mode="whole")),
                                  payloads))  # fmt: skip
    batch_sizes = []
    for (height, width), response in responses:
        answer = _assert_good_answer(response, height=height, width=width)
        batch_sizes.append(answer["batch_size"])
    assert max(batch_sizes) > 1, f"no request shared a forward pass: {batch_sizes}"


# ------------------------------------------------------------------------------------------
# Bad inputs: a JSON error with the right status and message, and the server keeps serving
# ------------------------------------------------------------------------------------------

_GOOD = _encode(Image.fromarray(_scene()), "PNG")
_JPEG = _encode(Image.fromarray(_scene(seed=1)), "JPEG", quality=90)


def _flat_png(width: int, height: int) -> bytes:
    return _encode(Image.new("RGB", (width, height), (90, 90, 90)), "PNG")


BAD_UPLOADS = {
    "text file": (b"hello, this is not a picture\n", 415, "not an image"),
    "gif": (_encode(Image.fromarray(_scene()), "GIF"), 415, "unsupported image format GIF"),
    "truncated png": (_GOOD[: len(_GOOD) // 2], 400, "truncated or corrupt"),
    "truncated jpeg": (_JPEG[: len(_JPEG) // 2], 400, "truncated or corrupt"),
    "corrupt png header": (_GOOD[:8] + b"\x00" * 64, 400, "corrupt"),
    "empty file": (b"", 400, "empty"),
    "zero-size png": (_raw_png(0, 10, 8, 2), 400, "zero size"),
    "too many pixels": (_flat_png(600, 600), 413, "too large"),
    "too many pixels jpeg": (_encode(Image.new("RGB", (600, 600)), "JPEG"), 413, "too large"),
    "decompression bomb": (_raw_png(100_000, 100_000, 8, 2), 413, "too large"),
    "upload above the limit": (_GOOD[:8] + os.urandom(MAX_UPLOAD_BYTES + 1000), 413, "limit"),
    "body far above the limit": (os.urandom(3 * MAX_UPLOAD_BYTES), 413, "request body"),
}

BAD_OPTIONS = {
    "unknown mode": ({"mode": "fast"}, "unknown mode 'fast'"),
    "unknown output": ({"output": "svg"}, "unknown output 'svg'"),
    "opacity above 1": ({"opacity": 1.5}, "opacity must be a number between 0 and 1"),
    "opacity not a number": ({"opacity": "opaque"}, "opacity"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_gets_a_json_error(client: httpx.Client, case: str) -> None:
    data, status, message = BAD_UPLOADS[case]
    response = _segment(client, data)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert message in response.json()["error"]
    _assert_good_answer(_segment(client, _GOOD))


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option_gets_a_json_error(client: httpx.Client, case: str) -> None:
    options, message = BAD_OPTIONS[case]
    response = _segment(client, _GOOD, **options)
    assert response.status_code == 400, response.text
    assert message in response.text
    _assert_good_answer(_segment(client, _GOOD))


def test_missing_image_field_gets_a_json_error(client: httpx.Client) -> None:
    response = client.post("/segment", files={"mode": (None, "whole")})
    assert response.status_code == 400
    error = response.json()
    assert error["detail"][0]["loc"] == ["image"] and error["detail"][0]["type"] == "missing"
    _assert_good_answer(_segment(client, _GOOD))


def test_chunked_body_above_the_limit_is_cut_off(client: httpx.Client) -> None:
    # No Content-Length: the middleware counts the bytes as they arrive.
    boundary = "cludaboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + \
        os.urandom(3 * MAX_UPLOAD_BYTES) + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 32_768):
            yield body[start : start + 32_768]

    response = client.post("/segment", content=chunks(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "request body" in response.json()["error"]
    _assert_good_answer(_segment(client, _GOOD))


def test_a_path_sent_as_json_is_not_read_from_the_server_disk(client: httpx.Client) -> None:
    # BentoML refuses a JSON string for a file field: a client cannot make it open a local path.
    response = client.post("/segment", json={"image": str(Path(__file__).resolve())})
    assert response.status_code == 400, response.text
    assert response.json()["detail"][0]["loc"] == ["image"]


def test_a_text_image_field_is_refused_not_downloaded(client: httpx.Client) -> None:
    # BentoML would fetch a text value of a file field as a URL (500 when that fails).
    response = client.post("/segment", files={"image": (None, "http://127.0.0.1:9/x.png")})
    assert response.status_code == 400, response.text
    assert "'image' must be an uploaded file" in response.json()["error"]
    response = client.post("/segment", data={"image": "http://127.0.0.1:9/x.png"})
    assert response.status_code == 415, response.text
    assert "URL-encoded form" in response.json()["error"]
    _assert_good_answer(_segment(client, _GOOD))


def test_pickled_bodies_are_refused_unread(client: httpx.Client) -> None:
    # A pickle would run code when loaded: the public server never accepts BentoML's pickle type.
    response = client.post("/segment", content=b"\x80\x05N.",
                           headers={"content-type": "application/vnd.bentoml+pickle"})
    assert response.status_code == 415
    _assert_good_answer(_segment(client, _GOOD))


# ------------------------------------------------------------------------------------------
# Start-up
# ------------------------------------------------------------------------------------------


def test_server_refuses_to_start_without_a_model(tmp_path: Path) -> None:
    # An empty working directory: no CLUDA_MODEL and no work_dirs/toy_*/latest.safetensors.
    env = server_environment(tmp_path / "home")
    log = tmp_path / "server.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(bentoml_command(free_port()), cwd=tmp_path, env=env,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit without a model:\n{log_tail(log)}")
    finally:
        stop(process)
    text = log.read_text(errors="replace")
    assert process.returncode != 0
    assert "python -m training.run toy_hrda" in text and "CLUDA_MODEL" in text, log_tail(log)


def test_settings_precedence_and_toy_checkpoint_discovery(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="python -m training.run toy_hrda"):
        resolve_settings({}, environ={}, root=tmp_path)
    older = tmp_path / "work_dirs" / "toy_daformer" / "latest.safetensors"
    newer = tmp_path / "work_dirs" / "toy_hrda" / "latest.safetensors"
    for index, path in enumerate((older, newer)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + index, 1_000_000 + index))
    assert resolve_settings({}, environ={}, root=tmp_path).model == newer
    from_env = resolve_settings({}, environ={"CLUDA_MODEL": str(older), "CLUDA_MAX_BATCH": "3"})
    assert from_env.model == older and from_env.max_batch == 3 and from_env.device == "auto"
    from_args = resolve_settings({"model": str(newer), "device": "cpu"},
                                 environ={"CLUDA_MODEL": str(older), "CLUDA_DEVICE": "cuda"})
    assert from_args.model == newer and from_args.device == "cpu"
    with pytest.raises(SettingsError, match="does not exist"):
        resolve_settings({}, environ={"CLUDA_MODEL": str(tmp_path / "missing.onnx")})
    with pytest.raises(SettingsError, match="positive integer"):
        resolve_settings({}, environ={"CLUDA_MODEL": str(older), "CLUDA_MAX_PIXELS": "lots"})
    with pytest.raises(SettingsError, match="unknown BentoML argument"):
        resolve_settings({"modle": "x"}, environ={})


# ------------------------------------------------------------------------------------------
# In-process units
# ------------------------------------------------------------------------------------------


def test_sixteen_bit_samples_keep_their_high_byte() -> None:
    gray16 = np.array([[0x0000, 0x00FF, 0xAB01, 0xFFFF]], dtype=np.uint16)
    data = _encode(Image.fromarray(gray16), "PNG")
    decoded = decode_image(data, ImageLimits(max_pixels=100, max_bytes=10_000))
    np.testing.assert_array_equal(decoded[0, :, 0], [0x00, 0x00, 0xAB, 0xFF])


def test_decoder_error_statuses() -> None:
    limits = ImageLimits(max_pixels=MAX_PIXELS, max_bytes=MAX_UPLOAD_BYTES)
    for case, (data, status, message) in BAD_UPLOADS.items():
        if case == "body far above the limit":
            continue  # refused by the HTTP middleware before decoding; tested over HTTP
        with pytest.raises(RequestError, match=message) as caught:
            decode_image(data, limits)
        assert caught.value.status == status, case


def test_batcher_groups_by_key_caps_batches_and_survives_errors() -> None:
    calls: list[tuple[str, list[int]]] = []
    release = threading.Event()

    def run(key: str, items: list[int]) -> list[int]:
        release.wait(timeout=10)
        calls.append((key, list(items)))
        if key == "bad":
            raise RuntimeError("runtime failure")
        return [item * 10 for item in items]

    async def scenario() -> list[object]:
        batcher: AdaptiveBatcher[str, int, int] = AdaptiveBatcher(run, max_batch=3)
        # The first call occupies the worker; the next ones queue and get batched by key.
        first = asyncio.ensure_future(batcher.submit("a", 0))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit(key, item)) for key, item in
                  [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("bad", 5), ("a", 6)]]  # fmt: skip
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        after = await batcher.submit("a", 7)
        batcher.close()
        return [*results, after]

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert time.monotonic() - started < 10
    assert calls == [("a", [0]), ("a", [1, 3, 4]), ("b", [2]), ("bad", [5]), ("a", [6]), ("a", [7])]
    assert results[0] == (0, 1, pytest.approx(0, abs=0.05))
    assert [result[:2] for result in results[1:5]] == [(10, 3), (20, 1), (30, 3), (40, 3)]
    assert isinstance(results[5], RuntimeError)
    assert results[6][:2] == (60, 1) and results[7][:2] == (70, 1)


def test_batched_prediction_matches_single_prediction(checkpoint: Path) -> None:
    from models.predictor import Predictor
    from serving.engine import predict_batch

    predictor = Predictor.from_checkpoint(checkpoint)
    images = [_scene(seed=seed) for seed in range(3)]
    batched = predict_batch(predictor, images, mode="hrda")
    for image, prediction in zip(images, batched, strict=True):
        single = predictor.predict(image, mode="hrda")
        np.testing.assert_allclose(prediction.confidence, single.confidence, atol=1e-5)
        assert (prediction.label == single.label).mean() > 0.99


@pytest.mark.slow
def test_engine_serves_an_onnx_export(checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from export.exporter import export_checkpoint
    from serving.engine import SegmentationEngine
    from serving.settings import resolve_settings

    folder = export_checkpoint(checkpoint, "onnx", tmp_path / "onnx", mode="hrda")
    settings = resolve_settings({"model": str(folder / "model.onnx"), "device": "cpu"}, environ={})
    engine = SegmentationEngine.from_settings(settings)
    assert engine.model_info["runtime"] == "onnx" and engine.model_info["name"] == "tiny-test"
    image = _scene()

    async def segment_concurrently() -> list:
        return await asyncio.gather(*[engine.segment(image, "hrda") for _ in range(4)])

    results = asyncio.run(segment_concurrently())
    from models.predictor import Predictor

    reference = Predictor.from_checkpoint(checkpoint).predict(image, mode="hrda")
    for result in results:
        np.testing.assert_allclose(result.prediction.confidence, reference.confidence, atol=1e-4)
    assert max(result.batch_size for result in results) > 1
    # The export holds the sliding-window network only: "whole" is refused, not substituted.
    with pytest.raises(RequestError, match="exported for mode hrda only"):
        asyncio.run(engine.segment(image, "whole"))
    engine.close()


# ------------------------------------------------------------------------------------------
# Multipart header scanning (the file-field guard)
# ------------------------------------------------------------------------------------------


def _multipart(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b""
    for headers, content in parts:
        body += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n"
    return body + b"--" + boundary + b"--\r\nepilogue"


_PARTS = [
    (b'Content-Disposition: form-data; name="image"; filename="a.png"\r\n'
     b"Content-Type: image/png", os.urandom(3000)),
    (b'content-disposition: form-data; name="mode"', b"whole"),
    (b'Content-Type: text/plain\r\nCONTENT-DISPOSITION: form-data; name="image"',
     b"http://example.com/x.png"),
    (b"Content-Disposition: form-data; name=opacity", b"0.5"),
    (b'Content-Disposition: form-data; name="image"; filename=""', b""),
]


def _starlette_kinds(boundary: bytes, body: bytes) -> list[tuple[str, bool]]:
    """(name, is an upload) per field, as Starlette's own form parser reads the body."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartParser

    async def stream():
        yield body

    headers = Headers({"content-type": f"multipart/form-data; boundary={boundary.decode()}"})
    form = asyncio.run(MultiPartParser(headers, stream()).parse())
    return [(name, isinstance(value, UploadFile)) for name, value in form.multi_items()]


@pytest.mark.parametrize("seed", range(4))
def test_header_scanner_agrees_with_starlette_on_any_chunking(seed: int) -> None:
    from serving.middleware import MultipartHeaderScanner

    boundary = b"----cluda-Boundary.7" + str(seed).encode()
    body = _multipart(boundary, _PARTS)
    rng = np.random.default_rng(seed)
    scanner = MultipartHeaderScanner(boundary)
    found, start = [], 0
    while start < len(body):
        size = int(rng.integers(1, 40 if seed % 2 else 700))
        found += scanner.feed(body[start : start + size])
        start += size
    assert found == MultipartHeaderScanner(boundary).feed(body)
    assert len(found) == len(_PARTS)
    ours = [(p[b"name"].decode(), b"filename" in p) for p in found if b"name" in p]
    assert ours == _starlette_kinds(boundary, body)
    assert ours[2] == ("image", False) and ours[4] == ("image", True)


def test_header_scanner_refuses_endless_part_headers() -> None:
    from serving.middleware import MAX_PART_HEADER_BYTES, MultipartHeaderScanner

    scanner = MultipartHeaderScanner(b"b")
    scanner.feed(b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n")
    with pytest.raises(ValueError, match="longer than"):
        for _ in range(MAX_PART_HEADER_BYTES // 1000 + 2):
            scanner.feed(b"X-Padding: " + b"x" * 1000 + b"\r\n")
