"""CLIPText: the text side of an open_clip CLIP model, for zero-shot directions and probes.

Text embeddings are what make a CLIP image embedding interpretable: a class's zero-shot weight, or
any phrase's embedding, is a direction in the image embedding space that image features, heads and
neurons can be projected onto. :class:`CLIPText` wraps an open_clip model's text tower and its
tokenizer and computes exactly what open_clip computes (``model.encode_text(tokenizer(texts))``),
batched and without gradients.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

#: A zero-shot prompt template: a format string with a ``"{}"`` placeholder for the class name
#: (``"a photo of a {}."``) or a callable ``classname -> prompt`` (as in open_clip's templates).
Template = str | Callable[[str], str]

_TEMPLATE_KINDS = ("openai", "simple")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".npy")


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
    """The text tower of an open_clip CLIP model, with its tokenizer.

    ``encode(texts)`` returns exactly open_clip's ``model.encode_text(tokenizer(texts))``
    (normalised by default), computed in batches under ``torch.no_grad()``, on the model's device
    and in its dtype. ``zero_shot_weights(classnames, templates)`` builds a zero-shot classifier
    as open_clip's ``build_zero_shot_classifier`` does (transposed: one row per class).

    Attributes:
        model: The wrapped open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa``. Models created by
            :meth:`from_open_clip` have their image tower dropped (``model.visual is None``);
            a model passed to :meth:`from_open_clip_model` is held by reference, unchanged except
            that it is put in eval mode.
        tokenizer: Callable ``list[str] -> LongTensor [n, context_length]`` (an open_clip
            tokenizer).
        d_embed: Width of the text (= image) embedding space.

    Example:
        >>> text = CLIPText.from_open_clip("ViT-B-32", "openai")  # doctest: +SKIP
        >>> emb = text.encode(["a photo of a dog", "a photo of a cat"])  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        torch.Size([2, 512])
        >>> weights = text.zero_shot_weights(imagenet_classnames(), imagenet_templates())
        ... # doctest: +SKIP
        >>> logits = text.classify(image_embeds, weights)  # [n_images, 1000]  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[..., Tensor] | None = None):
        """Wrap an already built open_clip model; see :meth:`from_open_clip_model`."""
        super().__init__()
        _text_tower_of(model)  # validate before registering
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else _default_tokenizer(model)
        if not callable(self.tokenizer):
            raise TypeError(
                f"tokenizer must be callable (list[str] -> LongTensor), got "
                f"{type(self.tokenizer).__name__}. Pass open_clip.get_tokenizer(model_name)."
            )
        self.d_embed: int = _text_embed_width(model, self._text_tower, self.tokenizer)
        self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_open_clip(
        cls,
        model_name: str,
        pretrained: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | None = None,
    ) -> CLIPText:
        """Create an open_clip model's text side by name, with open_clip's tokenizer for it.

        The model is built with ``open_clip.create_model`` on the CPU, its image tower (and a CoCa
        model's text decoder) is dropped, as ``encode_text`` never uses it, and only then is the
        model moved to ``device``/``dtype``.

        Args:
            model_name: An open_clip architecture name (``"ViT-B-32"``, ``"ViT-L-14-quickgelu"``)
                or an ``"hf-hub:org/repo"`` / ``"local-dir:/path"`` identifier.
            pretrained: An open_clip pretrained tag (e.g. ``"openai"``, ``"laion2b_s34b_b79k"``;
                downloaded on first use), a local checkpoint file (loaded by open_clip itself:
                ``.safetensors`` via safetensors, anything else via ``torch.load`` with
                ``weights_only=True``; it must hold the full CLIP state dict), or ``None`` for
                random weights. A known tag takes precedence over a file of the same name.
            device: Where to put the model (default CPU).
            dtype: Parameter dtype (default: open_clip's, float32).
            cache_dir: open_clip's download cache directory.

        Returns:
            The text side, in eval mode.

        Raises:
            ValueError: Unknown ``model_name`` or ``pretrained`` tag, or ``pretrained`` given
                together with an ``hf-hub:``/``local-dir:`` name (those carry their own weights).
            FileNotFoundError: ``pretrained`` looks like a path but no such file exists.

        Example:
            >>> text = CLIPText.from_open_clip("ViT-B-32")  # random weights  # doctest: +SKIP
            >>> text = CLIPText.from_open_clip("ViT-B-32", "/ckpts/epoch_32.pt")  # doctest: +SKIP
        """
        import open_clip

        pretrained = _check_open_clip_source(model_name, pretrained)
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
        tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
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

    # ------------------------------------------------------------------ properties
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
        return getattr(self._text_tower, "context_length", None)

    @property
    def logit_scale(self) -> float:
        """The trained CLIP temperature, ``exp(model.logit_scale)`` (100 for OpenAI CLIP)."""
        return float(self._logit_param("logit_scale").detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        """The learned logit bias of SigLIP-style models, ``None`` for CLIP."""
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    def extra_repr(self) -> str:
        return (
            f"d_embed={self.d_embed}, context_length={self.context_length}, "
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
        """Embed texts with the CLIP text tower.

        Equal to open_clip's ``model.encode_text(tokenizer(texts), normalize=normalize)``; texts
        longer than the context length are truncated by the tokenizer as in open_clip.

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
        """Zero-shot logits, as in open_clip's ``get_logits``.

        ``logit_scale * cos(image, class) (+ logit_bias for SigLIP models)``; ``softmax`` over the
        last dimension gives CLIP's class probabilities.

        Args:
            image_embeds: ``[n_images, d_embed]`` image embeddings (normalised here).
            weights: ``[n_classes, d_embed]``, e.g. from :meth:`zero_shot_weights`.

        Returns:
            ``[n_images, n_classes]`` logits on the image embeddings' device.

        Example:
            >>> weights = text.zero_shot_weights(["dog", "cat"], "a photo of a {}.")
            ... # doctest: +SKIP
            >>> probs = text.classify(hooked_vit(images), weights).softmax(-1)  # doctest: +SKIP
        """
        logits = self.logit_scale * self.similarity(image_embeds, weights, normalize=True)
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return logits

    # ------------------------------------------------------------------ internals
    def _encode_batch(self, texts: list[str], normalize: bool) -> Tensor:
        tokens = self.tokenizer(texts)
        tokens = self._check_tokens(tokens, len(texts))
        return self.model.encode_text(tokens.to(self.device), normalize=normalize)

    def _check_tokens(self, tokens: Any, n_texts: int) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] != n_texts:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise TypeError(
                f"The tokenizer must return a LongTensor [n_texts, context_length]; for {n_texts} "
                f"texts it returned {shape}. Pass an open_clip tokenizer "
                "(open_clip.get_tokenizer(model_name))."
            )
        embedding = getattr(self._text_tower, "token_embedding", None)
        if not isinstance(embedding, nn.Embedding):
            return tokens  # e.g. a Hugging Face text tower: it checks its own inputs.
        if tokens.shape[1] != self.context_length:
            raise ValueError(
                f"The tokenizer produced sequences of {tokens.shape[1]} tokens but the text "
                f"tower's context length is {self.context_length}. Use the model's tokenizer "
                "(open_clip.get_tokenizer(model_name)) or one built with "
                f"context_length={self.context_length}."
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= embedding.num_embeddings):
            raise ValueError(
                f"The tokenizer produced token ids in [{int(tokens.min())}, {int(tokens.max())}] "
                f"but the text tower's vocabulary has {embedding.num_embeddings} entries: is it "
                "the tokenizer for this model? Use open_clip.get_tokenizer(model_name)."
            )
        return tokens

    def _first_param(self) -> Tensor:
        embedding = getattr(self._text_tower, "token_embedding", None)
        if isinstance(embedding, nn.Embedding):
            return embedding.weight
        for param in self._text_tower.parameters():
            if param.is_floating_point():
                return param
        raise RuntimeError("The text tower has no floating-point parameters.")

    def _logit_param(self, name: str) -> Tensor:
        param = getattr(self.model, name, None)
        if param is None:
            raise AttributeError(f"{type(self.model).__name__} has no {name}.")
        return param

    @property
    def _text_tower(self) -> nn.Module:
        # The module holding the text transformer (``model`` itself for CLIP, ``model.text``
        # otherwise); looked up each time so it follows ``self.model``.
        return _text_tower_of(self.model)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
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
            f"CoCa, from open_clip.create_model(...)), got {type(model).__name__}.{hint}"
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
