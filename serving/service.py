"""The BentoML service: ``bentoml serve serving.service:Segmenter``.

Routes:

- ``POST /segment`` — multipart upload ``image`` (PNG, JPEG or WebP) and the options ``mode``
  (``hrda`` | ``whole``), ``output`` (``json`` | ``mask`` | ``overlay``) and ``opacity`` (0..1).
  ``json`` answers the image size, the classes present with their pixel share, the mean
  confidence, the trainId mask as a base64 PNG, the model's name, version and hash, and timings;
  ``mask`` answers a PNG of trainIds; ``overlay`` a PNG of the picture blended with the
  Cityscapes palette. Bad input gets ``{"error": message}`` with a 4xx status.
- ``GET /classes`` — class names and palette. ``GET /healthz`` — BentoML's liveness route (200
  once the model is loaded).
- ``/ui`` — the Gradio demo (:mod:`app.ui`), calling the same engine.

The demo is mounted with Gradio's own ``gr.mount_gradio_app`` into a small FastAPI app that
BentoML mounts at ``/`` (BentoML runs its lifespan, hence Gradio's queue). BentoML 1.4's
``bentoml.gradio.mount_gradio_app`` predates Gradio 6, which sets the page theme at mount time:
pages mounted that way fail to render (HTTP 500).

The model and the limits come from environment variables or ``--arg`` (:mod:`serving.settings`).
They are checked in BentoML's main process before any worker starts, so a server with no model
exits at once with a message saying how to get one, instead of restarting workers forever.

This module is the composition root: it mounts the UI of :mod:`app` on the service, while
:mod:`app` itself depends only on the serving helpers, never on this module.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import bentoml
import gradio as gr
import numpy as np
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from app.ui import build_demo

from .engine import Segmentation, SegmentationEngine
from .inputs import RequestError, SegmentOptions, load_upload, parse_options
from .middleware import FORM_OVERHEAD_BYTES, BodySizeLimit, FileFieldGuard
from .outputs import class_shares, class_table, encode_png, overlay, png_base64
from .settings import ServingSettings, resolve_settings


@functools.cache
def serving_settings() -> ServingSettings:
    """The settings of this process: ``--arg`` values, then environment variables."""
    return resolve_settings(vars(bentoml.use_arguments()))


def _current_engine() -> SegmentationEngine:
    return bentoml.get_current_service().engine


def build_routes() -> FastAPI:
    """``GET /classes`` and the Gradio demo at ``/ui``, as one ASGI app for BentoML to mount."""
    routes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @routes.get("/classes")
    async def classes() -> dict[str, Any]:
        """The 19 Cityscapes classes: trainId, name and palette colour (RGB)."""
        return {"classes": class_table()}

    demo = build_demo(_current_engine)
    # Concurrent sessions reach the engine together, so their images can share a batch.
    demo.queue(default_concurrency_limit=16)
    return gr.mount_gradio_app(routes, demo, path="/ui", ssr_mode=False, show_error=True)


def segmentation_json(
    image_size: tuple[int, int], result: Segmentation, model: dict[str, Any]
) -> dict[str, Any]:
    """The ``output=json`` answer of ``/segment``, without its timings.

    Args:
        image_size: (height, width) of the picture.
        result: the engine's segmentation.
        model: :attr:`serving.engine.SegmentationEngine.model_info`.
    """
    label = result.prediction.label
    return {
        "width": image_size[1],
        "height": image_size[0],
        "mode": result.mode,
        "classes": [share.as_dict() for share in class_shares(label)],
        "mean_confidence": round(float(result.prediction.confidence.mean()), 6),
        "mask_png_base64": png_base64(label),
        "model": model,
        "batch_size": result.batch_size,
    }


@bentoml.service(
    name="cluda-segmenter",
    workers=1,
    traffic={"timeout": 300, "max_concurrency": 128},
)
@bentoml.asgi_app(build_routes(), path="/")
class Segmenter:
    """Semantic segmentation of street pictures into the 19 Cityscapes classes."""

    @bentoml.on_deployment
    def check_settings() -> None:
        # Runs once in the main process: a missing model stops `bentoml serve` right here.
        serving_settings()

    def __init__(self) -> None:
        self.engine = SegmentationEngine.from_settings(serving_settings())

    @bentoml.api(route="/segment")
    async def segment(
        self, image: Path, mode: str = "hrda", output: str = "json", opacity: float = 0.5
    ) -> dict[str, Any]:
        """Segments one picture.

        Args:
            image: PNG, JPEG or WebP upload (RGB, grayscale, RGBA, palette or 16-bit).
            mode: "hrda" (sliding windows with detail crops) or "whole" (one pass).
            output: "json", "mask" (PNG of trainIds) or "overlay" (PNG of the blend).
            opacity: weight of the class colours in the overlay, 0..1.

        Returns:
            The JSON answer for ``output=json``; for ``mask`` and ``overlay`` a PNG response,
            and for bad input a JSON error with a 4xx status.
        """
        started = time.perf_counter()
        try:
            options = parse_options(mode, output, opacity)
            picture = await anyio.to_thread.run_sync(load_upload, image, self.engine.limits)
            decoded = time.perf_counter()
            result = await self.engine.segment(picture, options.mode)
        except RequestError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        segmented = time.perf_counter()
        body = await anyio.to_thread.run_sync(self._render, picture, result, options)
        if isinstance(body, bytes):
            return Response(body, media_type="image/png")
        finished = time.perf_counter()
        timings = {
            "decode_s": decoded - started,
            "queue_s": result.queue_s,
            **result.prediction.timings,
            "encode_s": finished - segmented,
            "total_s": finished - started,
        }
        body["timings"] = {name: round(seconds, 6) for name, seconds in timings.items()}
        return body

    def _render(
        self, picture: np.ndarray, result: Segmentation, options: SegmentOptions
    ) -> dict[str, Any] | bytes:
        label = result.prediction.label
        if options.output == "mask":
            return encode_png(label)
        if options.output == "overlay":
            return encode_png(overlay(picture, label, options.opacity))
        return segmentation_json(picture.shape[:2], result, self.engine.model_info)


Segmenter.add_asgi_middleware(
    BodySizeLimit,
    max_body_bytes=lambda: serving_settings().max_upload_bytes + FORM_OVERHEAD_BYTES,
)
Segmenter.add_asgi_middleware(FileFieldGuard, path="/segment", fields=("image",))
