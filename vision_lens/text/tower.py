"""The :class:`CLIPText` module: a CLIP or SigLIP text tower with its tokenizer."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.protocols import Template
from vision_lens.text.backends import Tokenizer, backend_for
from vision_lens.text.checks import as_text_list, check_templates, check_tokens, fill_template
from vision_lens.text.scoring import mean_prompt_embeddings, similarity
from vision_lens.text.sources import (
    check_open_clip_source,
    drop_hf_image_tower,
    hf_text_kind,
    hf_tokenizer,
    load_hf_model,
    open_clip_tokenizer,
)
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_batch_size, check_finite


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
        tokenizer: Tokenizer | None = None,
        *,
        padding: bool | str | None = None,
    ):
        """Wrap an already built open_clip or transformers model.

        See :meth:`from_open_clip_model` and :meth:`from_hf`; ``padding`` applies to Hugging
        Face models only.
        """
        super().__init__()
        backend = backend_for(model, padding)
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

        pretrained = check_open_clip_source(model_name, pretrained)
        if tokenizer is None:
            tokenizer = open_clip_tokenizer(model_name, cache_dir=cache_dir)
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
        tokenizer: Tokenizer | None = None,
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
            vision_lens.errors.UnsupportedModelError: Dinov2Model has no text tower ...
        """
        if isinstance(name_or_path_or_model, nn.Module):
            if from_pretrained_kwargs:
                raise TypeError(
                    f"from_pretrained arguments {sorted(from_pretrained_kwargs)} need a name or "
                    "path, not a built model."
                )
            model = name_or_path_or_model
            hf_text_kind(model)  # refuse a text-less model before looking for a tokenizer
        else:
            path = os.fspath(name_or_path_or_model)
            model = load_hf_model(path, text_only=True, **from_pretrained_kwargs)
            drop_hf_image_tower(model)
            if tokenizer is None:
                tokenizer = hf_tokenizer(path, **from_pretrained_kwargs)
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
        texts = as_text_list(texts)
        check_batch_size(batch_size)
        chunks = []
        bar = progress_bar(len(texts), "encoding texts", enabled=progress, unit="text")
        with torch.no_grad(), bar:
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
        classnames = as_text_list(classnames, what="class name")
        templates = check_templates(templates)
        check_batch_size(batch_size)
        n_templates = len(templates)
        prompts = [fill_template(t, i, c) for c in classnames for i, t in enumerate(templates)]

        return mean_prompt_embeddings(
            partial(self._encode_batch, normalize=True),
            prompts,
            n_templates,
            batch_size=batch_size,
            progress=progress,
        )

    # ------------------------------------------------------------------ scoring
    # Cosine similarity (or dot product), [n_images, n_text]: no temperature and no bias; the
    # model's logits are classify(), its probabilities probabilities().
    similarity = staticmethod(similarity)

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
        backend = self._backend
        inputs = backend.tokenize(self.tokenizer, texts, self.context_length)
        check_tokens(
            inputs,
            len(texts),
            embedding=backend.token_embedding(self.model),
            context_length=self.context_length,
            exact_length=backend.exact_length,
            hint=backend.tokenizer_hint,
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        # A tower that overflows (float16) or has broken weights would otherwise hand NaN to
        # every similarity downstream.
        return check_finite(backend.encode(self.model, inputs, normalize), "The text embeddings")

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


__all__ = ["CLIPText"]
