"""Bad checkpoint files give a clear error naming the file, never a raw reader error or a
silently resized or half-random model.

Every loader with a local-file path (open_clip ``pretrained=path``, timm ``pretrained=path`` and
``pretrained_cfg_overlay=dict(file=path)``, a Hugging Face ``save_pretrained`` directory) is fed
real tiny checkpoints saved here, corrupted in each way a file goes bad: empty, truncated, text,
a broken safetensors header, another architecture, missing keys, another image size, a
directory for a file (or a file for a directory), a missing path, and a pickle that would run
code.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import pytest
import timm
import torch
import transformers as tf
from safetensors.torch import load_file, save_file
from support.arch_hf import TINY_TOWER

import vision_lens as vl
from vision_lens.errors import CheckpointError
from vision_lens.loading.hf import load_hf
from vision_lens.loading.timm import load_timm

_TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
_VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
OC_CONFIGS = {
    "vl-ckpt-tiny": _VISION,
    "vl-ckpt-tiny-p16": {**_VISION, "patch_size": 16},  # another architecture (B-16 vs B-32)
    "vl-ckpt-tiny-64": {**_VISION, "image_size": 64},  # another image size
}
TIMM_NAME = "vit_tiny_patch16_224"
TIMM_KWARGS = {"img_size": 32, "depth": 1, "num_classes": 0}
# 32 x 32 images in 16 x 16 patches (2 x 2 grid), as the timm and open_clip towers here.
HF_VISION = dict(TINY_TOWER, image_size=32, patch_size=16)


# ------------------------------------------------------------------------ checkpoint makers
@pytest.fixture(scope="module")
def oc_names(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oc_configs")
    for name, vision in OC_CONFIGS.items():
        cfg = {"embed_dim": 16, "vision_cfg": vision, "text_cfg": _TEXT}
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return list(OC_CONFIGS)


def _oc_state(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return open_clip.create_model(name).state_dict()


def _timm_state(**overrides) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(
        TIMM_NAME, pretrained=False, **{**TIMM_KWARGS, **overrides}
    ).state_dict()


def _hf_model(**overrides) -> tf.ViTModel:
    torch.manual_seed(0)
    return tf.ViTModel(tf.ViTConfig(**{**HF_VISION, **overrides}), add_pooling_layer=False)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous().clone() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


def _hf_dir(folder: Path, model: tf.ViTModel, fmt: str) -> Path:
    model.save_pretrained(folder)
    if fmt == "bin":  # transformers 5 writes safetensors only; a legacy .bin directory
        os.remove(folder / "model.safetensors")
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@dataclass
class Source:
    """A loader and how to write a checkpoint for it; ``weights(path)`` is the file inside."""

    load: Callable[[Path], object]
    write: Callable[[Path, str], Path]  # (folder, variant) -> path to pass to ``load``
    weights: Callable[[Path], Path]
    suffix: str


def _oc_source(suffix: str) -> Source:
    names = {
        "good": "vl-ckpt-tiny",
        "other_arch": "vl-ckpt-tiny-p16",
        "other_size": "vl-ckpt-tiny-64",
    }

    def write(folder: Path, variant: str) -> Path:
        state = _oc_state(names.get(variant, "vl-ckpt-tiny"))
        if variant == "missing_keys":
            state.pop("visual.transformer.resblocks.0.ln_1.weight")
        return _save(state, folder / f"clip{suffix}")

    return Source(
        load=lambda p: vl.HookedViT.from_open_clip("vl-ckpt-tiny", pretrained=p),
        write=write,
        weights=lambda p: p,
        suffix=suffix,
    )


def _timm_source(suffix: str, overlay: bool = False) -> Source:
    def write(folder: Path, variant: str) -> Path:
        overrides = {"other_arch": {"patch_size": 8}, "other_size": {"img_size": 64}}
        state = _timm_state(**overrides.get(variant, {}))
        if variant == "missing_keys":
            state.pop("blocks.0.norm1.weight")
        return _save(state, folder / f"weights{suffix}")

    def load(path: Path) -> object:
        if overlay:
            return load_timm(
                TIMM_NAME,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
                **TIMM_KWARGS,
            )
        return vl.HookedViT.from_timm(TIMM_NAME, pretrained=str(path), **TIMM_KWARGS)

    return Source(load=load, write=write, weights=lambda p: p, suffix=suffix)


def _hf_source(fmt: str) -> Source:
    def write(folder: Path, variant: str) -> Path:
        folder = _hf_dir(folder, _hf_model(), fmt)
        if variant == "other_arch":  # another width's weights under this config.json
            other = _hf_model(hidden_size=48, intermediate_size=96)
            save_file(
                {k: v.contiguous() for k, v in other.state_dict().items()},
                folder / "model.safetensors",
                metadata={"format": "pt"},
            )
        elif variant == "missing_keys":
            state = load_file(folder / "model.safetensors")
            state.pop("embeddings.cls_token")
            save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return folder

    def weights(folder: Path) -> Path:
        return folder / ("model.safetensors" if fmt == "safetensors" else "pytorch_model.bin")

    def load(folder: Path) -> object:
        return vl.HookedViT.from_hf(folder, add_pooling_layer=False)

    return Source(load=load, write=write, weights=weights, suffix="." + fmt)


SOURCES = {
    "open_clip-pt": _oc_source(".pt"),
    "open_clip-safetensors": _oc_source(".safetensors"),
    "timm-pth": _timm_source(".pth"),
    "timm-safetensors": _timm_source(".safetensors"),
    "timm-overlay": _timm_source(".pth", overlay=True),
    "hf-safetensors": _hf_source("safetensors"),
    "hf-bin": _hf_source("bin"),
}


# ------------------------------------------------------------------------------ corruptions
def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _bad_header(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[8:24] = b"#not json at all"  # the JSON header starts after an 8-byte length
    file.write_bytes(bytes(data))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "empty": lambda f: f.write_bytes(b""),
    "truncated": _truncate,
    "text": lambda f: f.write_text("these are not the weights you are looking for\n"),
    "bad_header": _bad_header,
}

# (source, corruption, phrase in the message)
FILE_CASES = [
    (source, corruption, phrase)
    for source, corruptions in {
        "open_clip-pt": ("empty", "truncated", "text"),
        "open_clip-safetensors": ("empty", "truncated", "text", "bad_header"),
        "timm-pth": ("empty", "truncated", "text"),
        "timm-safetensors": ("empty", "truncated", "bad_header"),
        "timm-overlay": ("truncated", "text"),
        "hf-safetensors": ("empty", "truncated", "text", "bad_header"),
        "hf-bin": ("empty", "truncated", "text"),
    }.items()
    for corruption in corruptions
    for phrase in [
        {
            "empty": "is empty",
            "bad_header": "not a valid safetensors",
            "truncated": "truncated",
            "text": "not a",
        }[corruption]
    ]
]


@pytest.fixture(scope="module")
def ready(oc_names):
    """Register the open_clip configs once."""
    return oc_names


@pytest.mark.parametrize("source, corruption, phrase", FILE_CASES)
def test_corrupted_file_is_a_checkpoint_error(ready, tmp_path, source, corruption, phrase):
    src = SOURCES[source]
    path = src.write(tmp_path, "good")
    CORRUPTIONS[corruption](src.weights(path))
    with pytest.raises(CheckpointError, match=phrase) as info:
        src.load(path)
    message = str(info.value)
    assert str(src.weights(path)) in message  # names the file
    assert ";" in message  # ... and the fix after what is wrong
    if corruption != "empty":
        assert info.value.__cause__ is not None  # the reader's own error is chained


MISMATCH_CASES = [
    (source, variant, phrase)
    for source in SOURCES
    if source != "hf-bin"
    for variant, phrase in [
        ("other_arch", "does not match|does not fit"),
        ("missing_keys", "missing"),
    ]
]


@pytest.mark.parametrize("source, variant, phrase", MISMATCH_CASES)
def test_checkpoint_of_another_architecture_or_incomplete(ready, tmp_path, source, variant, phrase):
    src = SOURCES[source]
    path = src.write(tmp_path, variant)
    with pytest.raises(CheckpointError, match=phrase) as info:
        src.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "source", ["open_clip-pt", "open_clip-safetensors", "timm-pth", "timm-overlay"]
)
def test_checkpoint_for_another_image_size_is_refused_not_resized(ready, tmp_path, source):
    src = SOURCES[source]
    path = src.write(tmp_path, "other_size")
    with pytest.raises(CheckpointError, match="not resized silently") as info:
        src.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "64x64 px" in message and "32x32 px" in message  # both sizes
    assert "image_size=" in message  # the fix


def test_timm_checkpoint_loads_at_its_size_then_resamples_explicitly(tmp_path):
    path = _save(_timm_state(img_size=64), tmp_path / "w64.pth")
    kwargs = {**TIMM_KWARGS, "img_size": 64}
    model = vl.HookedViT.from_timm(TIMM_NAME, pretrained=str(path), image_size=32, **kwargs)
    assert model.cfg.image_size == (32, 32)


def test_hf_image_size_other_than_the_checkpoint_is_refused(tmp_path):
    """A from_pretrained ``image_size`` (a config override) is refused; HookedViT.from_hf's own
    ``image_size`` resamples explicitly."""
    folder = _hf_dir(tmp_path, _hf_model(), "safetensors")
    with pytest.raises(CheckpointError, match="not resized silently") as info:
        load_hf(folder, add_pooling_layer=False, image_size=64)
    assert str(folder) in str(info.value) and "(32, 32)" in str(info.value)
    model = vl.HookedViT.from_hf(folder, add_pooling_layer=False, image_size=64)
    assert model.cfg.image_size == (64, 64)


@pytest.mark.parametrize("source", list(SOURCES))
def test_good_checkpoint_loads(ready, tmp_path, source):
    model = SOURCES[source].load(SOURCES[source].write(tmp_path, "good"))
    cfg = model.cfg if hasattr(model, "cfg") else model[0]
    assert cfg.image_size == (32, 32)


# ---------------------------------------------------------------- paths that are not files
@pytest.mark.parametrize("source", ["open_clip-pt", "timm-pth", "timm-overlay"])
def test_directory_instead_of_file(ready, tmp_path, source):
    with pytest.raises(CheckpointError, match="is a directory") as info:
        SOURCES[source].load(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_hf_file_instead_of_directory(tmp_path):
    folder = _hf_dir(tmp_path, _hf_model(), "safetensors")
    file = folder / "model.safetensors"
    with pytest.raises(CheckpointError, match="not a save_pretrained directory") as info:
        vl.HookedViT.from_hf(file, add_pooling_layer=False)
    assert str(file) in str(info.value)


def test_hf_directory_without_config_or_weights(tmp_path):
    folder = _hf_dir(tmp_path, _hf_model(), "safetensors")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json") as info:
        vl.HookedViT.from_hf(folder, add_pooling_layer=False)
    assert str(folder) in str(info.value)
    _hf_model().config.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        vl.HookedViT.from_hf(folder, add_pooling_layer=False)


@pytest.mark.parametrize("source", list(SOURCES))
def test_missing_path_is_file_not_found(ready, tmp_path, source):
    missing = tmp_path / "nowhere" / f"model{SOURCES[source].suffix}"
    with pytest.raises(FileNotFoundError) as info:
        SOURCES[source].load(missing)
    assert str(missing) in str(info.value)


# ------------------------------------------------------------ pickles that would run code
class _RunsCode:
    """Unpickling this would create ``marker``: loading must refuse before that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("source", ["open_clip-pt", "timm-pth", "timm-overlay", "hf-bin"])
