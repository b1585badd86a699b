"""How :class:`~vision_lens.text.CLIPText` reads each kind of model: one adapter per library.

An adapter knows, for its library, where the text tower is, how to call the tokenizer, how to
encode token ids into text features, and where ``logit_scale``/``logit_bias`` live, so every
method of ``CLIPText`` behaves the same whatever the source:

- :class:`OpenClipBackend`: open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa``,
  ``model.encode_text(tokenizer(texts))``.
- :class:`HFBackend`: transformers CLIP / SigLIP,
  ``model.get_text_features(**tokenizer(texts, padding=...))``.

:func:`backend_for` picks the adapter for a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision_lens.text.sources import hf_text_kind, hf_tokenizer

#: A tokenizer: a callable ``list[str] ->`` token-id tensor, or (Hugging Face) a mapping with
#: ``input_ids`` and optionally ``attention_mask``, such as a transformers ``BatchEncoding``.
Tokenizer = Callable[..., Tensor | Mapping[str, Any]]


class OpenClipBackend:
    """open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa``: ``encode_text(tokenizer(texts))``.

    Example:
        >>> import open_clip
        >>> backend = OpenClipBackend(open_clip.create_model("ViT-B-32"))  # doctest: +SKIP
    """

    source: Literal["open_clip"] = "open_clip"
    tokenizer_hint = "Pass the model's tokenizer: open_clip.get_tokenizer(model_name)."
    #: open_clip tokenizers pad every sequence to exactly the context length.
    exact_length = True

    def __init__(self, model: nn.Module):
        text_tower_of(model)  # validate before CLIPText registers it

    @staticmethod
    def tower(model: nn.Module) -> nn.Module:
        """The module holding the text transformer (see :func:`text_tower_of`)."""
        return text_tower_of(model)

    def default_tokenizer(self, model: nn.Module) -> Callable[..., Tensor]:
        """open_clip's CLIP BPE tokenizer for ``model`` (see :func:`clip_bpe_tokenizer`)."""
        return clip_bpe_tokenizer(model)

    def context_length(self, model: nn.Module) -> int | None:
        """The text tower's ``context_length`` (``None`` if it has none)."""
        return getattr(self.tower(model), "context_length", None)

    def token_embedding(self, model: nn.Module) -> nn.Embedding | None:
        """The text tower's token embedding (``None`` for a tower of another kind)."""
        embedding = getattr(self.tower(model), "token_embedding", None)
        return embedding if isinstance(embedding, nn.Embedding) else None

    @staticmethod
    def tokenize(
        tokenizer: Tokenizer, texts: list[str], context_length: int | None
    ) -> dict[str, Any]:
        """``{"input_ids": tokenizer(texts)}``."""
        return {"input_ids": tokenizer(texts)}

    @staticmethod
    def encode(model: nn.Module, inputs: Mapping[str, Tensor], normalize: bool) -> Tensor:
        """``model.encode_text(input_ids, normalize=normalize)``."""
        return model.encode_text(inputs["input_ids"], normalize=normalize)

    @staticmethod
    def logit_param(model: nn.Module, name: str) -> Tensor | None:
        """``model.logit_scale`` / ``model.logit_bias`` (``None`` when absent)."""
        param = getattr(model, name, None)
        return param if isinstance(param, Tensor) else None

    def embed_width(self, model: nn.Module, tokenizer: Tokenizer) -> int:
        """Width of the text features (read from the projection, else measured)."""
        tower = self.tower(model)
        projection = getattr(tower, "text_projection", None)
        if isinstance(projection, nn.Linear):
            return projection.out_features
        if isinstance(projection, Tensor):
            return int(projection.shape[-1])
        for attr in ("output_dim", "embed_dim"):
            width = getattr(tower, attr, None)
            if isinstance(width, int):
                return width
        if projection is None and hasattr(tower, "transformer"):
            width = getattr(tower.transformer, "width", None)
            if isinstance(width, int):
                return width
        with torch.no_grad():  # last resort: measure it
            device = next(model.parameters()).device
            return int(model.encode_text(tokenizer([""]).to(device)).shape[-1])


