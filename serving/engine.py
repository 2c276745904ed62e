"""The serving engine: one predictor behind an adaptive batcher, shared by ``/segment`` and the UI.

Adaptive batching. Inference runs on one worker thread (the network already uses every core,
or the GPU, for one forward pass; two passes at once would only compete). While a pass runs,
new requests wait; when it ends, the waiting requests that share a mode and an image size go
through the network together as one batch (up to ``max_batch``), and the others follow in
arrival order. An idle server therefore answers a lone request at once, with no batching
delay, and a loaded one amortises each forward pass over several images. Only images of the
same size are stacked: the predictor rescales each image to the model's evaluation box and
slides fixed windows over it, so images of one size give identical tensor shapes, while mixing
sizes would need padding that changes the sliding-window result. The batched pass is
:func:`models.predictor.infer_logits`, the one inference path; a request alone in its batch
goes through :meth:`models.predictor.Predictor.predict` itself.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from models.classes import NUM_CLASSES

from .inputs import MODES, ImageLimits, RequestError, apply_pil_limits
from .settings import ServingSettings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from models.predictor import Prediction, Predictor

Key = TypeVar("Key", bound="Hashable")
Item = TypeVar("Item")
Result = TypeVar("Result")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when PyTorch sees a GPU, else ``cpu``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_predictor(path: Path, device: str) -> Predictor:
    """Loads the model to serve.

    Args:
        path: our ``.safetensors`` checkpoint (run by PyTorch), or an export of
            ``python -m export`` (its folder, or its ``.onnx``/``.pt2``/``.engine`` file), read
            by :func:`export.runtime.load_runtime`.
        device: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        SettingsError: the model does not predict the 19 Cityscapes classes, or its runtime is
            not installed here.
    """
    from models.predictor import Predictor

    if path.suffix == ".safetensors":
        predictor = Predictor.from_checkpoint(path, device=device)
    else:
        from export.artifact import BackendUnavailable
        from export.runtime import load_runtime

        try:
            predictor = load_runtime(path, device=device)
        except BackendUnavailable as error:
            raise SettingsError(f"cannot serve {path} on {device}: {error}") from error
    if predictor.num_classes != NUM_CLASSES:
        raise SettingsError(
            f"{path} predicts {predictor.num_classes} classes; the service labels the "
            f"{NUM_CLASSES} Cityscapes classes"
        )
    return predictor


def predict_batch(predictor: Predictor, images: list[np.ndarray], mode: str) -> list[Prediction]:
    """Segments same-sized images in one pass of :func:`models.predictor.infer_logits`.

    Args:
        predictor: the served predictor.
        images: uint8 ``H×W×3`` arrays, all of one size.
        mode: "hrda" or "whole".

    Returns:
        One :class:`models.predictor.Prediction` per image; ``timings`` are the batch's.
    """
    import torch

    from models.predictor import Prediction, infer_logits

    if len(images) == 1:
        return [predictor.predict(images[0], mode=mode)]
    if len({image.shape for image in images}) != 1:
        raise ValueError(f"a batch needs images of one size, got {[i.shape for i in images]}")
    start = time.perf_counter()
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(images)).to(predictor.device)
        batch = batch.permute(0, 3, 1, 2).float()
        prepared = time.perf_counter()
        logits = infer_logits(predictor.forward_fn, batch, predictor.model_config, mode,
                              resize=True, window_batch=predictor.window_batch)  # fmt: skip
        confidence, label = logits.softmax(dim=1).max(dim=1)
        inferred = time.perf_counter()
        labels = label.to(torch.uint8).cpu().numpy()
        confidences = confidence.float().cpu().numpy()
    timings = {
        "preprocess_s": prepared - start,
        "inference_s": inferred - prepared,
        "postprocess_s": time.perf_counter() - inferred,
    }
    return [Prediction(label=labels[i], confidence=confidences[i], timings=dict(timings))
            for i in range(len(images))]  # fmt: skip


@dataclass
class _Waiting(Generic[Key, Item, Result]):
    key: Key
    item: Item
    future: asyncio.Future[tuple[Result, int]]
    queued_at: float = field(default_factory=time.perf_counter)
    waited: float = 0.0


class AdaptiveBatcher(Generic[Key, Item, Result]):
    """Runs ``run(key, items)`` on one worker thread, batching the calls that wait meanwhile.

    Args:
        run: computes one result per item, for items that share ``key``.
        max_batch: most items per call.
    """

    def __init__(self, run: Callable[[Key, list[Item]], list[Result]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        self._waiting: list[_Waiting[Key, Item, Result]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluda-inference")

    async def submit(self, key: Key, item: Item) -> tuple[Result, int, float]:
        """Queues one item and waits for its result.

        Returns:
            (result, size of the batch it ran in, seconds it waited for the worker).
        """
        loop = asyncio.get_running_loop()
        entry: _Waiting[Key, Item, Result] = _Waiting(key, item, loop.create_future())
        self._waiting.append(entry)
        if self._drain_task is None or self._drain_task.done():
            # The reference keeps the task alive: the loop holds tasks only weakly.
            self._drain_task = loop.create_task(self._drain())
        result, batch_size = await entry.future
        return result, batch_size, entry.waited

    def _take_batch(self) -> list[_Waiting[Key, Item, Result]]:
        """The oldest waiting entry and the next ones with its key, up to ``max_batch``."""
        key = self._waiting[0].key
        batch = [entry for entry in self._waiting if entry.key == key][: self.max_batch]
        taken = {id(entry) for entry in batch}
        self._waiting = [entry for entry in self._waiting if id(entry) not in taken]
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch = [entry for entry in self._take_batch() if not entry.future.cancelled()]
            if not batch:
                continue
            started = time.perf_counter()
            for entry in batch:
                entry.waited = started - entry.queued_at
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run, batch[0].key, [entry.item for entry in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except Exception as error:  # the callers decide; the batcher keeps serving
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(error)
                continue
            for entry, result in zip(batch, results, strict=True):
                if not entry.future.done():
                    entry.future.set_result((result, len(batch)))

    def close(self) -> None:
        """Stops the worker thread once the running call ends."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Segmentation:
    """One request's segmentation.

    Attributes:
        prediction: label and confidence maps (``timings`` from the predictor).
        mode: the mode used.
        batch_size: how many images shared the forward pass.
        queue_s: seconds spent waiting for the inference worker.
    """

    prediction: Prediction
    mode: str
    batch_size: int
    queue_s: float