def test_code_executing_pickle_is_refused_without_running(ready, tmp_path, source):
    src = SOURCES[source]
    path = src.write(tmp_path / "ckpt", "good") if source == "hf-bin" else None
    if path is None:
        (tmp_path / "ckpt").mkdir()
        path = tmp_path / "ckpt" / f"evil{src.suffix}"
    marker = tmp_path / "code_ran"
    torch.save({"weight": torch.zeros(1), "payload": _RunsCode(marker)}, src.weights(path))
    with pytest.raises(CheckpointError, match="could run code") as info:
        src.load(path)
    assert not marker.exists()
    assert str(src.weights(path)) in str(info.value)


# --------------------------------------------------------------------- other entry points
def test_load_clip_names_a_truncated_checkpoint(ready, tmp_path):
    path = _save(_oc_state("vl-ckpt-tiny"), tmp_path / "clip.safetensors")
    _truncate(path)
    with pytest.raises(CheckpointError, match="truncated") as info:
        vl.load_clip("vl-ckpt-tiny", str(path), tokenizer=lambda texts: torch.zeros(1, 8))
    assert str(path) in str(info.value)


def test_state_dict_that_is_not_a_mapping(ready, tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a state dict") as info:
        vl.HookedViT.from_open_clip("vl-ckpt-tiny", pretrained=str(path))
    assert str(path) in str(info.value)


def test_training_checkpoint_wrapper_still_loads(ready, tmp_path):
    path = tmp_path / "epoch3.pt"
    torch.save({"epoch": 3, "state_dict": _oc_state("vl-ckpt-tiny")}, path)
    model = vl.HookedViT.from_open_clip("vl-ckpt-tiny", pretrained=str(path))
    assert model.cfg.image_size == (32, 32)
    shutil.rmtree(tmp_path)
