"""Our checkpoint format, the released-checkpoint converter and ImageNet MiT loading."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from models.checkpoint import (
    CheckpointError,
    convert_mmseg_checkpoint,
    infer_model_config,
    load_checkpoint,
    load_mit_imagenet,
    load_segmentor,
    mit_imagenet_filter,
    mmseg_filter,
    save_checkpoint,
    save_segmentor,
)
from models.config import get_model_config
from models.convert import main as convert_main
from models.segmentor import build_segmentor


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.arange(6.0).view(2, 3).t(), "b": torch.tensor([1, 2, 3])}
    save_checkpoint(tmp_path / "x.safetensors", tensors, {"config": {"lr": 1e-4, "name": "x"}})
    loaded, metadata = load_checkpoint(tmp_path / "x.safetensors")
    torch.testing.assert_close(loaded["a.weight"], tensors["a.weight"])
    assert metadata["config"] == {"lr": 1e-4, "name": "x"}
    assert metadata["format"] == "cluda"


def test_interrupted_save_keeps_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"w": torch.zeros(3)}, {"iteration": 1})
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.ones(3)}, {"iteration": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a cluda checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("name", ["daformer_mit_test", "cluda_hrda_mit_test"])
def test_segmentor_round_trip(tmp_path: Path, name: str) -> None:
    model = _randomised(build_segmentor(name), 0)
    teacher = _randomised(build_segmentor(name), 1)
    path = tmp_path / "model.safetensors"
    save_segmentor(path, model, get_model_config(name), teacher=teacher)
    loaded, metadata = load_segmentor(path)
    _same_state(model, loaded)
    loaded_teacher, _ = load_segmentor(path, which="ema_model")
    _same_state(teacher, loaded_teacher)
    assert metadata["model_config"]["backbone"] == "mit_test"


def test_load_segmentor_reports_mismatched_keys(tmp_path: Path) -> None:
    model = build_segmentor("daformer_mit_test")
    tensors = {"model." + k: v for k, v in model.state_dict().items()}
    del tensors["model.decode_head.conv_seg.weight"]
    tensors["model.decode_head.extra"] = torch.zeros(1)
    save_checkpoint(tmp_path / "bad.safetensors", tensors,
                    {"model_config": __import__("dataclasses").asdict(model.config)})
    with pytest.raises(CheckpointError) as error:
        load_segmentor(tmp_path / "bad.safetensors")
    message = str(error.value)
    assert "missing keys (1): decode_head.conv_seg.weight" in message
    assert "unexpected keys (1): decode_head.extra" in message


def _mmseg_checkpoint(student: torch.nn.Module, teacher: torch.nn.Module) -> dict:
    """A container laid out as the mmcv runner saves a DACS model (release_code.md §8)."""
    state = {}
    state.update({"model." + k: v for k, v in student.state_dict().items()})
    state.update({"ema_model." + k: v for k, v in teacher.state_dict().items()})
    state.update({"imnet_model." + k: v for k, v in student.state_dict().items()
                  if k.startswith("backbone.")})
    return {"meta": {"iter": 40000, "CLASSES": ("road", "sidewalk"), "config": "text"},
            "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}


@pytest.mark.parametrize("name", ["hrda_mit_test", "cluda_hrda_mit_test", "daformer_mit_test"])
def test_convert_released_checkpoint(tmp_path: Path, name: str) -> None:
    student = _randomised(build_segmentor(name), 2)
    teacher = _randomised(build_segmentor(name), 3)
    source = tmp_path / "released.pth"
    torch.save(_mmseg_checkpoint(student, teacher), source)
    convert_mmseg_checkpoint(source, tmp_path / "ours.safetensors", architecture=name)
    loaded, metadata = load_segmentor(tmp_path / "ours.safetensors")
    _same_state(student, loaded)
    assert metadata["source"]["weights"] == "model"
    assert convert_main([str(source), str(tmp_path / "ema.safetensors"), "--arch", name,
                         "--ema"]) == 0
    _same_state(teacher, load_segmentor(tmp_path / "ema.safetensors")[0])


def test_mmseg_filter_variants() -> None:
    weight = torch.ones(2)
    published = {"state_dict": {"backbone.x": weight, "decode_head.y": weight}}
    assert set(mmseg_filter(published)) == {"backbone.x", "decode_head.y"}
    ddp = {"module.model.backbone.x": weight, "module.ema_model.backbone.x": weight * 2}
    assert mmseg_filter(ddp)["backbone.x"].sum() == 2
    assert mmseg_filter(ddp, "ema_model")["backbone.x"].sum() == 4
    with pytest.raises(CheckpointError, match="prefixes found"):
        mmseg_filter({"state_dict": {"imnet_model.backbone.x": weight}})


def test_converter_refuses_wrong_architecture(tmp_path: Path) -> None:
    student = build_segmentor("hrda_mit_test")
    source = tmp_path / "released.pth"
    torch.save(_mmseg_checkpoint(student, student), source)
    with pytest.raises(CheckpointError, match="missing keys"):
        convert_mmseg_checkpoint(source, tmp_path / "out.safetensors", "cluda_hrda_mit_test")
    assert not (tmp_path / "out.safetensors").exists()
    assert convert_main([str(tmp_path / "nothing.pth"), str(tmp_path / "o.safetensors")]) == 2


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "evil.pth"
    # A pickled reference to a callable: unpickling arbitrary objects could run code.
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": os.system}, source)
    with pytest.raises(CheckpointError, match="refused"):
        convert_mmseg_checkpoint(source, tmp_path / "o.safetensors", "daformer_mit_test")


@pytest.mark.parametrize("name", ["daformer_mit_b5", "hrda_mit_b5", "cluda_hrda_mit_b5",
                                  "cluda_daformer_mit_b5"])
def test_infer_model_config_from_full_size_keys(name: str) -> None:
    with torch.device("meta"):
        model = build_segmentor(name)
    assert infer_model_config(model.state_dict()) == get_model_config(name)


def _to_hugging_face(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs → Hugging Face names, written from the transformers conversion rules."""
    converted = {}
    for key, value in state.items():
        new = "segformer.encoder." + key
        new = re.sub(r"patch_embed(\d)", lambda m: f"patch_embeddings.{int(m.group(1)) - 1}", new)
        new = new.replace("norm", "layer_norm")
        new = re.sub(r"segformer\.encoder\.layer_norm(\d)",
                     lambda m: f"segformer.encoder.layer_norm.{int(m.group(1)) - 1}", new)
        new = new.replace("layer_norm1", "layer_norm_1").replace("layer_norm2", "layer_norm_2")
        new = re.sub(r"block(\d)", lambda m: f"block.{int(m.group(1)) - 1}", new)
        new = new.replace("attn.q", "attention.self.query")
        new = new.replace("attn.proj", "attention.output.dense")
        new = new.replace("attn", "attention.self")
        new = new.replace("fc1", "dense1").replace("fc2", "dense2")
        if new.endswith(("attention.self.kv.weight", "attention.self.kv.bias")):
            half = value.shape[0] // 2
            stem, kind = new.rsplit(".kv.", 1)
            converted[f"{stem}.key.{kind}"] = value[:half]
            converted[f"{stem}.value.{kind}"] = value[half:]
        else:
            converted[new] = value
    converted["classifier.weight"] = torch.zeros(1000, 8)
    return converted


def test_imagenet_weights_in_both_layouts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _randomised(build_segmentor("daformer_mit_test"), 4).backbone
    nvlabs = dict(source.state_dict())
    nvlabs["head.weight"] = torch.zeros(1000, 8)
    torch.save(nvlabs, tmp_path / "mit_test.pth")
    save_file(_to_hugging_face(source.state_dict()), str(tmp_path / "model.safetensors"))
    for file in ("mit_test.pth", "model.safetensors"):
        target = build_segmentor("daformer_mit_test").backbone
        load_mit_imagenet(target, tmp_path / file)
        _same_state(source, target)
    assert set(mit_imagenet_filter(_to_hugging_face(source.state_dict()))) == set(
        source.state_dict()
    )
    with pytest.raises(CheckpointError, match="nvidia/mit-b5"):
        load_mit_imagenet(source, tmp_path / "absent.pth")
