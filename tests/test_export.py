"""Export: ONNX Runtime and AOTInductor against PyTorch, metadata, CLI errors, atomic output.

The exports are the expensive part (tens of seconds each on a busy CPU), so each tiny model is
exported once per module and shared by the tests that read it; those tests are marked ``slow``
(``-m "not slow"`` keeps the CLI, folder and adapter tests, a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.__main__ import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, main
from export.artifact import (
    MANIFEST_NAME,
    BackendUnavailable,
    ExportError,
    export_size,
    staged_folder,
)
from export.exporter import export_checkpoint
from export.runtime import FixedSizeForward, load_runtime
from models.checkpoint import file_sha256, save_segmentor
from models.classes import CITYSCAPES_CLASSES, IMAGENET_MEAN
from models.predictor import Predictor, infer_logits
from models.segmentor import build_segmentor

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

# (architecture, export mode, image H×W). Sizes are not multiples of the stride (64) and, in
# whole mode, rescale (keep-ratio into 256×128) to a width of 256, where the model's own padding
# reaches the exported 128×256 box too, so parity is exact there (see FixedSizeForward).
PARITY_CASES = [
    ("daformer_mit_test", "whole", (97, 203)),
    ("hrda_mit_test", "hrda", (150, 250)),
    ("cluda_hrda_mit_test", "whole", (90, 230)),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def checkpoint(workdir: Path):
    """Random-weight tiny checkpoints, built on first use."""
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            torch.manual_seed(0)
            model = build_segmentor(name)
            paths[name] = workdir / f"{name}.safetensors"
            save_segmentor(paths[name], model, model.config,
                           extra_metadata={"name": name, "iteration": 40})
        return paths[name]

    return get


@pytest.fixture(scope="module")
def exported(workdir: Path, checkpoint):
    """Export folders, made on first use: ``exported(name, fmt, mode)``."""
    folders: dict[tuple[str, str, str], Path] = {}

    def get(name: str, fmt: str, mode: str) -> Path:
        key = (name, fmt, mode)
        if key not in folders:
            folders[key] = export_checkpoint(checkpoint(name), fmt,
                                             workdir / f"{name}-{fmt}-{mode}", mode=mode)
        return folders[key]

    return get


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _assert_parity(reference: Predictor, runtime: Predictor, image: np.ndarray, mode: str,
                   forward_reference=None) -> dict[str, float]:
    """fp32 criteria: max |Δlogit| ≤ 1e-4 × logit range, ≥ 99.9 % of labels equal."""
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        expected = infer_logits(forward_reference or reference.forward_fn, tensor,
                                reference.model_config, mode)
        actual = infer_logits(runtime.forward_fn, tensor, runtime.model_config, mode)
    assert actual.shape == expected.shape == (1, reference.num_classes, *image.shape[:2])
    logit_range = float(expected.max() - expected.min())
    max_diff = float((actual - expected).abs().max())
    assert max_diff <= 1e-4 * logit_range, (max_diff, logit_range)
    agreement = float((actual.argmax(1) == expected.argmax(1)).float().mean())
    assert agreement >= 0.999
    return {"max_diff": max_diff, "range": logit_range, "agreement": agreement}


@pytest.mark.slow
@pytest.mark.parametrize("name,mode,size", PARITY_CASES)
def test_onnx_runtime_matches_pytorch(exported, checkpoint, name, mode, size) -> None:
    runtime = load_runtime(exported(name, "onnx", mode))
    reference = Predictor.from_checkpoint(checkpoint(name))
    image = _image(*size)
    _assert_parity(reference, runtime, image, mode)
    # The predictor path serving uses: labels of both agree too.
    labels = runtime.predict(image, mode).label
    expected = reference.predict(image, mode).label
    assert labels.shape == image.shape[:2]
    assert (labels == expected).mean() >= 0.999


@pytest.mark.slow
def test_onnx_graph_has_dynamic_batch(exported, checkpoint) -> None:
    folder = exported("hrda_mit_test", "onnx", "hrda")
    runtime = load_runtime(folder)
    model = Predictor.from_checkpoint(checkpoint("hrda_mit_test")).forward_fn
    for batch in (1, 3):
        windows = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            expected = model(windows * 255)
        actual = runtime.forward_fn(windows * 255)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4 * float(expected.std()))


@pytest.mark.slow
def test_whole_mode_letterboxes_other_aspect_ratios(exported, checkpoint) -> None:
    # Portrait: shrunk into the landscape box and padded. Not PyTorch's own result (that runs at
    # the image's shape), but exactly PyTorch under the same documented policy.
    name = "daformer_mit_test"
    runtime = load_runtime(exported(name, "onnx", "whole"))
    reference = Predictor.from_checkpoint(checkpoint(name))
    box = export_size(reference.model_config, "whole")
    _assert_parity(reference, runtime, _image(170, 120, seed=3), "whole",
                   forward_reference=FixedSizeForward(reference.forward_fn, box))


@pytest.mark.slow
def test_onnx_metadata(exported, checkpoint) -> None:
    name = "hrda_mit_test"
    folder = exported(name, "onnx", "hrda")
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["class_names"] == list(CITYSCAPES_CLASSES)
    assert len(props["palette"]) == 19 and props["palette"][0] == [128, 64, 128]
    assert props["normalization"]["mean"] == list(IMAGENET_MEAN)
    assert (props["window"], props["stride"], props["mode"]) == (128, 64, "hrda")
    assert props["input_size"] == [128, 128]
    assert props["model_config"]["backbone"] == "mit_test"
    assert props["checkpoint"]["sha256"] == file_sha256(checkpoint(name))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    node_types = {node.op_type for node in model.graph.node}
    assert "LayerNormalization" in node_types
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["artifact"] == "model.onnx"
    assert manifest["checkpoint"] == props["checkpoint"]

    predictor = load_runtime(folder / "model.onnx")
    reference = Predictor.from_checkpoint(checkpoint(name))
    assert predictor.metadata["sha256"] == reference.metadata["sha256"]
    assert predictor.metadata["name"] == name and predictor.metadata["version"] == "40"
    assert predictor.metadata["runtime"] == "onnx"


@pytest.mark.slow
def test_hrda_export_refuses_the_mode_it_lacks(exported) -> None:
    predictor = load_runtime(exported("hrda_mit_test", "onnx", "hrda"))
    with pytest.raises(ValueError, match="--mode whole"):
        predictor.predict(_image(64, 64), mode="whole")


@pytest.mark.slow
def test_aoti_cpu_matches_pytorch(exported, checkpoint) -> None:
    name = "daformer_mit_test"
    folder = exported(name, "aoti", "whole")
    runtime = load_runtime(folder / "model.pt2")
    assert runtime.metadata["runtime"] == "aoti"
    assert runtime.metadata["sha256"] == file_sha256(checkpoint(name))[:16]
    _assert_parity(Predictor.from_checkpoint(checkpoint(name)), runtime, _image(97, 203), "whole")


@pytest.mark.slow
def test_fp16_onnx_keeps_float32_islands_and_agrees(checkpoint, workdir) -> None:
    # The graph TensorRT 11 builds from: fp16 weights, LayerNorm/softmax/attention in fp32.
    name = "daformer_mit_test"
    folder = export_checkpoint(checkpoint(name), "onnx", workdir / "fp16", precision="fp16",
                               mode="whole")
    runtime = load_runtime(folder)
    assert runtime.metadata["precision"] == "fp16"
    reference = Predictor.from_checkpoint(checkpoint(name))
    tensor = torch.from_numpy(_image(97, 203)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        expected = infer_logits(reference.forward_fn, tensor, reference.model_config, "whole")
    actual = infer_logits(runtime.forward_fn, tensor, runtime.model_config, "whole")
    assert actual.dtype == torch.float32
    assert float((actual - expected).abs().max()) <= 1e-2 * float(expected.max() - expected.min())
    assert float((actual.argmax(1) == expected.argmax(1)).float().mean()) >= 0.99


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_aoti_cuda_matches_pytorch(checkpoint, workdir) -> None:
    name = "hrda_mit_test"
    folder = export_checkpoint(checkpoint(name), "aoti", workdir / "aoti-cuda", device="cuda")
    runtime = load_runtime(folder, device="cuda")
    reference = Predictor.from_checkpoint(checkpoint(name), device="cuda")
    _assert_parity(reference, runtime, _image(150, 250), "hrda")


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="needs onnxruntime-gpu and a CUDA GPU",
)
def test_onnx_runtime_cuda_matches_pytorch(exported, checkpoint) -> None:
    name = "hrda_mit_test"
    runtime = load_runtime(exported(name, "onnx", "hrda"), device="cuda")
    reference = Predictor.from_checkpoint(checkpoint(name), device="cuda")
    _assert_parity(reference, runtime, _image(150, 250), "hrda")


def test_tensorrt_fp16_agrees_with_pytorch(checkpoint, workdir) -> None:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    name = "hrda_mit_test"
    folder = export_checkpoint(checkpoint(name), "tensorrt", workdir / "trt",
                               engine_cache=workdir / "engine-cache")
    runtime = load_runtime(folder, device="cuda")
    reference = Predictor.from_checkpoint(checkpoint(name), device="cuda")
    image = _image(150, 250)
    labels = runtime.predict(image).label
    # Random weights give nearly tied logits, the hardest case for fp16; trained models agree
    # more (scripts/check_tensorrt.py checks ≥ 99.5 % on real checkpoints).
    assert (labels == reference.predict(image).label).mean() >= 0.95


# ----------------------------------------------------------------------------------------------
# Runtime adapter and output folder
# ----------------------------------------------------------------------------------------------


def test_fixed_size_forward_is_exact_for_pointwise_networks() -> None:
    weight = torch.randn(5, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    calls: list[tuple[int, ...]] = []

    def network(windows: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(windows.shape))
        return torch.nn.functional.conv2d(windows, weight)

    adapter = FixedSizeForward(network, (32, 64))
    landscape = torch.rand(2, 3, 20, 50) * 255
    torch.testing.assert_close(adapter(landscape), network(landscape))
    assert calls[0] == (2, 3, 32, 64)  # padded, not resized
    portrait = torch.rand(1, 3, 80, 40) * 255
    assert adapter(portrait).shape == (1, 5, 80, 40)
    assert calls[-1] == (1, 3, 32, 64)
    exact = torch.rand(1, 3, 32, 64)
    torch.testing.assert_close(adapter(exact), network(exact))


def test_staged_folder_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_folder(out) as staging:
        (staging / MANIFEST_NAME).write_text("{}")
        (staging / "model.onnx").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_folder(out) as staging:
            (staging / "model.onnx").write_text("partial")
            raise RuntimeError("killed")
    assert (out / "model.onnx").read_text() == "first"
    with staged_folder(out) as staging:
        (staging / MANIFEST_NAME).write_text("{}")
        (staging / "model.onnx").write_text("second")
    assert (out / "model.onnx").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_export_keeps_the_previous_one(checkpoint, tmp_path: Path, monkeypatch) -> None:
    import export.graph

    out = tmp_path / "deploy"
    out.mkdir()
    (out / MANIFEST_NAME).write_text('{"format": "cluda-export"}')
    (out / "model.onnx").write_bytes(b"good export")

    def traced(*args, **kwargs):
        return object()

    def broken_writer(program, path, metadata, opset=18):
        Path(path).write_bytes(b"half a graph")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export.graph, "trace_window", traced)
    monkeypatch.setattr(export.graph, "write_onnx", broken_writer)
    with pytest.raises(RuntimeError, match="crashed"):
        export_checkpoint(checkpoint("daformer_mit_test"), "onnx", out)
    assert (out / "model.onnx").read_bytes() == b"good export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy"]


# ----------------------------------------------------------------------------------------------
# Command line errors (in-process: they fail before any export work)
# ----------------------------------------------------------------------------------------------


def _run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_cli_missing_checkpoint(tmp_path: Path, capsys) -> None:
    code, err = _run_cli([str(tmp_path / "nope.safetensors"), "--format", "onnx",
                          "--out", str(tmp_path / "out")], capsys)
    assert code == EXIT_BAD_INPUT and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_cli_foreign_checkpoint(tmp_path: Path, capsys) -> None:
    released = tmp_path / "released.pth"
    torch.save({"state_dict": {"model.backbone.w": torch.zeros(1)}}, released)
    code, err = _run_cli([str(released), "--format", "onnx", "--out", str(tmp_path / "o")], capsys)
    assert code == EXIT_BAD_INPUT and "models.convert" in err


def test_cli_unknown_format(checkpoint, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(checkpoint("daformer_mit_test")), "--format", "tflite", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_cli_precision_the_format_cannot_make(checkpoint, tmp_path: Path, capsys) -> None:
    code, err = _run_cli([str(checkpoint("daformer_mit_test")), "--format", "onnx",
                          "--precision", "bf16", "--out", str(tmp_path / "o")], capsys)
    assert code == EXIT_BAD_INPUT and "aoti" in err


def test_cli_unwritable_output(checkpoint, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = _run_cli([str(checkpoint("daformer_mit_test")), "--format", "onnx",
                          "--out", str(blocker / "out")], capsys)
    assert code == EXIT_BAD_INPUT and "cannot write" in err


def test_cli_refuses_to_replace_a_foreign_folder(checkpoint, tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _run_cli([str(checkpoint("daformer_mit_test")), "--format", "onnx",
                          "--out", str(tmp_path)], capsys)
    assert code == EXIT_BAD_INPUT and "refusing" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_tensorrt_missing(checkpoint, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as if not installed
    code, err = _run_cli([str(checkpoint("daformer_mit_test")), "--format", "tensorrt",
                          "--out", str(tmp_path / "engine")], capsys)
    assert code == EXIT_UNAVAILABLE and "TensorRT is not installed" in err
    assert not (tmp_path / "engine").exists()


def test_load_runtime_runs_checkpoints_with_pytorch(checkpoint) -> None:
    predictor = load_runtime(checkpoint("daformer_mit_test"))
    assert type(predictor) is Predictor
    assert set(predictor.metadata) >= {"name", "version", "sha256"}


def test_load_runtime_rejects_unknown_files(tmp_path: Path) -> None:
    weights = tmp_path / "model.tflite"
    weights.write_bytes(b"\0")
    with pytest.raises(ExportError, match="unknown model file type"):
        load_runtime(weights)
    with pytest.raises(ExportError, match="does not exist"):
        load_runtime(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="not an export folder"):
        load_runtime(tmp_path)


def test_tensorrt_runner_needs_tensorrt(monkeypatch) -> None:
    from export.runtime import TensorRTForward

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        TensorRTForward(b"engine", device="cuda")


# ----------------------------------------------------------------------------------------------
# Export sizes and reduced precision
# ----------------------------------------------------------------------------------------------


def test_export_sizes_of_the_reference_models() -> None:
    from export.artifact import served_modes, typical_window_count
    from models.config import get_model_config

    hrda = get_model_config("cluda_hrda_mit_b5")
    assert export_size(hrda, "hrda") == (1024, 1024)
    assert export_size(hrda, "whole") == (1024, 2048)
    assert typical_window_count(hrda, "hrda") == 3  # x = 0, 512, 1024 on a 1024×2048 frame
    assert served_modes(hrda, "whole") == ("whole",)
    daformer = get_model_config("daformer_mit_b5")
    assert export_size(daformer, "hrda") == export_size(daformer, "whole") == (512, 1024)
    assert served_modes(daformer, "hrda") == ("hrda", "whole")


def test_half_precision_graphs_keep_layer_norm_and_attention_in_float32() -> None:
    from export.graph import Float32Islands, WindowNetwork

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.norm(x.flatten(2).transpose(1, 2))
            attended = torch.nn.functional.scaled_dot_product_attention(tokens, tokens, tokens)
            return attended.transpose(1, 2).reshape(x.shape)

    window = WindowNetwork(Block().half(), torch.float16)
    with torch.no_grad(), Float32Islands():
        program = torch.export.export(window, (torch.rand(2, 8, 4, 4),))
    dtypes = {str(node.target): node.meta["val"].dtype for node in program.graph.nodes
              if node.op == "call_function" and isinstance(node.meta.get("val"), torch.Tensor)}
    assert dtypes["aten.layer_norm.default"] == torch.float32
    assert dtypes["aten.scaled_dot_product_attention.default"] == torch.float32
    assert program.module()(torch.rand(2, 8, 4, 4)).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# TensorRT builder logic against a stand-in module (the real one needs NVIDIA's package + a GPU)
# ----------------------------------------------------------------------------------------------


def _fake_tensorrt(version: str, weakly_typed: bool):
    """Just enough of the ``tensorrt`` API for :func:`export.trt_engine.build_engine`."""
    import types

    trt = types.SimpleNamespace(__version__=version, float32="float32", float16="float16")
    flags = ["TF32", "INT8"] + (["FP16", "OBEY_PRECISION_CONSTRAINTS"] if weakly_typed else [])
    trt.BuilderFlag = types.SimpleNamespace(**{name: name for name in flags})
    trt.LayerType = types.SimpleNamespace(NORMALIZATION="norm", SOFTMAX="softmax",
                                          CONVOLUTION="conv")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.Logger = lambda severity=None: object()
    trt.Logger.WARNING = 2
    trt.built = []

    class Layer:
        def __init__(self, kind: str) -> None:
            self.type, self.precision, self.num_outputs, self.output_types = kind, None, 1, {}

        def set_output_type(self, index: int, dtype: str) -> None:
            self.output_types[index] = dtype

    class Network:
        def __init__(self) -> None:
            self.layers = [Layer("conv"), Layer("norm"), Layer("softmax")]
            self.num_layers = len(self.layers)

        def get_layer(self, index: int) -> Layer:
            return self.layers[index]

    class Config:
        def __init__(self) -> None:
            self.flags, self.profiles = set(), []

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

        def add_optimization_profile(self, profile) -> None:
            self.profiles.append(profile)

    class Profile:
        def set_shape(self, name: str, minimum, optimum, maximum) -> None:
            self.shapes = (name, minimum, optimum, maximum)

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            trt.built.append((network, config))
            return b"engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            return Path(path).is_file()

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.mark.parametrize("weakly_typed", [True, False])
def test_tensorrt_build_pins_float32_layers_and_caches(tmp_path, monkeypatch, weakly_typed) -> None:
    import export.trt_engine as trt_engine

    trt = _fake_tensorrt("10.13.0" if weakly_typed else "11.4.0", weakly_typed)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_engine, "require_cuda", lambda device_index=0: None)
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(trt_engine, "environment_facts", lambda trt, device_index=0: {
        "gpu": "NVIDIA H100", "compute_capability": "9.0", "tensorrt": trt.__version__})
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"graph")
    spec = trt_engine.EngineSpec("image", (1024, 1024), "fp16", opt_batch=3, max_batch=8)
    assert trt_engine.onnx_precision(trt, "fp16") == ("fp32" if weakly_typed else "fp16")

    engine, facts = trt_engine.build_engine(onnx_path, spec, cache_dir=tmp_path / "cache")
    assert engine == b"engine" and facts["onnx_sha256"] == trt_engine.onnx_digest(onnx_path)
    (network, config), = trt.built
    assert config.profiles[0].shapes == ("image", (1, 3, 1024, 1024), (3, 3, 1024, 1024),
                                         (8, 3, 1024, 1024))
    pinned = {layer.type: layer.precision for layer in network.layers}
    if weakly_typed:
        assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= config.flags
        assert pinned == {"conv": None, "norm": "float32", "softmax": "float32"}
    else:
        # Strongly typed: the fp16 ONNX graph already holds the float32 islands.
        assert config.flags <= {"TF32"} and pinned["norm"] is None
        with pytest.raises(BackendUnavailable, match="INT8"):
            trt_engine.onnx_precision(trt, "int8")

    again, _ = trt_engine.build_engine(onnx_path, spec, cache_dir=tmp_path / "cache")
    assert again == engine and len(trt.built) == 1  # served from the cache
    onnx_path.write_bytes(b"another graph")
    trt_engine.build_engine(onnx_path, spec, cache_dir=tmp_path / "cache")
    assert len(trt.built) == 2  # a new ONNX hash is a new engine