class SegmentationEngine:
    """The predictor, its input limits and its batcher: everything a request needs.

    Every served model takes batches: a PyTorch segmentor, and the exported runtimes, whose
    window networks have a dynamic batch dimension (TensorRT splits batches beyond its profile).

    Args:
        predictor: the model to serve.
        limits: byte and pixel bounds for uploads.
        max_batch: most images per forward pass.
    """

    def __init__(self, predictor: Predictor, limits: ImageLimits, max_batch: int = 1) -> None:
        self.predictor = predictor
        self.limits = limits
        apply_pil_limits(limits)
        self.max_batch = max_batch
        # An export reproduces only the modes it was exported for (ExportedPredictor.modes).
        self.modes: tuple[str, ...] = tuple(getattr(predictor, "modes", MODES))
        self._batcher: AdaptiveBatcher[tuple[str, tuple[int, ...]], np.ndarray, Prediction] = (
            AdaptiveBatcher(self._run, self.max_batch)
        )

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> SegmentationEngine:
        """Loads the configured model (see :mod:`serving.settings`)."""
        device = resolve_device(settings.device)
        predictor = load_predictor(settings.model, device)
        predictor.metadata.setdefault("file", settings.model.name)
        return cls(
            predictor,
            ImageLimits(max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes),
            max_batch=settings.max_batch,
        )

    @property
    def model_info(self) -> dict[str, Any]:
        """Name, version and hash of the served model, its runtime, and where it runs."""
        metadata = self.predictor.metadata
        return {
            "name": str(metadata.get("name", "")),
            "version": str(metadata.get("version", "")),
            "sha256": str(metadata.get("sha256", "")),
            "file": str(metadata.get("file", "")),
            "runtime": str(metadata.get("runtime", "pytorch")),
            "precision": str(metadata.get("precision", "fp32")),
            "device": str(self.predictor.device),
        }

    def _run(self, key: tuple[str, tuple[int, ...]], images: list[np.ndarray]) -> list[Prediction]:
        return predict_batch(self.predictor, images, mode=key[0])

    async def segment(self, image: np.ndarray, mode: str) -> Segmentation:
        """Segments one uint8 ``H×W×3`` RGB image, batched with concurrent same-sized ones.

        Args:
            image: decoded picture (see :func:`serving.inputs.decode_image`).
            mode: "hrda" or "whole" (checked by :func:`serving.inputs.parse_options`).

        Raises:
            RequestError: (400) the served export was not exported for ``mode``.
        """
        if mode not in self.modes:
            raise RequestError(
                f"mode {mode!r} is not available: this model was exported for mode "
                f"{' and '.join(self.modes)} only"
            )
        prediction, batch_size, queue_s = await self._batcher.submit((mode, image.shape), image)
        return Segmentation(prediction=prediction, mode=mode, batch_size=batch_size,
                            queue_s=queue_s)  # fmt: skip

    def close(self) -> None:
        """Releases the inference thread."""
        self._batcher.close()