class HFBackend:
    """transformers CLIP / SigLIP: ``get_text_features(**tokenizer(texts, padding=...))``.

    Args:
        model: A model of one of the classes in :data:`~vision_lens.text.HF_TEXT_CLASSES`.
        padding: Passed to a transformers tokenizer; ``None`` chooses ``"max_length"`` for
            SigLIP (trained on sequences padded to its full context length) and ``True`` for
            CLIP.

    Example:
        >>> from transformers import CLIPConfig, CLIPModel
        >>> HFBackend(CLIPModel(CLIPConfig()), None).padding  # doctest: +SKIP
        True
    """

    source: Literal["hf"] = "hf"
    tokenizer_hint = (
        "Pass the model's tokenizer: CLIPText.from_hf(model, "
        "tokenizer=transformers.AutoTokenizer.from_pretrained(name_or_path))."
    )
    #: transformers tokenizers may pad to the longest text, below the context length.
    exact_length = False

    def __init__(self, model: nn.Module, padding: bool | str | None):
        self.kind = hf_text_kind(model)
        siglip = self.kind.startswith("Siglip")
        self.padding = padding if padding is not None else ("max_length" if siglip else True)

    @staticmethod
    def tower(model: nn.Module) -> nn.Module:
        """``model.text_model``, or ``model`` itself where it is the text transformer."""
        # CLIPModel / CLIPTextModelWithProjection / SiglipModel: ``.text_model``; a
        # transformers 5 SiglipTextModel is the text transformer itself.
        text_model = getattr(model, "text_model", None)
        return text_model if isinstance(text_model, nn.Module) else model

    def default_tokenizer(self, model: nn.Module) -> Tokenizer:
        """The tokenizer saved with the model (``config._name_or_path``)."""
        name = getattr(model.config, "_name_or_path", "") or ""
        if not name:
            raise ValueError(
                f"No tokenizer given for this {type(model).__name__}, and it was not loaded with "
                f"from_pretrained (config._name_or_path is empty). {self.tokenizer_hint}"
            )
        return hf_tokenizer(name)

    @staticmethod
    def context_length(model: nn.Module) -> int | None:
        """The text config's ``max_position_embeddings``."""
        config = getattr(model.config, "text_config", None) or model.config
        length = getattr(config, "max_position_embeddings", None)
        return length if isinstance(length, int) else None

    def token_embedding(self, model: nn.Module) -> nn.Embedding | None:
        """``tower.embeddings.token_embedding`` (``None`` when absent)."""
        embeddings = getattr(self.tower(model), "embeddings", None)
        embedding = getattr(embeddings, "token_embedding", None)
        return embedding if isinstance(embedding, nn.Embedding) else None

    def tokenize(
        self, tokenizer: Tokenizer, texts: list[str], context_length: int | None
    ) -> dict[str, Any]:
        """Call the tokenizer (a transformers one with padding and truncation) and return its
        ``input_ids`` (and ``attention_mask``) as tensors."""
        if is_hf_tokenizer(tokenizer):
            kwargs: dict[str, Any] = {
                "padding": self.padding,
                "truncation": True,
                "return_tensors": "pt",
            }
            if context_length is not None:
                kwargs["max_length"] = context_length
            encoded = tokenizer(texts, **kwargs)
        else:
            encoded = tokenizer(texts)
        if isinstance(encoded, Tensor):
            return {"input_ids": encoded}
        if isinstance(encoded, Mapping) and "input_ids" in encoded:
            keys = ("input_ids", "attention_mask")
            return {k: _as_tensor(encoded[k]) for k in keys if encoded.get(k) is not None}
        raise TypeError(
            "The tokenizer must return an input-id tensor or a mapping with 'input_ids' (a "
            f"transformers BatchEncoding); it returned {type(encoded).__name__}. "
            f"{self.tokenizer_hint}"
        )

    def encode(self, model: nn.Module, inputs: Mapping[str, Tensor], normalize: bool) -> Tensor:
        """The output :data:`~vision_lens.text.HF_TEXT_CLASSES` names for the model's class."""
        if self.kind in ("CLIPModel", "SiglipModel"):
            out = model.get_text_features(**inputs)
        else:
            out = model(**inputs)
        if not isinstance(out, Tensor):  # transformers 5 returns a model output
            field = "text_embeds" if self.kind == "CLIPTextModelWithProjection" else "pooler_output"
            out = getattr(out, field)
        return F.normalize(out, dim=-1) if normalize else out

    @staticmethod
    def logit_param(model: nn.Module, name: str) -> Tensor | None:
        """``model.logit_scale`` / ``model.logit_bias`` (``None`` for the text-only classes)."""
        param = getattr(model, name, None)
        return param if isinstance(param, Tensor) else None

    def embed_width(self, model: nn.Module, tokenizer: Tokenizer) -> int:
        """Width of the text features (read from the projection or head, else measured)."""
        projection = getattr(model, "text_projection", None)  # CLIP
        if isinstance(projection, nn.Linear):
            return projection.out_features
        head = getattr(self.tower(model), "head", None)  # SigLIP
        if isinstance(head, nn.Linear):
            return head.out_features
        with torch.no_grad():  # last resort: measure it
            inputs = self.tokenize(tokenizer, [""], self.context_length(model))
            device = next(model.parameters()).device
            inputs = {k: v.to(device) for k, v in inputs.items()}
            return int(self.encode(model, inputs, normalize=False).shape[-1])


