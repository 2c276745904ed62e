"""Deployment formats of a trained segmentor, and runtimes that feed them back into inference.

``python -m export CHECKPOINT --format onnx|aoti|tensorrt --out DIR`` writes the fixed-size *window*
network (``segmentor.forward`` at one input size, dynamic batch) into ``DIR``:

- ``onnx``: ``model.onnx`` (+ ``model.onnx.data``), opset ≥ 17, metadata in ``metadata_props``.
- ``aoti``: ``model.pt2``, an AOTInductor package that runs without the model's Python code.
- ``tensorrt``: ``model.engine`` built from ``model.onnx`` (kept beside it for rebuilds), fp16 with
  LayerNorm and softmax in fp32, or INT8 calibrated on target-domain images.

Every folder also holds ``export.json`` (the manifest: class names, palette, normalisation, window,
stride, mode, the model config and the source checkpoint's hash). The outer sliding over an image of
any size stays in :func:`models.inference.slide_inference`; :func:`export.runtime.load_runtime`
returns a :class:`models.predictor.Predictor` whose ``forward_fn`` is the exported runtime.

Exported sizes: ``hrda`` mode exports one ``inference_window``² window (HRDA: 1024², LR context +
batched detail crops + fusion), which the outer slide always feeds exactly, so results match
PyTorch. ``whole`` mode exports the model's ``eval_scale`` box in landscape (short × long, e.g.
1024×2048); :class:`export.runtime.FixedSizeForward` letterboxes other shapes (see there).
"""
