"""Checkpoints: our safetensors format, ImageNet MiT weights and released mmseg checkpoints.

Our format is one ``.safetensors`` file: tensors under named prefixes (``model.`` for the
student, ``ema_model.`` for the teacher, and in training checkpoints the optimizer state) and the
resolved configuration as JSON in the safetensors metadata. Weights are never pickled; foreign
``.pth`` files are read with ``torch.load(weights_only=True)``, which refuses arbitrary objects.
Every write goes to a temporary file in the same folder and is moved into place with
``os.replace``, so a killed save leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .config import HRDAConfig, ModelConfig, get_model_config, model_config_from_dict

FORMAT_NAME = "cluda"
FORMAT_VERSION = "1"
MODEL_PREFIX = "model."
EMA_PREFIX = "ema_model."


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the model."""


# --------------------------------------------------------------------------------------------
# Our format
# --------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> None:
    """Saves tensors and JSON-serialisable metadata as one safetensors file, atomically.

    Args:
        path: destination ``.safetensors`` file; its folder is created if needed.
        tensors: flat name → tensor mapping (moved to CPU and made contiguous here).
        metadata: values stored as JSON strings in the safetensors header.
    """
    from safetensors.torch import save

    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    for key, value in metadata.items():
        header[key] = json.dumps(value, sort_keys=True)
    payload = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(Path(path), save(payload, metadata=header))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Reads a checkpoint written by :func:`save_checkpoint`.

    Returns:
        (tensors, metadata) with the metadata values decoded from JSON.

    Raises:
        CheckpointError: the file is missing, not a safetensors file, or not in our format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as stream:
            header_size = int.from_bytes(stream.read(8), "little")
            header = json.loads(stream.read(header_size))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({error}); a released .pth "
            f"checkpoint must be converted first: python -m models.convert {path} OUT.safetensors"
        ) from error
    raw = header.get("__metadata__", {}) or {}
    if raw.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a safetensors file but not a cluda checkpoint (metadata 'format' is "
            f"{raw.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("format", "format_version"):
            metadata[key] = value
        else:
            metadata[key] = json.loads(value)
    return tensors, metadata


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prefixed_state(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    """The module's state dict with every key prefixed."""
    return {prefix + key: value for key, value in module.state_dict().items()}


def strip_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Keys that start with ``prefix``, with the prefix removed."""
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


def load_state_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Loads a state dict, raising one error that lists every missing, unexpected or misshapen key.

    Args:
        module: destination module.
        state: name → tensor mapping in the module's own key names.
        source: what the state came from (a file name), for the message.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in set(own) & set(state)
        if tuple(own[key].shape) != tuple(state[key].shape)
    )
    if missing or unexpected or misshapen:
        lines = [f"{source} does not match the model:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", misshapen)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(dict(state), strict=True)


def save_segmentor(
    path: str | Path,
    model: nn.Module,
    model_config: ModelConfig,
    teacher: nn.Module | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> None:
    """Saves a segmentor (and optionally its EMA teacher) with its architecture config."""
    tensors = prefixed_state(model, MODEL_PREFIX)
    if teacher is not None:
        tensors.update(prefixed_state(teacher, EMA_PREFIX))
    metadata = {"model_config": dataclasses.asdict(model_config), **(extra_metadata or {})}
    save_checkpoint(path, tensors, metadata)


def load_segmentor(
    path: str | Path, which: str = "model", device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Builds the segmentor stored in one of our checkpoints and loads its weights.

    Args:
        path: a cluda ``.safetensors`` checkpoint (inference or training).
        which: "model" (the student, what the papers evaluate) or "ema_model" (the teacher).
        device: where to put the model.

    Returns:
        (model in eval mode, metadata).
    """
    from .segmentor import build_segmentor

    if which not in ("model", "ema_model"):
        raise ValueError(f"which must be 'model' or 'ema_model', got {which!r}")
    tensors, metadata = load_checkpoint(path)
    if "model_config" not in metadata:
        raise CheckpointError(f"{path} has no 'model_config' in its metadata")
    model_config = model_config_from_dict(metadata["model_config"])
    state = strip_prefix(tensors, which + ".")
    if not state:
        prefixes = sorted({key.split(".", 1)[0] for key in tensors})
        raise CheckpointError(f"{path} holds no '{which}.' weights; prefixes present: {prefixes}")
    model = build_segmentor(model_config)
    load_state_strict(model, state, f"{path} ({which})")
    return model.to(device).eval(), metadata


# --------------------------------------------------------------------------------------------
# Foreign formats
# --------------------------------------------------------------------------------------------


def read_foreign_state(path: str | Path) -> dict[str, Any]:
    """Reads a ``.pth``/``.bin`` (safely, without unpickling objects) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except SafetensorError as error:
            raise CheckpointError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise CheckpointError(
            f"{path} could not be read as a weights file ({type(error).__name__}: {error}); "
            "only plain tensor checkpoints are accepted, arbitrary pickled objects are refused"
        ) from error
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, expected a state dict")
    return loaded


def _tensor_items(state: Mapping[str, Any]) -> dict[str, Tensor]:
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}


def mmseg_filter(
    checkpoint: Mapping[str, Any], which: str = "model"
) -> dict[str, Tensor]:
    """Extracts one segmentor from a released DAFormer/HRDA/MIC/CLUDA (mmseg) checkpoint.

    Accepts the ``{'state_dict': ...}`` container or a bare state dict, strips an optional
    ``module.`` prefix, keeps ``model.`` keys (the student, default) or ``ema_model.`` keys, and
    ignores ``imnet_model.``. A published student-only state dict (keys already starting with
    ``backbone.``/``decode_head.``) is taken as it is.

    Returns:
        State dict in the segmentor's own key names (``backbone.*``, ``decode_head.*``).
    """
    if which not in ("model", "ema_model"):
        raise ValueError(f"which must be 'model' or 'ema_model', got {which!r}")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError("the checkpoint's 'state_dict' entry is not a mapping")
    state = {re.sub(r"^module\.", "", key): value for key, value in _tensor_items(state).items()}
    selected = strip_prefix(state, which + ".")
    if selected:
        return selected
    bare = {k: v for k, v in state.items() if k.startswith(("backbone.", "decode_head."))}
    if bare and which == "model":
        return bare
    prefixes = sorted({key.split(".", 1)[0] for key in state})
    raise CheckpointError(
        f"no '{which}.' weights in the checkpoint; top-level prefixes found: {prefixes}"
    )


def _mit_depths(backbone_state: Mapping[str, Tensor]) -> tuple[int, ...]:
    depths = []
    for stage in range(1, 5):
        blocks = {
            int(m.group(1))
            for key in backbone_state
            if (m := re.match(rf"block{stage}\.(\d+)\.", key))
        }
        depths.append(max(blocks) + 1 if blocks else 0)
    return tuple(depths)


# MiT-B0 and B1 share depths (2, 2, 2, 2) and differ in width (32 vs 64 channels in stage 1).
_MIT_DEPTHS = {
    (3, 4, 6, 3): "mit_b2",
    (3, 4, 18, 3): "mit_b3",
    (3, 8, 27, 3): "mit_b4",
    (3, 6, 40, 3): "mit_b5",
}


def infer_model_config(state: Mapping[str, Tensor]) -> ModelConfig:
    """Guesses the architecture of a released mmseg segmentor state dict from its keys and shapes.

    DAFormer vs HRDA from ``decode_head.head.*``, CLUDA from ``decode_head.feat_weighter.*`` (then
    CLUDA's fusion order), the embedding width E from ``embed_layers.0.proj.weight``, the MiT size
    from the number of blocks per stage and the stage-1 width.
    """
    backbone_state = strip_prefix(state, "backbone.")
    if "patch_embed1.proj.weight" not in backbone_state:
        raise CheckpointError(
            "cannot infer the architecture: no MiT backbone keys (backbone.patch_embed1.*); "
            "pass the architecture name explicitly"
        )
    depths = _mit_depths(backbone_state)
    width = backbone_state["patch_embed1.proj.weight"].shape[0]
    if depths == (2, 2, 2, 2):
        backbone = "mit_b0" if width == 32 else "mit_b1"
    else:
        backbone = _MIT_DEPTHS.get(depths)
    if backbone is None:
        raise CheckpointError(f"unknown MiT depths {depths}; pass the architecture name explicitly")
    is_hrda = any(key.startswith("decode_head.head.") for key in state)
    head_prefix = "decode_head.head." if is_hrda else "decode_head."
    embed_key = head_prefix + "embed_layers.0.proj.weight"
    if embed_key not in state:
        raise CheckpointError(f"cannot infer the decoder: key {embed_key} is missing")
    embed_dim = state[embed_key].shape[0]
    fusion = "sepaspp" if any(".aspp_modules." in key for key in state) else "conv1x1"
    num_classes = state[head_prefix + "conv_seg.weight"].shape[0]
    if not is_hrda:
        return ModelConfig(backbone=backbone, embed_dim=embed_dim, fusion=fusion,
                           num_classes=num_classes)
    has_weighter = any(key.startswith("decode_head.feat_weighter.") for key in state)
    attention = state["decode_head.scale_attention.conv_seg.weight"].shape[0]
    hrda = HRDAConfig(
        attention_embed_dim=state["decode_head.scale_attention.embed_layers.0.proj.weight"].shape[0],
        attention_classwise=attention > 1,
        fusion_order="cluda" if has_weighter else "hrda",
        feature_weight_head=has_weighter,
    )
    return ModelConfig(
        backbone=backbone, embed_dim=embed_dim, fusion=fusion, num_classes=num_classes, hrda=hrda,
        inference_window=1024, inference_stride=512, eval_scale=(2048, 1024),
    )


def convert_mmseg_checkpoint(
    source: str | Path,
    destination: str | Path,
    architecture: str | None = None,
    which: str = "model",
) -> ModelConfig:
    """Converts a released DAFormer/HRDA/MIC/CLUDA ``.pth`` into one of our checkpoints.

    Args:
        source: the released checkpoint.
        destination: the ``.safetensors`` file to write.
        architecture: registered model config name; inferred from the keys when None.
        which: "model" (student) or "ema_model" (teacher).

    Returns:
        The model config written into the checkpoint.
    """
    from .segmentor import build_segmentor

    state = mmseg_filter(read_foreign_state(source), which)
    model_config = get_model_config(architecture) if architecture else infer_model_config(state)
    model = build_segmentor(model_config)
    load_state_strict(model, state, f"{source} ({which})")
    save_segmentor(
        destination, model, model_config,
        extra_metadata={"source": {"file": Path(source).name, "sha256": file_sha256(source),
                                   "weights": which}},
    )
    return model_config


def _hf_mit_key(key: str) -> str:
    """Maps one Hugging Face ``nvidia/mit-b*`` key to the NVlabs MiT name (kv handled apart)."""
    key = re.sub(r"^(segformer\.)?encoder\.", "", key)
    key = re.sub(r"^patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.norm.", key)
    key = re.sub(r"^patch_embeddings\.(\d)\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", key)
    key = re.sub(r"^layer_norm\.(\d)\.", lambda m: f"norm{int(m.group(1)) + 1}.", key)
    key = re.sub(r"^block\.(\d)\.", lambda m: f"block{int(m.group(1)) + 1}.", key)
    for hf_name, name in (
        (".layer_norm_1.", ".norm1."),
        (".layer_norm_2.", ".norm2."),
        (".attention.self.query.", ".attn.q."),
        (".attention.self.sr.", ".attn.sr."),
        (".attention.self.layer_norm.", ".attn.norm."),
        (".attention.output.dense.", ".attn.proj."),
        (".mlp.dense1.", ".mlp.fc1."),
        (".mlp.dense2.", ".mlp.fc2."),
    ):
        key = key.replace(hf_name, name)
    return key


def mit_imagenet_filter(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """ImageNet MiT weights in the NVlabs (``mit_b5.pth``) or Hugging Face (``nvidia/mit-b5``)
    layout → NVlabs names, classifier dropped.

    Hugging Face splits each ``attn.kv`` Linear into ``key`` and ``value``; they are concatenated
    back (keys first, as NVlabs' ``kv`` output is reshaped into k then v).
    """
    state = _tensor_items(state.get("state_dict", state) if isinstance(state, Mapping) else state)
    if any(key.startswith(("segformer.", "encoder.")) for key in state):
        converted: dict[str, Tensor] = {}
        pending: dict[str, dict[str, Tensor]] = {}
        for key, value in state.items():
            if key.startswith("classifier."):
                continue
            match = re.match(r"^(.*)\.attention\.self\.(key|value)\.(weight|bias)$", key)
            if match:
                target = _hf_mit_key(f"{match.group(1)}.attn.kv.{match.group(3)}")
                pending.setdefault(target, {})[match.group(2)] = value
                continue
            converted[_hf_mit_key(key)] = value
        for target, parts in pending.items():
            if set(parts) != {"key", "value"}:
                raise CheckpointError(f"Hugging Face weights have only {sorted(parts)} for {target}")
            converted[target] = torch.cat([parts["key"], parts["value"]], dim=0)
        return converted
    return {
        re.sub(r"^(module\.)?(backbone\.)?", "", key): value
        for key, value in state.items()
        if not re.sub(r"^(module\.)?(backbone\.)?", "", key).startswith("head.")
    }


def load_mit_imagenet(backbone: nn.Module, path: str | Path) -> None:
    """Loads ImageNet MiT weights (NVlabs ``.pth`` or Hugging Face safetensors/bin) into a backbone.

    Raises:
        CheckpointError: missing file, unreadable file, or keys/shapes that do not match.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"pretrained weights {path} do not exist. Get the SegFormer ImageNet-1k weights "
            "(mit_b5.pth from NVlabs/SegFormer, or model.safetensors of nvidia/mit-b5 on the "
            "Hugging Face hub; both for non-commercial use) and pass their path"
        )
    load_state_strict(backbone, mit_imagenet_filter(read_foreign_state(path)), str(path))


def download_mit_imagenet(name: str, destination: str | Path) -> Path:
    """Downloads ImageNet MiT weights from the Hugging Face hub (``nvidia/mit-b0``…``b5``).

    Optional convenience for machines with internet; needs ``huggingface_hub``. The file keeps
    the Hugging Face layout; :func:`load_mit_imagenet` reads it as it is.
    """
    match = re.fullmatch(r"mit_b([0-5])", name)
    if not match:
        raise ValueError(f"unknown MiT name {name!r}; expected mit_b0 … mit_b5")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise RuntimeError("downloading needs huggingface_hub: pip install huggingface_hub") from error
    repo = f"nvidia/mit-b{match.group(1)}"
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo, filename, local_dir=destination))
        except Exception as error:  # offline, missing file or refused: try the other layout
            last_error = error
    raise CheckpointError(f"could not download {repo}: {last_error}")