def backend_for(model: nn.Module, padding: bool | str | None = None) -> OpenClipBackend | HFBackend:
    """The adapter for ``model``: :class:`HFBackend` for a transformers model, else
    :class:`OpenClipBackend`.

    Raises:
        TypeError: ``padding`` given for an open_clip model, or ``model`` has no open_clip text
            tower (see :func:`text_tower_of`).
        UnsupportedModelError: A transformers model without a supported text tower.

    Example:
        >>> backend_for(torch.nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        TypeError: CLIPText needs an open_clip CLIP model with a text tower ...
    """
    if is_hf_model(model):
        return HFBackend(model, padding)
    if padding is not None:
        raise TypeError("padding= applies to Hugging Face models only.")
    return OpenClipBackend(model)


def text_tower_of(model: object) -> nn.Module:
    """The module holding an open_clip model's text transformer.

    ``model`` itself for ``CLIP`` (its text modules live on the model), ``model.text`` for
    ``CustomTextCLIP`` and ``CoCa``.

    Raises:
        TypeError: ``model`` is not an open_clip model with a text tower (an image tower is
            named as such).

    Example:
        >>> text_tower_of(torch.nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        TypeError: CLIPText needs an open_clip CLIP model with a text tower ...
    """
    if not isinstance(model, nn.Module) or not callable(getattr(model, "encode_text", None)):
        hint = ""
        if hasattr(model, "encode_image") or type(model).__name__ in {
            "VisionTransformer",
            "HookedViT",
        }:
            hint = " It looks like an image tower; pass the full CLIP model instead."
        raise TypeError(
            f"CLIPText needs an open_clip CLIP model with a text tower (CLIP, CustomTextCLIP or "
            f"CoCa, from open_clip.create_model(...)) or a transformers CLIP/SigLIP model "
            f"(CLIPText.from_hf), got {type(model).__name__}.{hint}"
        )
    text = getattr(model, "text", None)
    if isinstance(text, nn.Module):  # CustomTextCLIP, CoCa
        return text
    if isinstance(getattr(model, "token_embedding", None), nn.Module) and isinstance(
        getattr(model, "transformer", None), nn.Module
    ):  # CLIP: the text tower's modules live on the model itself
        return model
    raise TypeError(
        f"{type(model).__name__} has encode_text but no open_clip text tower (neither .text nor "
        ".token_embedding/.transformer); was its text tower removed? Create the model with "
        "open_clip.create_model(...)."
    )


def clip_bpe_tokenizer(model: nn.Module) -> Callable[..., Tensor]:
    """open_clip's CLIP BPE tokenizer (``SimpleTokenizer``) at ``model``'s context length.

    Right for every open_clip model with the standard 49408-token CLIP vocabulary.

    Raises:
        ValueError: The model uses another vocabulary (SigLIP, multilingual, ...) or its text
            tower has no token embedding or context length: its own tokenizer must be passed.

    Example:
        >>> import open_clip
        >>> clip_bpe_tokenizer(open_clip.create_model("ViT-B-32")).vocab_size  # doctest: +SKIP
        49408
    """
    from open_clip import SimpleTokenizer

    tower = text_tower_of(model)
    embedding = getattr(tower, "token_embedding", None)
    context_length = getattr(tower, "context_length", None)
    fix = (
        "Pass the model's tokenizer: CLIPText.from_open_clip_model(model, "
        "tokenizer=open_clip.get_tokenizer(model_name))."
    )
    if not isinstance(embedding, nn.Embedding) or not context_length:
        raise ValueError(
            f"Cannot choose a tokenizer for {type(model).__name__} with a "
            f"{type(tower).__name__} text tower. {fix}"
        )
    tokenizer = SimpleTokenizer(context_length=context_length)
    if embedding.num_embeddings != tokenizer.vocab_size:
        raise ValueError(
            f"The model's vocabulary has {embedding.num_embeddings} tokens, but open_clip's CLIP "
            f"tokenizer has {tokenizer.vocab_size}, so the model uses another tokenizer (SigLIP, "
            f"multilingual, ...). {fix}"
        )
    return tokenizer


def is_hf_model(model: object) -> bool:
    """Whether ``model`` is a transformers model (checked without importing transformers).

    Example:
        >>> is_hf_model(torch.nn.Linear(2, 2))
        False
    """
    return isinstance(model, nn.Module) and any(
        c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
        for c in type(model).__mro__
    )


def is_hf_tokenizer(tokenizer: object) -> bool:
    """Whether ``tokenizer`` is a transformers tokenizer (checked without importing it).

    Example:
        >>> is_hf_tokenizer(str.split)
        False
    """
    return any(
        c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedTokenizerBase"
        for c in type(tokenizer).__mro__
    )


def _as_tensor(value: object) -> Tensor | object:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError):
        return value  # ragged or odd: check_tokens names the problem


__all__ = [
    "HFBackend",
    "OpenClipBackend",
    "Tokenizer",
    "backend_for",
    "clip_bpe_tokenizer",
    "is_hf_model",
    "is_hf_tokenizer",
    "text_tower_of",
]
