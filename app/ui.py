"""The Gradio demo: upload a street picture, see its segmentation.

The page calls the serving engine (:class:`serving.engine.SegmentationEngine`) that ``/segment``
uses, with the same input checks and the same colours; it never runs a model of its own. Mounted
on the BentoML server (``/ui``) it shares the server's engine and batcher; ``python -m app``
builds its own engine from the same settings.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import gradio as gr
import numpy as np
import pandas as pd

from serving.engine import Segmentation, SegmentationEngine
from serving.inputs import MODES, RequestError, load_upload, parse_options
from serving.outputs import ClassShare, class_shares, class_table, confidence_image, overlay

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SHARE_COLUMNS = ("class", "share")


def example_images() -> list[Path]:
    """The bundled synthetic target-domain pictures (``app/examples/*.png``)."""
    return sorted(EXAMPLES_DIR.glob("*.png"))


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def legend_html(shares: Sequence[ClassShare]) -> str:
    """A colour swatch, the name and the pixel share of each class present."""
    items = "".join(
        f'<li style="display:inline-flex;align-items:center;margin:2px 10px 2px 0">'
        f'<span style="display:inline-block;width:14px;height:14px;margin-right:5px;'
        f'border:1px solid #0003;background:{_hex(share.color)}"></span>'
        f"{html.escape(share.name)} ({100 * share.share:.1f}%)</li>"
        for share in shares
    )
    return f'<ul class="cluda-legend" style="list-style:none;padding:0;margin:0">{items}</ul>'


def shares_frame(shares: Sequence[ClassShare]) -> pd.DataFrame:
    """Class name and pixel share in percent, for the bar chart."""
    return pd.DataFrame(
        [(share.name, round(100 * share.share, 2)) for share in shares], columns=SHARE_COLUMNS
    )


def summary_markdown(
    engine: SegmentationEngine, result: Segmentation, size: tuple[int, int]
) -> str:
    """Model, image size, mean confidence and timings in one short paragraph.

    Args:
        engine: the engine that produced ``result`` (for the model facts).
        result: the segmentation.
        size: (height, width) of the picture.
    """
    model = engine.model_info
    timings = result.prediction.timings
    return (
        f"**Model** {model['name']} (version {model['version'] or '–'}, sha256 "
        f"`{model['sha256']}`) on {model['device']} · **image** {size[1]}×{size[0]} · "
        f"**mode** {result.mode} · **mean confidence** "
        f"{float(result.prediction.confidence.mean()):.3f} · **inference** "
        f"{timings.get('inference_s', 0.0):.3f} s (batch of {result.batch_size})"
    )


def build_demo(
    get_engine: Callable[[], SegmentationEngine], examples: Sequence[Path] | None = None
) -> gr.Blocks:
    """Builds the page.

    Args:
        get_engine: returns the engine to call; looked up per request, because the BentoML
            service creates its engine only after the page is built.
        examples: example pictures (default: :func:`example_images`).

    Returns:
        The Gradio Blocks, not yet launched.
    """
    examples = example_images() if examples is None else list(examples)
    palette_colors = {str(entry["name"]): _hex(entry["color"]) for entry in class_table()}

    async def segment(image_path: str | None, mode: str, opacity: float) -> tuple[Any, ...]:
        if not image_path:
            return None, None, "", shares_frame([]), "", None
        engine = get_engine()
        try:
            options = parse_options(mode, "overlay", opacity)
            image = await anyio.to_thread.run_sync(load_upload, Path(image_path), engine.limits)
            result = await engine.segment(image, options.mode)
        except RequestError as error:
            raise gr.Error(str(error)) from None

        def render() -> tuple[Any, ...]:
            label = result.prediction.label
            shares = class_shares(label)
            return (
                overlay(image, label, options.opacity),
                confidence_image(result.prediction.confidence),
                legend_html(shares),
                shares_frame(shares),
                summary_markdown(engine, result, label.shape),
                (image, label),
            )

        return await anyio.to_thread.run_sync(render)

    async def reblend(
        kept: tuple[np.ndarray, np.ndarray] | None, opacity: float
    ) -> np.ndarray | None:
        # A new opacity only re-blends the kept image and mask; the model does not run again.
        if kept is None:
            return None
        return await anyio.to_thread.run_sync(overlay, kept[0], kept[1], opacity)

    with gr.Blocks(title="cluda segmentation", analytics_enabled=False) as demo:
        gr.Markdown(
            "# cluda: street-scene segmentation\n"
            "Upload a street picture (PNG, JPEG or WebP) or pick an example from the synthetic "
            "target domain. The model labels every pixel with one of the 19 Cityscapes classes."
        )
        kept = gr.State(None)
        with gr.Row():
            with gr.Column():
                # A file path and no conversion: the upload goes through the service's checks.
                image = gr.Image(label="Picture", type="filepath", image_mode=None,
                                 sources=["upload", "clipboard"],
                                 elem_id="input-image")  # fmt: skip
                mode = gr.Radio(
                    list(MODES), value=MODES[0], label="Mode",
                    info="hrda: sliding windows with high-resolution detail crops; "
                         "whole: one pass over the image (faster)",
                )  # fmt: skip
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity",
                                    elem_id="opacity")  # fmt: skip
                if examples:
                    gr.Examples(examples=[[str(path)] for path in examples], inputs=[image],
                                label="Examples (synthetic target domain)")  # fmt: skip
            with gr.Column():
                overlay_view = gr.Image(label="Segmentation overlay", type="numpy", format="png",
                                        interactive=False, elem_id="overlay")  # fmt: skip
                legend = gr.HTML(label="Classes present", elem_id="legend")
                confidence_view = gr.Image(
                    label="Confidence (dark blue: unsure, yellow: confident)", type="numpy",
                    format="png", interactive=False, elem_id="confidence",
                )  # fmt: skip
        with gr.Row():
            chart = gr.BarPlot(
                shares_frame([]), x="class", y="share", color="class", color_map=palette_colors,
                y_title="share of pixels (%)", sort="-y", label="Pixel share per class",
                elem_id="shares",
            )  # fmt: skip
        summary = gr.Markdown(elem_id="summary")
        gr.on(
            [image.change, mode.change], segment, inputs=[image, mode, opacity],
            outputs=[overlay_view, confidence_view, legend, chart, summary, kept],
        )  # fmt: skip
        opacity.change(reblend, inputs=[kept, opacity], outputs=[overlay_view],
                       trigger_mode="always_last")  # fmt: skip
    return demo

