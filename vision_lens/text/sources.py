"""Where a text tower comes from: checkpoints, transformers classes and tokenizers.

The loading steps :class:`~vision_lens.text.CLIPText` and :mod:`vision_lens.models` share: check
an open_clip name and weights before anything is built, get open_clip's tokenizer for a model,
load a Hugging Face CLIP/SigLIP checkpoint as the right ``transformers`` class (and its
tokenizer), and drop an image tower the text side never reads. Each raises an error that says
what to pass instead.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from vision_lens.loading import UnsupportedModelError
from vision_lens.loading.hf import HUB_KEYS, hub_kwargs

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

#: transformers classes :meth:`CLIPText.from_hf` accepts -> the output ``encode`` reproduces.
HF_TEXT_CLASSES = {
    "CLIPModel": "get_text_features",
    "CLIPTextModelWithProjection": "text_embeds",
    "SiglipModel": "get_text_features",
    "SiglipTextModel": "pooler_output",
}

#: The transformers classes holding both towers (what :func:`vision_lens.load_clip_hf` takes).
HF_TWO_TOWER_CLASSES = ("CLIPModel", "SiglipModel")

#: ``from_pretrained`` arguments that also apply to ``AutoConfig``, tokenizers and processors.

# config.model_type -> class to load when a saved config names no supported architecture.
_HF_CLASS_FOR_MODEL_TYPE = {
    "clip": "CLIPModel",
    "clip_text_model": "CLIPTextModelWithProjection",
    "siglip": "SiglipModel",
    "siglip_text_model": "SiglipTextModel",
}
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".npy")


# ---------------------------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------------------------
def check_open_clip_source(model_name: str, pretrained: str | os.PathLike | None) -> str | None:
    """Check an open_clip model name and its weights before any download or model build.

    Args:
        model_name: An open_clip architecture name or an ``hf-hub:``/``local-dir:`` identifier.
        pretrained: An open_clip pretrained tag, a checkpoint path, or ``None``.

    Returns:
        ``pretrained`` as a string (``None`` stays ``None``), ready for
        ``open_clip.create_model``.

    Raises:
        TypeError: ``model_name`` is not a string.
        ValueError: Unknown model name (close matches are suggested) or tag, or ``pretrained``
            given with an ``hf-hub:``/``local-dir:`` name.
        FileNotFoundError: ``pretrained`` looks like a path but no such file exists.

    Example:
        >>> check_open_clip_source("ViT-B-32", "openai")
        'openai'
        >>> check_open_clip_source("ViT-B-23", None)
        Traceback (most recent call last):
        ...
        ValueError: Unknown open_clip model 'ViT-B-23'. Did you mean one of [...]? ...
    """
    import open_clip

    if not isinstance(model_name, str):
        raise TypeError(f"model_name must be a string, got {type(model_name).__name__}.")
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
    if model_name.startswith(("hf-hub:", "local-dir:")):
        if pretrained is not None:
            raise ValueError(
                f"{model_name!r} already names its weights; drop pretrained={pretrained!r}."
            )
        return None
    if open_clip.get_model_config(model_name) is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
        raise ValueError(
            f"Unknown open_clip model {model_name!r}. "
            + (f"Did you mean one of {close}? " if close else "")
            + "See open_clip.list_models()."
        )
    if pretrained is None or open_clip.get_pretrained_cfg(model_name, pretrained):
        return pretrained
    if os.path.isfile(pretrained):
        return pretrained
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if os.sep in pretrained or "/" in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(
            f"Checkpoint {pretrained!r} does not exist. Pass an existing file path or one of the "
            f"open_clip tags for {model_name}: {tags}"
        )
    raise ValueError(
        f"{pretrained!r} is neither an open_clip pretrained tag for {model_name} nor an existing "
        f"file. Tags for {model_name}: {tags}"
    )


def open_clip_tokenizer(model_name: str, cache_dir: str | None = None) -> Callable[..., Tensor]:
    """``open_clip.get_tokenizer(model_name)``, with a clear error when it cannot be loaded.

    SigLIP and other open_clip models with a Hugging Face tokenizer download it on first use;
    offline that fails with an ``OSError`` that says to pass ``tokenizer=``.

    Args:
        model_name: An open_clip model name, as for ``open_clip.create_model``.
        cache_dir: open_clip's download cache directory.

    Returns:
        A callable ``list[str] -> LongTensor [n, context_length]``.

    Raises:
        OSError: The tokenizer cannot be loaded.

    Example:
        >>> tokenizer = open_clip_tokenizer("ViT-B-32")
        >>> tokenizer(["a dog"]).shape
        torch.Size([1, 77])
    """
    import open_clip

    try:
        return open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
    except OSError as err:
        raise OSError(
            f"Cannot load open_clip's tokenizer for {model_name!r} (SigLIP and other models with "
            "a Hugging Face tokenizer download it on first use; offline that fails). Pass "
            "tokenizer= yourself, e.g. open_clip.tokenizer.HFTokenizer(local_dir, "
            "context_length=...) for a local copy of the tokenizer. Cause: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers
# ---------------------------------------------------------------------------------------------


def hf_text_kind(model: nn.Module) -> str:
    """The class of :data:`HF_TEXT_CLASSES` that ``model`` is (or derives from).

    Args:
        model: A transformers model.

    Returns:
        The class name, e.g. ``"CLIPModel"`` or ``"SiglipTextModel"``.

    Raises:
        UnsupportedModelError: ``model`` has no text tower CLIPText supports (the message says
            why, e.g. a ``CLIPTextModel`` has no projection into the image space).

    Example:
        >>> from transformers import CLIPTextConfig, CLIPTextModel
        >>> hf_text_kind(CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=8,
        ...     num_hidden_layers=1, num_attention_heads=2)))
        Traceback (most recent call last):
        ...
        vision_lens.errors.UnsupportedModelError: CLIPTextModel has no text tower ...
    """
    for klass in type(model).__mro__:
        if klass.__name__ in HF_TEXT_CLASSES:
            return klass.__name__
    name = type(model).__name__
    if name == "CLIPTextModel":
        reason = (
            "its pooler_output is not projected into the image embedding space; load it as "
            "CLIPTextModelWithProjection (or CLIPModel)"
        )
    elif not isinstance(getattr(model, "text_model", None), nn.Module):
        reason = "it has no text tower (image models go to HookedViT.from_hf)"
    else:
        reason = "its text tower is not a supported kind"
    raise UnsupportedModelError(
        f"{name} has no text tower CLIPText supports: {reason}. CLIPText.from_hf supports these "
        f"transformers classes: {_hf_supported_text()}."
    )


def load_hf_model(path: str, *, text_only: bool, **kwargs: Any) -> nn.Module:
    """Load a transformers CLIP/SigLIP checkpoint by hub id or directory, in eval mode.

    The class is chosen from the saved config (its ``architectures`` entry, else its
    ``model_type``). Safetensors weights are required for a hub id (and for a directory that has
    them); remote code is never run.

    Args:
        path: A hub id or a local ``save_pretrained`` directory.
        text_only: Accept any class of :data:`HF_TEXT_CLASSES`; ``False`` accepts only the
            two-tower :data:`HF_TWO_TOWER_CLASSES`.
        **kwargs: Passed to ``from_pretrained`` (``revision``, ``cache_dir``, ``torch_dtype``,
            ...).

    Returns:
        The model, in eval mode.

    Raises:
        ValueError: ``trust_remote_code=True`` was passed.
        UnsupportedModelError: The checkpoint is of another architecture.

    Example:
        >>> model = load_hf_model("openai/clip-vit-base-patch32", text_only=False)
        ... # doctest: +SKIP
    """
    from transformers import AutoConfig

    if kwargs.pop("trust_remote_code", False):
        raise ValueError("vision_lens does not run remote code (trust_remote_code=True refused).")
    config = AutoConfig.from_pretrained(path, **hub_kwargs(kwargs))
    allowed = list(HF_TEXT_CLASSES) if text_only else list(HF_TWO_TOWER_CLASSES)
    cls = _hf_class_for(config, repr(path), allowed)
    if not os.path.isdir(path) or any(n.endswith(".safetensors") for n in os.listdir(path)):
        kwargs.setdefault("use_safetensors", True)  # a hub id: never unpickle a .bin
    return cls.from_pretrained(path, **kwargs).eval()


def hf_tokenizer(path: str, **kwargs: Any) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(path)``, with a clear error when there is none.

    Args:
        path: A hub id or a local directory.
        **kwargs: ``from_pretrained`` arguments; only :data:`HUB_KEYS` are used.

    Returns:
        The transformers tokenizer.

    Raises:
        OSError: No tokenizer can be loaded (a directory without tokenizer files included,
            where ``AutoTokenizer`` would build an empty one); the message says to pass
            ``tokenizer=``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     hf_tokenizer(empty)
        Traceback (most recent call last):
        ...
        OSError: Cannot load a tokenizer for '...': the directory has no tokenizer files ...
    """
    from transformers import AutoTokenizer

    hub = hub_kwargs(kwargs)
    folder = os.path.join(path, hub.get("subfolder") or "")
    if os.path.isdir(folder) and not any(
        os.path.exists(os.path.join(folder, name)) for name in _TOKENIZER_FILES
    ):
        # AutoTokenizer would build an empty tokenizer here rather than fail.
        raise OSError(
            f"Cannot load a tokenizer for {path!r}: the directory has no tokenizer files "
            f"({', '.join(_TOKENIZER_FILES)}). Pass tokenizer= (a transformers tokenizer, or a "
            "callable list[str] -> input ids), or save one there with "
            "tokenizer.save_pretrained(path)."
        )
    try:
        return AutoTokenizer.from_pretrained(path, **hub)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise OSError(
            f"Cannot load a tokenizer for {path!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Pass tokenizer= (a transformers "
            "tokenizer, or a callable list[str] -> input ids)."
        ) from err


