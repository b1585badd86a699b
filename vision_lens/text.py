"""CLIPText: the text side of a CLIP or SigLIP model, for zero-shot directions and probes.

Text embeddings are what make a CLIP image embedding interpretable: a class's zero-shot weight, or
any phrase's embedding, is a direction in the image embedding space that image features, heads and
neurons can be projected onto. :class:`CLIPText` wraps a text tower and its tokenizer and computes
exactly what the source library computes, batched and without gradients:

- open_clip ``CLIP`` / ``CustomTextCLIP`` (SigLIP included) / ``CoCa``:
  ``model.encode_text(tokenizer(texts))`` (:meth:`CLIPText.from_open_clip`,
  :meth:`CLIPText.from_open_clip_model`).
- Hugging Face ``transformers`` ``CLIPModel``, ``CLIPTextModelWithProjection``, ``SiglipModel``,
  ``SiglipTextModel``: ``get_text_features(**tokenizer(texts, padding=...))``
  (:meth:`CLIPText.from_hf`).

Both kinds of model go through one small adapter (tokenize, encode, logit parameters), so every
method of :class:`CLIPText` behaves the same whatever the source.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.loading.open_clip import UnsupportedModelError

#: A zero-shot prompt template: a format string with a ``"{}"`` placeholder for the class name
#: (``"a photo of a {}."``) or a callable ``classname -> prompt`` (as in open_clip's templates).
Template = str | Callable[[str], str]

_TEMPLATE_KINDS = ("openai", "simple")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".npy")

#: transformers classes :meth:`CLIPText.from_hf` accepts -> the output ``encode`` reproduces.
HF_TEXT_CLASSES = {
    "CLIPModel": "get_text_features",
    "CLIPTextModelWithProjection": "text_embeds",
    "SiglipModel": "get_text_features",
    "SiglipTextModel": "pooler_output",
}

# config.model_type -> class to load when a saved config names no supported architecture.
_HF_CLASS_FOR_MODEL_TYPE = {
    "clip": "CLIPModel",
    "clip_text_model": "CLIPTextModelWithProjection",
    "siglip": "SiglipModel",
    "siglip_text_model": "SiglipTextModel",
}


# ---------------------------------------------------------------------------------------------
# ImageNet metadata
# ---------------------------------------------------------------------------------------------
def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names used for CLIP zero-shot evaluation.

    These are open_clip's ``IMAGENET_CLASSNAMES`` (the cleaned-up names from the OpenAI CLIP
    notebook, in ImageNet class-index order).

    Returns:
        A new list of 1000 strings (safe to modify).

    Example:
        >>> names = imagenet_classnames()
        >>> len(names), names[0]
        (1000, 'tench')
    """
    from open_clip import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet_templates(kind: Literal["openai", "simple"] = "openai") -> list[Callable[[str], str]]:
    """open_clip's ImageNet zero-shot prompt templates.

    Args:
        kind: ``"openai"`` for the 80 templates of the CLIP paper (``OPENAI_IMAGENET_TEMPLATES``)
            or ``"simple"`` for open_clip's 7-template subset (``SIMPLE_IMAGENET_TEMPLATES``).

    Returns:
        A new list of callables ``classname -> prompt``.

    Raises:
        ValueError: ``kind`` is neither ``"openai"`` nor ``"simple"``.

    Example:
        >>> templates = imagenet_templates("simple")
        >>> len(templates), templates[0]("dog")
        (7, 'itap of a dog.')
    """
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if kind == "openai":
        return list(OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return list(SIMPLE_IMAGENET_TEMPLATES)
    raise ValueError(f"Unknown template kind {kind!r}; use one of {list(_TEMPLATE_KINDS)}.")


# ---------------------------------------------------------------------------------------------
# CLIPText
# ---------------------------------------------------------------------------------------------
class CLIPText(nn.Module):
    """The text side of a CLIP or SigLIP model (open_clip or Hugging Face), with its tokenizer.

    ``encode(texts)`` returns exactly the source library's text features (normalised by
    default), computed in batches under ``torch.no_grad()``, on the model's device and in its
    dtype: open_clip's ``model.encode_text(tokenizer(texts))``, or transformers'
    ``model.get_text_features(**tokenizer(texts, padding=..., return_tensors="pt"))``.
    ``zero_shot_weights(classnames, templates)`` builds a zero-shot classifier as open_clip's
    ``build_zero_shot_classifier`` does (transposed: one row per class). :meth:`classify` gives
    the model's logits and :meth:`probabilities` its class probabilities: softmax for CLIP,
    sigmoid for SigLIP (models with a ``logit_bias``, trained with the sigmoid loss).

    Attributes:
        model: The wrapped model: an open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` or a
            transformers ``CLIPModel`` / ``CLIPTextModelWithProjection`` / ``SiglipModel`` /
            ``SiglipTextModel``. Models created by :meth:`from_open_clip` and :meth:`from_hf`
            from a name or path have their image tower dropped; a model passed in is held by
            reference, unchanged except that it is put in eval mode.
        tokenizer: For open_clip, a callable ``list[str] -> LongTensor [n, context_length]``.
            For Hugging Face, a transformers tokenizer (called with ``padding``,
            ``truncation=True``, ``max_length=context_length``, ``return_tensors="pt"``) or any
            callable ``list[str] ->`` input-id tensor or mapping with ``input_ids`` (and
            optionally ``attention_mask``).
        source: ``"open_clip"`` or ``"hf"``.
        d_embed: Width of the text (= image) embedding space.

    Example:
        >>> text = CLIPText.from_open_clip("ViT-B-32", "openai")  # doctest: +SKIP
        >>> emb = text.encode(["a photo of a dog", "a photo of a cat"])  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        torch.Size([2, 512])
        >>> weights = text.zero_shot_weights(imagenet_classnames(), imagenet_templates())
        ... # doctest: +SKIP
        >>> logits = text.classify(image_embeds, weights)  # [n_images, 1000]  # doctest: +SKIP
        >>> siglip = CLIPText.from_hf("google/siglip-base-patch16-224")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., Any] | None = None,
        *,
        padding: bool | str | None = None,
    ):
        """Wrap an already built open_clip or transformers model.

        See :meth:`from_open_clip_model` and :meth:`from_hf`; ``padding`` applies to Hugging
        Face models only.
        """
        super().__init__()
        if _is_hf_model(model):
            backend: _OpenClipBackend | _HFBackend = _HFBackend(model, padding)
        else:
            if padding is not None:
                raise TypeError("padding= applies to Hugging Face models only.")
            backend = _OpenClipBackend(model)
        self._backend = backend
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else backend.default_tokenizer(model)
        if not callable(self.tokenizer):
            raise TypeError(
                f"tokenizer must be callable (list[str] -> token ids), got "
                f"{type(self.tokenizer).__name__}. {backend.tokenizer_hint}"
            )
        self.d_embed: int = backend.embed_width(model, self.tokenizer)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_open_clip(
        cls,
        model_name: str,
        pretrained: str | os.PathLike | None = None,
        *,
        tokenizer: Callable[..., Tensor] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | None = None,
    ) -> CLIPText:
        """Create an open_clip model's text side by name, with open_clip's tokenizer for it.

        The model is built with ``open_clip.create_model`` on the CPU, its image tower (and a CoCa
        model's text decoder) is dropped, as ``encode_text`` never uses it, and only then is the
        model moved to ``device``/``dtype``. SigLIP models (``"ViT-B-16-SigLIP"``, ...) work the
        same way; their tokenizer is a Hugging Face tokenizer that open_clip downloads on first
        use, so offline pass ``tokenizer=`` yourself.

        Args:
            model_name: An open_clip architecture name (``"ViT-B-32"``, ``"ViT-L-14-quickgelu"``,
                ``"ViT-B-16-SigLIP"``) or an ``"hf-hub:org/repo"`` / ``"local-dir:/path"``
                identifier.
            pretrained: An open_clip pretrained tag (e.g. ``"openai"``, ``"laion2b_s34b_b79k"``;
                downloaded on first use), a local checkpoint file (loaded by open_clip itself:
                ``.safetensors`` via safetensors, anything else via ``torch.load`` with
                ``weights_only=True``; it must hold the full CLIP state dict), or ``None`` for
                random weights. A known tag takes precedence over a file of the same name.
            tokenizer: The tokenizer to use instead of ``open_clip.get_tokenizer(model_name)``.
            device: Where to put the model (default CPU).
            dtype: Parameter dtype (default: open_clip's, float32).
            cache_dir: open_clip's download cache directory.

        Returns:
            The text side, in eval mode.

        Raises:
            ValueError: Unknown ``model_name`` or ``pretrained`` tag, or ``pretrained`` given
                together with an ``hf-hub:``/``local-dir:`` name (those carry their own weights).
            FileNotFoundError: ``pretrained`` looks like a path but no such file exists.
            OSError: open_clip's tokenizer for the model cannot be loaded (a Hugging Face
                tokenizer, offline): pass ``tokenizer=``.

        Example:
            >>> text = CLIPText.from_open_clip("ViT-B-32")  # random weights  # doctest: +SKIP
            >>> text = CLIPText.from_open_clip("ViT-B-32", "/ckpts/epoch_32.pt")  # doctest: +SKIP
            >>> siglip = CLIPText.from_open_clip("ViT-B-16-SigLIP", "webli")  # doctest: +SKIP
            >>> siglip.logit_bias, siglip.uses_sigmoid  # doctest: +SKIP
            (-12.9, True)
        """
        import open_clip

        pretrained = _check_open_clip_source(model_name, pretrained)
        if tokenizer is None:
            tokenizer = _open_clip_tokenizer(model_name, cache_dir=cache_dir)
        model = open_clip.create_model(
            model_name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
        )
        # encode_text (CLIP, CustomTextCLIP, CoCa) never touches the image tower, nor CoCa's
        # captioning decoder: drop them to save memory.
        model.visual = None
        if isinstance(getattr(model, "text_decoder", None), nn.Module):
            model.text_decoder = None
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return cls(model, tokenizer)

    @classmethod
    def from_open_clip_model(
        cls, model: nn.Module, tokenizer: Callable[..., Tensor] | None = None
    ) -> CLIPText:
        """Wrap an already built open_clip ``CLIP`` / ``CustomTextCLIP`` (held by reference).

        The model is not copied (its image tower is kept) and is put in eval mode; ``.to()`` on
        the returned module moves the whole model.

        Args:
            model: The open_clip model, e.g. from ``open_clip.create_model(...)``.
            tokenizer: Its tokenizer, normally ``open_clip.get_tokenizer(model_name)``. By default
                open_clip's CLIP BPE tokenizer (``SimpleTokenizer``) with the model's context
                length, which is right for every model with the standard 49408-token CLIP
                vocabulary; other models (SigLIP, Hugging Face text towers) need theirs passed.

        Returns:
            The text side.

        Raises:
            TypeError: ``model`` is not an open_clip model with a text tower.
            ValueError: No ``tokenizer`` given and the model does not use the CLIP tokenizer.

        Example:
            >>> import open_clip
            >>> clip = open_clip.create_model("ViT-B-32")  # doctest: +SKIP
            >>> text = CLIPText.from_open_clip_model(clip)  # doctest: +SKIP
        """
        return cls(model, tokenizer)

    @classmethod
    def from_hf(
        cls,
        name_or_path_or_model: str | os.PathLike | nn.Module,
        tokenizer: Callable[..., Any] | None = None,
        *,
        padding: bool | str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **from_pretrained_kwargs: Any,
    ) -> CLIPText:
        """The text side of a Hugging Face ``transformers`` CLIP or SigLIP model.

        ``encode(texts)`` equals ``get_text_features(**tokenizer(texts, padding=padding,
        return_tensors="pt"))`` for ``CLIPModel`` and ``SiglipModel``, ``text_embeds`` for
        ``CLIPTextModelWithProjection`` and ``pooler_output`` for ``SiglipTextModel`` (see
        :data:`HF_TEXT_CLASSES`), normalised by default. ``logit_scale``/``logit_bias`` are the
        model's (``CLIPModel.logit_scale``; ``SiglipModel.logit_scale`` and ``logit_bias``); the
        text-only classes carry neither, so :meth:`classify` needs the full model.

        With a name or path the class is chosen from the saved config (its ``architectures``
        entry, else its ``model_type``), the weights are read with ``from_pretrained``
        (safetensors where available; never ``trust_remote_code``), the image tower is dropped,
        and the tokenizer is ``AutoTokenizer.from_pretrained`` of the same name or path. A built
        model is held by reference; its tokenizer is loaded from ``config._name_or_path`` when
        that is set (a model from ``from_pretrained``), else it must be passed.

        Args:
            name_or_path_or_model: A hub id, a local ``save_pretrained`` directory, or a built
                model of one of the classes in :data:`HF_TEXT_CLASSES`.
            tokenizer: A transformers tokenizer, or any callable ``list[str] ->`` input-id
                tensor / mapping with ``input_ids`` (default: loaded as described above).
            padding: Passed to a transformers tokenizer. Default: ``"max_length"`` for SigLIP
                (it was trained on sequences padded to its full context length; other padding
                changes its embeddings), ``True`` (pad to the longest text in the batch) for
                CLIP, whose causal mask and end-of-text pooling make padding irrelevant.
            device: Where to put the model (default: where it is; CPU when loaded).
            dtype: Parameter dtype (default: the model's).
            **from_pretrained_kwargs: Passed to ``from_pretrained`` (``revision``,
                ``cache_dir``, ``torch_dtype``, ...).

        Returns:
            The text side, in eval mode.

        Raises:
            UnsupportedModelError: The model (or the checkpoint's architecture) has no text
                tower CLIPText supports, e.g. a ``Dinov2Model`` or a ``CLIPVisionModel``.
            ValueError: No tokenizer given and none can be loaded for a built model.
            OSError: The tokenizer of a name or path cannot be loaded (pass ``tokenizer=``).

        Example:
            >>> text = CLIPText.from_hf("openai/clip-vit-base-patch32")  # doctest: +SKIP
            >>> siglip = CLIPText.from_hf("google/siglip-base-patch16-224")  # doctest: +SKIP
            >>> from transformers import Dinov2Config, Dinov2Model
            >>> CLIPText.from_hf(Dinov2Model(Dinov2Config(hidden_size=8, num_hidden_layers=1,
            ...                                           num_attention_heads=2)))
            Traceback (most recent call last):
            ...
            vision_lens.loading.open_clip.UnsupportedModelError: Dinov2Model has no text tower ...
        """
        if isinstance(name_or_path_or_model, nn.Module):
            if from_pretrained_kwargs:
                raise TypeError(
                    f"from_pretrained arguments {sorted(from_pretrained_kwargs)} need a name or "
                    "path, not a built model."
                )
            model = name_or_path_or_model
            _hf_text_kind(model)  # refuse a text-less model before looking for a tokenizer
        else:
            path = os.fspath(name_or_path_or_model)
            model = _load_hf_model(path, text_only=True, **from_pretrained_kwargs)
            _drop_hf_image_tower(model)
            if tokenizer is None:
                tokenizer = _hf_tokenizer(path, **from_pretrained_kwargs)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return cls(model, tokenizer, padding=padding)

    # ------------------------------------------------------------------ properties
    @property
    def source(self) -> Literal["open_clip", "hf"]:
        """The library of the wrapped model: ``"open_clip"`` or ``"hf"``."""
        return self._backend.source

    @property
    def device(self) -> torch.device:
        """Device of the text tower's parameters."""
        return self._first_param().device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the text tower's parameters."""
        return self._first_param().dtype

    @property
    def context_length(self) -> int | None:
        """Number of token positions the text tower reads (``None`` if it does not say)."""
        return self._backend.context_length(self.model)

    @property
    def logit_scale(self) -> float:
        """The trained temperature, ``exp(model.logit_scale)`` (100 for OpenAI CLIP).

        Raises:
            ValueError: The model has no ``logit_scale`` (a Hugging Face text-only class; the
                parameter lives on the full ``CLIPModel``/``SiglipModel``).
        """
        param = self._backend.logit_param(self.model, "logit_scale")
        if param is None:
            raise ValueError(
                f"{type(self.model).__name__} has no logit_scale; it belongs to the full model "
                "(CLIPModel / SiglipModel): wrap that one to classify."
            )
        return float(param.detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        """The learned logit bias of SigLIP-style models, ``None`` for CLIP."""
        bias = self._backend.logit_param(self.model, "logit_bias")
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    @property
    def uses_sigmoid(self) -> bool:
        """Whether class probabilities are ``sigmoid(logits)`` (SigLIP: the model has a
        ``logit_bias``) rather than ``softmax(logits)`` (CLIP)."""
        return self._backend.logit_param(self.model, "logit_bias") is not None

    def extra_repr(self) -> str:
        return (
            f"source={self.source}, d_embed={self.d_embed}, context_length={self.context_length}, "
            f"tokenizer={type(self.tokenizer).__name__}"
        )

    # ------------------------------------------------------------------ encoding
    def forward(
        self, texts: str | Sequence[str], normalize: bool = True
    ) -> Float[Tensor, "n_text d_embed"]:
        """Same as :meth:`encode` (without progress bar)."""
        return self.encode(texts, normalize=normalize)

    def encode(
        self,
        texts: str | Sequence[str],
        normalize: bool = True,
        batch_size: int = 256,
        progress: bool = False,
    ) -> Float[Tensor, "n_text d_embed"]:
        """Embed texts with the text tower.

        Equal to open_clip's ``model.encode_text(tokenizer(texts), normalize=normalize)``, or to
        transformers' ``get_text_features(**tokenizer(texts, padding=..., return_tensors="pt"))``
        (normalised when ``normalize``); texts longer than the context length are truncated by
        the tokenizer.

        Args:
            texts: One string (-> one row) or a sequence of strings.
            normalize: Return unit-norm embeddings (as used for zero-shot classification);
                ``False`` gives the raw projected text features.
            batch_size: Texts per forward pass.
            progress: Show a tqdm progress bar.

        Returns:
            ``[n_text, d_embed]`` on the model's device, in its dtype, without gradient history
            (computed under ``torch.no_grad()``; the result can be used in later autograd).

        Raises:
            ValueError: ``texts`` is empty, or ``batch_size`` is not a positive integer.
            TypeError: ``texts`` is not a string or a sequence of strings (the first offending
                index is named).

        Example:
            >>> emb = text.encode(["a photo of a dog", "a photo of a cat"])  # doctest: +SKIP
            >>> emb.shape, emb.norm(dim=-1)  # doctest: +SKIP
            (torch.Size([2, 512]), tensor([1.0000, 1.0000]))
        """
        texts = _as_text_list(texts)
        _check_batch_size(batch_size)
        chunks = []
        with torch.no_grad(), _progress_bar(progress, len(texts), "encoding texts") as bar:
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                chunks.append(self._encode_batch(batch, normalize))
                bar.update(len(batch))
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def zero_shot_weights(
        self,
        classnames: str | Sequence[str],
        templates: Template | Sequence[Template],
        progress: bool = False,
        batch_size: int = 256,
    ) -> Float[Tensor, "n_classes d_embed"]:
        """Zero-shot classifier weights: per class, the renormalised mean template embedding.

        For each class, every template is filled with the class name and encoded (normalised);
        the class weight is the mean of these embeddings, divided by its norm. This is open_clip's
        ``build_zero_shot_classifier(...)`` transposed. All ``n_classes * n_templates`` prompts are
        encoded in batches of ``batch_size``, regardless of class boundaries.

        Args:
            classnames: Class names (a single string is one class).
            templates: Format strings with a ``"{}"`` placeholder (``"a photo of a {}."``) and/or
                callables ``classname -> prompt`` such as :func:`imagenet_templates`; a single
                template is accepted too.
            progress: Show a tqdm progress bar (over prompts).
            batch_size: Prompts per forward pass.

        Returns:
            ``[n_classes, d_embed]`` unit-norm rows, on the model's device and in its dtype.

        Raises:
            ValueError: No class names or no templates, or a string template without a ``"{}"``
                placeholder.
            TypeError: A class name is not a string, a template is neither a string nor callable,
                or a callable template does not return a string.

        Example:
            >>> weights = text.zero_shot_weights(["dog", "cat"], ["a photo of a {}."])
            ... # doctest: +SKIP
            >>> weights = text.zero_shot_weights(imagenet_classnames(), imagenet_templates())
            ... # doctest: +SKIP
            >>> weights.shape  # doctest: +SKIP
            torch.Size([1000, 512])
        """
        classnames = _as_text_list(classnames, what="class name")
        templates = _check_templates(templates)
        _check_batch_size(batch_size)
        n_classes, n_templates = len(classnames), len(templates)
        prompts = [_fill(t, i, c) for c in classnames for i, t in enumerate(templates)]

        sums: Tensor | None = None
        with torch.no_grad(), _progress_bar(progress, len(prompts), "zero-shot prompts") as bar:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start : start + batch_size]
                emb = self._encode_batch(batch, normalize=True)
                if sums is None:
                    sums = emb.new_zeros(n_classes, emb.shape[-1], dtype=torch.float32)
                class_idx = torch.arange(start, start + len(batch), device=emb.device)
                sums.index_add_(0, class_idx // n_templates, emb.float())
                bar.update(len(batch))
            assert sums is not None
            mean = sums / n_templates
            weights = mean / mean.norm(dim=-1, keepdim=True)
        return weights.to(emb.dtype)

    # ------------------------------------------------------------------ scoring
    @staticmethod
    def similarity(
        image_embeds: Float[Tensor, "n_images d_embed"],
        text_embeds: Float[Tensor, "n_text d_embed"],
        normalize: bool = True,
    ) -> Float[Tensor, "n_images n_text"]:
        """Cosine similarity between image and text embeddings.

        The plain cosine (``normalize=True``) or dot product: no temperature and no bias. The
        model's logits, ``logit_scale * cosine (+ logit_bias for SigLIP)``, are
        :meth:`classify`; its probabilities :meth:`probabilities`.

        Args:
            image_embeds: ``[n_images, d_embed]`` (or one ``[d_embed]`` vector), e.g. from
                ``HookedViT``.
            text_embeds: ``[n_text, d_embed]`` (or one ``[d_embed]`` vector), e.g. from
                :meth:`encode` or :meth:`zero_shot_weights`; moved to the image embeddings'
                device.
            normalize: Normalise both sides first (cosine similarity); ``False`` gives the plain
                dot product, e.g. for embeddings that are already unit norm or for direct-effect
                contributions that must stay additive.

        Returns:
            ``[n_images, n_text]``.

        Raises:
            TypeError: An input is not a tensor.
            ValueError: An input is not 1-D or 2-D, or the embedding widths differ.

        Example:
            >>> CLIPText.similarity(torch.ones(2, 4), torch.eye(4)).shape
            torch.Size([2, 4])
        """
        image_embeds = _as_matrix(image_embeds, "image_embeds")
        text_embeds = _as_matrix(text_embeds, "text_embeds")
        if image_embeds.shape[-1] != text_embeds.shape[-1]:
            raise ValueError(
                f"image embeddings have width {image_embeds.shape[-1]} but text embeddings have "
                f"width {text_embeds.shape[-1]}: were they produced by the same CLIP model?"
            )
        dtype = torch.promote_types(image_embeds.dtype, text_embeds.dtype)
        image_embeds = image_embeds.to(dtype)
        text_embeds = text_embeds.to(device=image_embeds.device, dtype=dtype)
        if normalize:
            image_embeds = F.normalize(image_embeds, dim=-1)
            text_embeds = F.normalize(text_embeds, dim=-1)
        return image_embeds @ text_embeds.T

    def classify(
        self,
        image_embeds: Float[Tensor, "n_images d_embed"],
        weights: Float[Tensor, "n_classes d_embed"],
    ) -> Float[Tensor, "n_images n_classes"]:
        """Zero-shot logits, as the model computes them.

        ``logit_scale * cos(image, class)``, plus ``logit_bias`` for SigLIP models: open_clip's
        ``get_logits`` and transformers' ``logits_per_image``. These are logits, not
        probabilities: use :meth:`probabilities` for those (softmax over classes for CLIP,
        an independent sigmoid per class for SigLIP). ``argmax`` is the same either way.

        Args:
            image_embeds: ``[n_images, d_embed]`` image embeddings (normalised here).
            weights: ``[n_classes, d_embed]``, e.g. from :meth:`zero_shot_weights` or
                :meth:`encode` (normalised here).

        Returns:
            ``[n_images, n_classes]`` logits on the image embeddings' device.

        Raises:
            ValueError: The widths differ, or the model has no ``logit_scale`` (see
                :attr:`logit_scale`).

        Example:
            >>> weights = text.zero_shot_weights(["dog", "cat"], "a photo of a {}.")
            ... # doctest: +SKIP
            >>> logits = text.classify(hooked_vit(images), weights)  # doctest: +SKIP
        """
        logits = self.logit_scale * self.similarity(image_embeds, weights, normalize=True)
        bias = self.logit_bias
        if bias is not None:
            logits = logits + bias
        return logits

    def probabilities(
        self,
        image_embeds: Float[Tensor, "n_images d_embed"],
        weights: Float[Tensor, "n_classes d_embed"],
    ) -> Float[Tensor, "n_images n_classes"]:
        """Zero-shot class probabilities, with the loss the model was trained with.

        CLIP (contrastive softmax loss): ``softmax(classify(...), dim=-1)``, a distribution over
        the given classes (rows sum to 1). SigLIP (sigmoid loss; models with a ``logit_bias``,
        see :attr:`uses_sigmoid`): ``sigmoid(classify(...))``, an independent probability that
        each text matches the image (rows need not sum to 1), as in transformers' SigLIP
        zero-shot pipeline.

        Args:
            image_embeds: ``[n_images, d_embed]`` image embeddings.
            weights: ``[n_classes, d_embed]`` class or text embeddings.

        Returns:
            ``[n_images, n_classes]`` probabilities in ``[0, 1]``.

        Example:
            >>> probs = text.probabilities(hooked_vit(images), weights)  # doctest: +SKIP
        """
        logits = self.classify(image_embeds, weights)
        return logits.sigmoid() if self.uses_sigmoid else logits.softmax(dim=-1)

    # ------------------------------------------------------------------ internals
    def _encode_batch(self, texts: list[str], normalize: bool) -> Tensor:
        inputs = self._backend.tokenize(self.tokenizer, texts, self.context_length)
        inputs = self._check_tokens(inputs, len(texts))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self._backend.encode(self.model, inputs, normalize)

    def _check_tokens(self, inputs: dict[str, Tensor], n_texts: int) -> dict[str, Tensor]:
        tokens = inputs["input_ids"]
        backend = self._backend
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] != n_texts:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(
                f"The tokenizer must return a LongTensor [n_texts, context_length]; for {n_texts} "
                f"texts it returned {shape}. {backend.tokenizer_hint}"
            )
        embedding = backend.token_embedding(self.model)
        if embedding is None:
            return inputs  # a text tower of another kind: it checks its own inputs
        length, context = tokens.shape[1], self.context_length
        if context is not None and (
            length != context if backend.source == "open_clip" else length > context
        ):
            need = "" if backend.source == "open_clip" else "at most "
            raise ValueError(
                f"The tokenizer produced sequences of {length} tokens but the text tower's "
                f"context length is {context} (it needs {need}{context}). Use the model's "
                f"tokenizer, built with context_length/max_length={context}. "
                f"{backend.tokenizer_hint}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= embedding.num_embeddings):
            raise ValueError(
                f"The tokenizer produced token ids in [{int(tokens.min())}, {int(tokens.max())}] "
                f"but the text tower's vocabulary has {embedding.num_embeddings} entries: is it "
                f"the tokenizer for this model? {backend.tokenizer_hint}"
            )
        return inputs

    def _first_param(self) -> Tensor:
        embedding = self._backend.token_embedding(self.model)
        if embedding is not None:
            return embedding.weight
        for param in self._text_tower.parameters():
            if param.is_floating_point():
                return param
        raise RuntimeError("The text tower has no floating-point parameters.")

    @property
    def _text_tower(self) -> nn.Module:
        # The module holding the text transformer (``model`` itself for open_clip CLIP,
        # ``model.text`` for CustomTextCLIP, ``model.text_model`` for transformers); looked up
        # each time so it follows ``self.model``.
        return self._backend.tower(self.model)


# ---------------------------------------------------------------------------------------------
# adapters: how CLIPText reads each kind of model
# ---------------------------------------------------------------------------------------------
class _OpenClipBackend:
    """open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa``: ``encode_text(tokenizer(texts))``."""

    source: Literal["open_clip"] = "open_clip"
    tokenizer_hint = "Pass the model's tokenizer: open_clip.get_tokenizer(model_name)."

    def __init__(self, model: Any):
        _text_tower_of(model)  # validate before CLIPText registers it

    @staticmethod
    def tower(model: nn.Module) -> nn.Module:
        return _text_tower_of(model)

    def default_tokenizer(self, model: nn.Module) -> Callable[..., Tensor]:
        return _default_tokenizer(model)

    def context_length(self, model: nn.Module) -> int | None:
        return getattr(self.tower(model), "context_length", None)

    def token_embedding(self, model: nn.Module) -> nn.Embedding | None:
        embedding = getattr(self.tower(model), "token_embedding", None)
        return embedding if isinstance(embedding, nn.Embedding) else None

    @staticmethod
    def tokenize(tokenizer: Callable, texts: list[str], context_length: int | None) -> dict:
        return {"input_ids": tokenizer(texts)}

    @staticmethod
    def encode(model: nn.Module, inputs: dict[str, Tensor], normalize: bool) -> Tensor:
        return model.encode_text(inputs["input_ids"], normalize=normalize)

    @staticmethod
    def logit_param(model: nn.Module, name: str) -> Tensor | None:
        param = getattr(model, name, None)
        return param if isinstance(param, Tensor) else None

    def embed_width(self, model: nn.Module, tokenizer: Callable) -> int:
        return _text_embed_width(model, self.tower(model), tokenizer)


class _HFBackend:
    """transformers CLIP / SigLIP: ``get_text_features(**tokenizer(texts, padding=...))``."""

    source: Literal["hf"] = "hf"
    tokenizer_hint = (
        "Pass the model's tokenizer: CLIPText.from_hf(model, "
        "tokenizer=transformers.AutoTokenizer.from_pretrained(name_or_path))."
    )

    def __init__(self, model: nn.Module, padding: bool | str | None):
        self.kind = _hf_text_kind(model)
        siglip = self.kind.startswith("Siglip")
        self.padding = padding if padding is not None else ("max_length" if siglip else True)

    @staticmethod
    def tower(model: nn.Module) -> nn.Module:
        # CLIPModel / CLIPTextModelWithProjection / SiglipModel: ``.text_model``; a
        # transformers 5 SiglipTextModel is the text transformer itself.
        text_model = getattr(model, "text_model", None)
        return text_model if isinstance(text_model, nn.Module) else model

    def default_tokenizer(self, model: nn.Module) -> Callable:
        name = getattr(model.config, "_name_or_path", "") or ""
        if not name:
            raise ValueError(
                f"No tokenizer given for this {type(model).__name__}, and it was not loaded with "
                f"from_pretrained (config._name_or_path is empty). {self.tokenizer_hint}"
            )
        return _hf_tokenizer(name)

    @staticmethod
    def context_length(model: nn.Module) -> int | None:
        config = getattr(model.config, "text_config", None) or model.config
        length = getattr(config, "max_position_embeddings", None)
        return length if isinstance(length, int) else None

    def token_embedding(self, model: nn.Module) -> nn.Embedding | None:
        embeddings = getattr(self.tower(model), "embeddings", None)
        embedding = getattr(embeddings, "token_embedding", None)
        return embedding if isinstance(embedding, nn.Embedding) else None

    def tokenize(
        self, tokenizer: Callable, texts: list[str], context_length: int | None
    ) -> dict[str, Any]:
        if _is_hf_tokenizer(tokenizer):
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

    def encode(self, model: nn.Module, inputs: dict[str, Tensor], normalize: bool) -> Tensor:
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
        param = getattr(model, name, None)
        return param if isinstance(param, Tensor) else None

    def embed_width(self, model: nn.Module, tokenizer: Callable) -> int:
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


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a transformers model (without importing transformers)."""
    return isinstance(model, nn.Module) and any(
        c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
        for c in type(model).__mro__
    )


def _is_hf_tokenizer(tokenizer: Any) -> bool:
    return any(
        c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedTokenizerBase"
        for c in type(tokenizer).__mro__
    )


def _as_tensor(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError):
        return value  # ragged or odd: _check_tokens names the problem


def _hf_supported_text() -> str:
    return ", ".join(f"{name} ({output})" for name, output in HF_TEXT_CLASSES.items())


def _hf_text_kind(model: nn.Module) -> str:
    """The supported class ``model`` is (or derives from), else a clear UnsupportedModelError."""
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


def _hf_class_for(config: Any, what: str, allowed: Sequence[str]) -> type:
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


_HUB_KEYS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _load_hf_model(path: str, *, text_only: bool, **kwargs: Any) -> nn.Module:
    """Load a transformers CLIP/SigLIP checkpoint by hub id or directory (eval mode).

    ``text_only``: any class of :data:`HF_TEXT_CLASSES`; otherwise only the two-tower
    ``CLIPModel`` / ``SiglipModel``.
    """
    from transformers import AutoConfig

    if kwargs.pop("trust_remote_code", False):
        raise ValueError("vision_lens does not run remote code (trust_remote_code=True refused).")
    hub_kwargs = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
    config = AutoConfig.from_pretrained(path, **hub_kwargs)
    allowed = list(HF_TEXT_CLASSES) if text_only else ["CLIPModel", "SiglipModel"]
    cls = _hf_class_for(config, repr(path), allowed)
    if not os.path.isdir(path) or any(n.endswith(".safetensors") for n in os.listdir(path)):
        kwargs.setdefault("use_safetensors", True)  # a hub id: never unpickle a .bin
    return cls.from_pretrained(path, **kwargs).eval()


def _hf_tokenizer(path: str, **kwargs: Any) -> Callable:
    """``AutoTokenizer.from_pretrained(path)``, with a clear error when there is none."""
    from transformers import AutoTokenizer

    hub_kwargs = {k: kwargs[k] for k in _HUB_KEYS if k in kwargs}
    folder = os.path.join(path, hub_kwargs.get("subfolder") or "")
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
        return AutoTokenizer.from_pretrained(path, **hub_kwargs)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise OSError(
            f"Cannot load a tokenizer for {path!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Pass tokenizer= (a transformers "
            "tokenizer, or a callable list[str] -> input ids)."
        ) from err


def _drop_hf_image_tower(model: nn.Module) -> None:
    """Free a CLIPModel's / SiglipModel's image tower: ``get_text_features`` never reads it."""
    for name in ("vision_model", "visual_projection"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, None)


def _open_clip_tokenizer(model_name: str, cache_dir: str | None = None) -> Callable[..., Tensor]:
    """``open_clip.get_tokenizer``, with a clear error when its HF tokenizer is unreachable."""
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


def _text_tower_of(model: Any) -> nn.Module:
    """The module holding the text transformer: ``model`` for CLIP, ``model.text`` otherwise."""
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


def _default_tokenizer(model: nn.Module) -> Callable[..., Tensor]:
    from open_clip import SimpleTokenizer

    tower = _text_tower_of(model)
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


def _text_embed_width(model: nn.Module, tower: nn.Module, tokenizer: Callable) -> int:
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


def _check_open_clip_source(model_name: str, pretrained: Any) -> str | None:
    """Clear errors, before any download or model build, for bad names, tags and paths."""
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


def _as_text_list(texts: Any, what: str = "text") -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, Tensor):
        raise TypeError(
            "Expected a string or a sequence of strings, got a tensor. To embed token ids call "
            "the open_clip model directly: text.model.encode_text(tokens)."
        )
    if not isinstance(texts, Iterable) or isinstance(texts, (bytes, dict)):
        raise TypeError(f"Expected a string or a sequence of strings, got {type(texts).__name__}.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"Got an empty {what} list; pass at least one string.")
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise TypeError(
                f"Every {what} must be a string, but the item at index {i} is "
                f"{type(item).__name__} ({item!r:.50})."
            )
    return texts


def _check_templates(templates: Any) -> list[Template]:
    if isinstance(templates, str) or callable(templates):
        templates = [templates]
    if not isinstance(templates, Iterable):
        raise TypeError(
            f"templates must be a sequence of format strings or callables, got "
            f"{type(templates).__name__}."
        )
    templates = list(templates)
    if not templates:
        raise ValueError(
            "Got an empty template list; pass at least one template, e.g. ['a photo of a {}.'] "
            "or vision_lens.text.imagenet_templates()."
        )
    sentinel = "\x00CLASSNAME\x00"
    for i, template in enumerate(templates):
        if isinstance(template, str):
            try:
                filled = template.format(sentinel)
            except (IndexError, KeyError, ValueError) as err:
                raise ValueError(
                    f"Template {i} ({template!r}) is not a valid format string with one '{{}}' "
                    f"placeholder for the class name ({type(err).__name__}: {err})."
                ) from None
            if sentinel not in filled:
                raise ValueError(
                    f"Template {i} ({template!r}) has no '{{}}' placeholder for the class name; "
                    f"write it like 'a photo of a {{}}.'."
                )
        elif not callable(template):
            raise TypeError(
                f"Template {i} is {type(template).__name__}; templates must be format strings "
                "with '{}' or callables classname -> prompt."
            )
    return templates


def _fill(template: Template, index: int, classname: str) -> str:
    if isinstance(template, str):
        return template.format(classname)
    prompt = template(classname)
    if not isinstance(prompt, str):
        raise TypeError(
            f"Template {index} returned {type(prompt).__name__} for class {classname!r}; a "
            "callable template must return the prompt string."
        )
    return prompt


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")


def _as_matrix(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor [n, d_embed], got {type(x).__name__}.")
    if x.ndim == 1:
        return x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be [n, d_embed] (or one [d_embed] vector), got shape {tuple(x.shape)}."
        )
    return x


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="text")