def drop_hf_image_tower(model: nn.Module) -> None:
    """Free a ``CLIPModel``'s / ``SiglipModel``'s image tower, in place.

    ``get_text_features`` never reads ``vision_model`` or ``visual_projection``; they are set to
    ``None``. Models without them are left unchanged.

    Example:
        >>> from torch import nn
        >>> model = nn.Module()
        >>> model.vision_model = nn.Linear(2, 2)
        >>> drop_hf_image_tower(model)
        >>> model.vision_model is None
        True
    """
    for name in ("vision_model", "visual_projection"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)


def _hf_supported_text() -> str:
    return ", ".join(f"{name} ({output})" for name, output in HF_TEXT_CLASSES.items())


def _hf_class_for(config: PretrainedConfig, what: str, allowed: Sequence[str]) -> type:
    """The transformers class to load a saved config as, among ``allowed`` class names."""
    import transformers

    architectures = list(getattr(config, "architectures", None) or [])
    names = [a for a in architectures if a in allowed]
    if not names and not architectures:
        fallback = _HF_CLASS_FOR_MODEL_TYPE.get(getattr(config, "model_type", None))
        names = [fallback] if fallback in allowed else []
    if not names:
        found = architectures[0] if architectures else f"model_type={config.model_type!r}"
        raise UnsupportedModelError(
            f"{what} is a {found} checkpoint, which has no text tower CLIPText supports here. "
            f"Supported transformers classes: {', '.join(allowed)}."
        )
    return getattr(transformers, names[0])


__all__ = [
    "HF_TEXT_CLASSES",
    "HF_TWO_TOWER_CLASSES",
    "HUB_KEYS",
    "check_open_clip_source",
    "drop_hf_image_tower",
    "hf_text_kind",
    "hf_tokenizer",
    "hub_kwargs",
    "load_hf_model",
    "open_clip_tokenizer",
]
