"""HookedViT: a CLIP-style ViT image tower with TransformerLens hook points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import FactoredMatrix, HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.slice import Slice

import vision_lens.caching as caching
from vision_lens.cache import ActivationCache
from vision_lens.cache_entries import LazyEntries
from vision_lens.components import Embed, TransformerBlock
from vision_lens.components.hooks import CheckedHookPoint
from vision_lens.components.layer_norm import make_norm
from vision_lens.config import HookedViTConfig
from vision_lens.readout import Readout
from vision_lens.utils.checks import check_images

if TYPE_CHECKING:
    from vision_lens.loading.base import LoadedTower


class HookedViT(HookedRootModule):
    """A plain ViT (open_clip, timm or Hugging Face) whose every intermediate activation is a
    named TransformerLens hook point.

    ``model(images)`` returns what the source model returns: open_clip's ``encode_image``
    (unnormalised), timm's ``model(x)``, transformers' image embeddings, pooled features or
    logits (see the loaders). ``run_with_cache``, ``run_with_hooks`` and ``hooks()`` behave
    as in TransformerLens; ``run_with_cache`` returns a :class:`vision_lens.ActivationCache`.

    Hook points (``L`` = layer, ``pos`` = prefix tokens then patches; ``docs/hooks.md`` lists the
    hooks only some families have: qk-norm, gated and normed MLPs, the attention-pool readout):
        ``hook_embed``, ``hook_pos_embed``, ``ln_pre.hook_scale``, ``ln_pre.hook_normalized``,
        ``blocks.L.hook_resid_pre``, ``blocks.L.ln1.hook_scale``, ``blocks.L.ln1.hook_normalized``,
        ``blocks.L.attn.hook_q/k/v`` (``hook_rot_q/k`` after rotary embeddings, where used),
        ``blocks.L.attn.hook_attn_scores``,
        ``blocks.L.attn.hook_pattern``, ``blocks.L.attn.hook_z``, ``blocks.L.attn.hook_result``,
        ``blocks.L.hook_attn_out``, ``blocks.L.hook_resid_mid``, ``blocks.L.ln2.*``,
        ``blocks.L.mlp.hook_pre``, ``blocks.L.mlp.hook_post``, ``blocks.L.hook_mlp_out``,
        ``blocks.L.hook_resid_post``, ``ln_final.hook_scale``, ``ln_final.hook_normalized``,
        ``hook_pooled`` ``[batch, d_model]``, ``hook_image_embed`` ``[batch, d_embed]``,
        ``blocks.L.mlp.ln.*`` (MLP-internal norm), ``readout.*`` (attention pooling).
        A tower without a pre-LayerNorm (open_clip ``no_ln_pre``) has no ``ln_pre.*`` hooks.

    Observing a hook point never changes the result; the expensive explicit paths (per-head
    ``hook_result``, explicit attention, explicit LayerNorm) run only while something is attached
    to the corresponding hook point, so a plain forward costs what open_clip's does.

    Example:
        >>> import torch, vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(d_model=64, d_mlp=256, d_embed=32, image_size=32)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> embed, cache = model.run_with_cache(torch.randn(2, 3, 32, 32))
        >>> embed.shape, cache["blocks.1.attn.hook_result"].shape
        (torch.Size([2, 32]), torch.Size([2, 17, 4, 64]))
    """

    def __init__(self, cfg: HookedViTConfig, preprocess: Callable | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.hook_embed = CheckedHookPoint()  # [batch, pos, d_model], prefix tokens + patches
        self.hook_pos_embed = CheckedHookPoint()  # [batch, pos, d_model]
        norm = make_norm
        self.ln_pre = norm(cfg.norm_type, cfg.d_model, cfg.eps, cfg.dtype) if cfg.ln_pre else None
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = norm(cfg.norm_type, cfg.d_model, cfg.eps, cfg.dtype)
        #: Which positions are prefix tokens and patches, and how the output is pooled.
        self.readout = Readout(cfg)
        self.W_proj = nn.Parameter(torch.empty(cfg.d_model, cfg.d_embed, dtype=cfg.dtype))
        self.b_proj = (
            nn.Parameter(torch.zeros(cfg.d_embed, dtype=cfg.dtype)) if cfg.proj_bias else None
        )
        self.hook_pooled = CheckedHookPoint()  # [batch, d_model]
        self.hook_image_embed = CheckedHookPoint()  # [batch, d_embed]
        #: The model's image preprocessing (PIL image -> input tensor), set by the loaders.
        self.preprocess = preprocess
        self.setup()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_open_clip(
        cls,
        model_name: str,
        pretrained: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache_dir: str | None = None,
    ) -> HookedViT:
        """Build a HookedViT from an open_clip model name and weights.

        Args:
            model_name: An open_clip architecture name, e.g. ``"ViT-B-16"``,
                ``"ViT-L-14-quickgelu"`` or ``"ViT-L-14-336"``.
            pretrained: An open_clip pretrained tag (e.g. ``"laion2b_s34b_b88k"``, downloaded on
                first use), a local checkpoint path (``.safetensors`` or a torch file, loaded with
                ``weights_only=True``), or ``None`` for random weights.
            device: Where to put the model (default CPU).
            dtype: Parameter dtype (default float32).
            cache_dir: open_clip's download cache directory.

        Returns:
            The converted model, with ``model.preprocess`` set to open_clip's eval transform.

        Raises:
            vision_lens.UnsupportedModelError: The image tower is not a transformer over patches
                that converts exactly (ResNet, ConvNeXt, FastViT, ViTamin; RoPE towers such as
                EVA02 and PE-Core; CoCa's multi-query attentional pooler).

        Example:
            >>> model = HookedViT.from_open_clip("ViT-B-32")  # random weights  # doctest: +SKIP
        """
        from vision_lens.loading.open_clip import create_open_clip

        source = create_open_clip(model_name, pretrained, cache_dir)
        provenance = model_name if pretrained is None else f"{model_name} ({pretrained})"
        # The open_clip model is dropped after conversion: share its tensors instead of copying.
        return cls.from_open_clip_model(
            source, model_name=provenance, device=device, dtype=dtype, copy=False
        )

    @classmethod
    def from_open_clip_model(
        cls,
        model: nn.Module,
        *,
        model_name: str | None = None,
        preprocess: Callable | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        copy: bool = True,
    ) -> HookedViT:
        """Convert an already built open_clip ``CLIP`` (or its ``.visual``) into a HookedViT.

        By default the weights are copied, so later edits to either model do not affect the
        other.

        Args:
            model: An open_clip ``CLIP``/``CustomTextCLIP`` or a ``VisionTransformer``.
            model_name: Provenance for error messages and ``cfg.model_name``.
            preprocess: Image transform to expose as ``model.preprocess``; by default built from
                the tower's ``preprocess_cfg`` as open_clip does.
            device: Target device (default: the source model's).
            dtype: Target dtype (default: the source model's).
            copy: ``False`` shares storage with ``model`` where layouts agree (halves peak
                memory when the source is dropped afterwards; edits then reach both).

        Example:
            >>> import open_clip
            >>> clip = open_clip.create_model("ViT-B-32")  # doctest: +SKIP
            >>> model = HookedViT.from_open_clip_model(clip)  # doctest: +SKIP
        """
        from vision_lens.loading.open_clip import open_clip_to_hooked

        loaded = open_clip_to_hooked(model, model_name, preprocess)
        if copy:
            loaded = loaded._replace(
                state_dict={k: v.clone() for k, v in loaded.state_dict.items()}
            )
        return cls.from_loaded(loaded, device=device, dtype=dtype)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedTower,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        image_size: int | tuple[int, int] | None = None,
    ) -> HookedViT:
        """Build a HookedViT from a loader's ``(config, state_dict, preprocess)``.

        Every loader in ``vision_lens.loading`` is a pure function returning a
        ``LoadedTower``; this is the one place a model is built from one.
        The state dict must match the config exactly (``strict=True``): a missing or extra weight
        is an error, never a silently random parameter. With ``image_size`` the patch position
        embeddings are resampled to another input size
        (:func:`vision_lens.loading.base.resample_position_embeddings`; ``preprocess`` is then
        ``None``, since the source's transform makes the old size).

        Example:
            >>> from vision_lens.loading import LoadedTower
            >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8)
            >>> sd = HookedViT(cfg).init_weights(seed=0).state_dict()
            >>> HookedViT.from_loaded(LoadedTower(cfg, sd, None)).cfg.n_pos
            5
        """
        if image_size is not None:
            from vision_lens.loading.base import resample_position_embeddings

            loaded = resample_position_embeddings(loaded, image_size)
        cfg, state_dict, preprocess = loaded
        with torch.device("meta"):
            model = cls(cfg, preprocess=preprocess)
        model.load_state_dict(state_dict, strict=True, assign=True)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        return model.eval()

    @classmethod
    def from_timm(
        cls,
        name_or_model: str | nn.Module,
        pretrained: bool | str = False,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        image_size: int | tuple[int, int] | None = None,
        **create_kwargs: Any,
    ) -> HookedViT:
        """Build a HookedViT from a timm ``VisionTransformer`` (DeiT, DeiT-3, AugReg, DINO,
        DINOv2 with or without registers, SigLIP, CLIP-in-timm, ...).

        Args:
            name_or_model: A timm model name or an already built timm model.
            pretrained: ``True`` for timm's pretrained weights (downloaded on first use), a local
                checkpoint path, or ``False`` for random weights.
            device: Target device. dtype: Target dtype.
            image_size: Resample the position embeddings to this input size (see
                :meth:`from_loaded`); with a name, timm's own ``img_size=`` does the same.
            **create_kwargs: Passed to ``timm.create_model`` (``num_classes=0``, ``img_size``,
                ``global_pool``, ...).

        Returns:
            A model whose ``model(images)`` equals the timm model's ``model(images)``
            (features with ``num_classes=0``, logits otherwise).

        Raises:
            vision_lens.UnsupportedModelError: Not a plain ViT (Swin, convnets, parallel or
                post-norm blocks, RoPE).

        Example:
            >>> model = HookedViT.from_timm("vit_small_patch14_reg4_dinov2",
            ...                             num_classes=0)  # doctest: +SKIP
        """
        from vision_lens.loading.timm import load_timm

        loaded = load_timm(name_or_model, pretrained=pretrained, **create_kwargs)
        return cls.from_loaded(loaded, device=device, dtype=dtype, image_size=image_size)

    @classmethod
    def from_hf(
        cls,
        name_or_path_or_model: str | nn.Module,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        image_size: int | tuple[int, int] | None = None,
        **from_pretrained_kwargs: Any,
    ) -> HookedViT:
        """Build a HookedViT from a Hugging Face transformers vision model (CLIP, SigLIP,
        DINOv2 with or without registers, ViT, DeiT).

        Args:
            name_or_path_or_model: A hub id, a local directory written by ``save_pretrained``,
                or a built transformers model.
            device: Target device. dtype: Target dtype.
            image_size: Resample the position embeddings to this input size (see
                :meth:`from_loaded`).
            **from_pretrained_kwargs: Passed to ``from_pretrained``.

        Returns:
            A model whose ``model(images)`` equals the source's image output
            (``image_embeds``/``get_image_features`` for CLIP and SigLIP, ``pooler_output`` for
            DINOv2, ``logits`` for classifiers).

        Example:
            >>> model = HookedViT.from_hf("facebook/dinov2-small")  # doctest: +SKIP
        """
        from vision_lens.loading.hf import load_hf

        loaded = load_hf(name_or_path_or_model, **from_pretrained_kwargs)
        return cls.from_loaded(loaded, device=device, dtype=dtype, image_size=image_size)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None, std: float = 0.02) -> HookedViT:
        """Randomly initialise all weights (for tests and examples); LayerNorms get w=1, b=0.

        Args:
            seed: Seed for a private generator (the global RNG is untouched).
            std: Standard deviation of the normal initialisation.

        Returns:
            ``self``, so calls chain.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, param in self.named_parameters():
            if name.endswith(".w") and param.ndim == 1:
                param.fill_(1.0)
            elif name.endswith(".b") and param.ndim == 1:
                param.zero_()
            else:
                noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
                param.copy_(noise * std)
        return self

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: Float[Tensor, "batch 3 height width"]
    ) -> Float[Tensor, "batch d_embed"]:
        """The model's output for a batch of preprocessed images.

        Args:
            images: ``[batch, 3, H, W]`` with ``(H, W) == cfg.image_size``; moved to the model's
                device and dtype.

        Returns:
            ``[batch, d_embed]``: what the source model returns (open_clip's unnormalised
            ``encode_image(images)``, timm's ``model(x)``, transformers' image embedding, pooled
            features or logits).
        """
        images = self._check_images(images)
        embed = self.hook_embed(self.embed(images))
        pos_embed = self.hook_pos_embed(self.embed.pos_embed(embed.shape[0]))
        resid = embed + pos_embed
        if self.ln_pre is not None:
            resid = self.ln_pre(resid)
        for block in self.blocks:
            resid = block(resid)
        pooled = self.hook_pooled(self.readout.pool(resid, self.ln_final))
        return self.hook_image_embed(self.readout.project(pooled, self.W_proj, self.b_proj))

    def _check_images(self, images: object) -> Tensor:
        """``images`` checked (:func:`vision_lens.utils.checks.check_images`) and moved to the
        model's device and dtype."""
        images = check_images(images, self.cfg.image_size)
        return images.to(device=self.W_proj.device, dtype=self.W_proj.dtype)

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: str | Sequence[str] | Callable[[str], bool] | None = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        metric: Callable[[Tensor], Tensor] | None = None,
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        pos_slice: Any = None,
        return_cache_object: bool = True,
        cache_dtype: torch.dtype | None = None,
        **model_kwargs: Any,
    ) -> tuple[Float[Tensor, "batch d_embed"], ActivationCache | dict[str, Tensor]]:
        """Run the model and cache activations, as TransformerLens' ``run_with_cache``.

        Args:
            *model_args: Passed to :meth:`forward` (the images).
            names_filter: Which hook points to cache: a name, a list of names, or a predicate
                over names (default: all). A name that is no hook point is an error (with the
                closest names); a predicate that matches none warns
                (:class:`vision_lens.InputWarning`).
            device: Where to keep the cached tensors (default: where they are made).
            remove_batch_dim: Drop the batch axis (a batch of one image only).
            incl_bwd: Also cache gradients, under ``"<hook name>_grad"`` as in TransformerLens.
                The output is an embedding, not a scalar, so this needs ``metric``.
            metric: With ``incl_bwd``: a function of the output returning a scalar tensor (e.g.
                ``lambda out: out @ text_direction`` summed over the batch, or
                ``lambda out: out.norm(dim=-1).sum()``); it is backpropagated and the gradient
                at every cached hook point is cached too. As with any ``backward()``, parameter
                ``.grad`` accumulates (``model.zero_grad()`` clears it); run with gradients
                enabled (not under ``torch.no_grad()``).
            reset_hooks_end: As in TransformerLens.
            clear_contexts: As in TransformerLens.
            pos_slice: Keep only these positions of each entry (TransformerLens'
                ``Slice``). The ``decompose_*`` methods refuse such a cache
                (:class:`vision_lens.IncompleteCacheError`); for a small cache that decomposes
                use :meth:`run_with_decomposition_cache`.
            return_cache_object: Wrap the cache in a :class:`vision_lens.ActivationCache` (default)
                rather than returning a plain dict (which then holds every entry as a tensor).
            cache_dtype: Store the entries in this dtype (e.g. ``torch.bfloat16``), converted
                as each is made while the forward pass runs in the model's dtype; with
                ``device=`` this offloads the cache without ever holding two copies of it.
                Decompositions of such a cache compute in float32 (see
                :meth:`vision_lens.ActivationCache.decompose_heads` for the error it carries).
            **model_kwargs: Passed to :meth:`forward`.

        Returns:
            ``(image_embed, cache)``. The cache records the model's weights (see
            :class:`vision_lens.weight_record.WeightRecord`): after a weight edit its decompositions
            raise :class:`vision_lens.StaleCacheError`.

            Entries that are exact functions of other cached entries are derived when first read
            rather than stored (:mod:`vision_lens.cache_entries`): ``attn.hook_result`` (from
            ``hook_z`` and ``W_O``, and never computed by the forward pass), ``attn.hook_pattern``
            (softmax of ``hook_attn_scores``), ``mlp.hook_post`` (the activation of
            ``hook_pre``) and ``hook_resid_mid`` (``hook_resid_pre + hook_attn_out``). They look
            and read exactly as stored ones; ``cache.derived_names()`` lists those not read yet.
            An entry is stored instead when a hook is attached to it or to its sources, when
            ``names_filter`` names it explicitly (a string or list), with ``incl_bwd``, and with
            ``return_cache_object=False``; in reduced ``cache_dtype`` ``hook_pattern`` is stored
            (a softmax of rounded scores would be less accurate than the rounded pattern).

        Raises:
            ValueError: ``names_filter`` names no hook point; ``incl_bwd`` without ``metric``
                (or ``metric`` without ``incl_bwd``); ``metric`` does not return a scalar.
            RuntimeError: ``metric``'s value has no gradient (gradients disabled).

        Example:
            >>> import torch, vision_lens as vl
            >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
            >>> model = vl.HookedViT(cfg).init_weights(seed=0)
            >>> _, cache = model.run_with_cache(torch.randn(1, 3, 16, 16),
            ...                                 names_filter=lambda n: n.endswith("hook_pattern"))
            >>> list(cache.keys())
            ['blocks.0.attn.hook_pattern']
            >>> _, cache = model.run_with_cache(torch.randn(1, 3, 16, 16),
            ...     names_filter="hook_pooled", incl_bwd=True, metric=lambda out: out.sum())
            >>> sorted(cache.keys())
            ['hook_pooled', 'hook_pooled_grad']
        """
        names_filter = caching.check_names_filter(self, names_filter)
        caching.check_backward(incl_bwd, metric)
        cache_dtype = caching.check_cache_dtype(cache_dtype)
        if remove_batch_dim and model_args and isinstance(model_args[0], Tensor):
            batch = model_args[0].shape[0] if model_args[0].ndim > 0 else 1
            if batch != 1:
                raise AssertionError(
                    f"Cannot remove batch dimension from cache with batch size {batch}: "
                    "remove_batch_dim=True needs a batch of one image."
                )
        pos_slice = Slice.unwrap(pos_slice)
        names, explicit = caching.selected_names(self, names_filter)
        derived = {}
        if return_cache_object and not incl_bwd:
            reduced = cache_dtype is not None and cache_dtype != self.dtype
            dropped = caching.dropped_positions(self.cfg.n_pos, pos_slice)
            derived = caching.plan_derived(
                self, names, explicit, reduced_precision=reduced, sliced_positions=bool(dropped)
            )
        store: dict[str, Tensor] = {}
        fwd, bwd = caching.caching_hooks(
            [n for n in names if n not in derived],
            store,
            device=device,
            dtype=cache_dtype,
            remove_batch_dim=remove_batch_dim,
            pos_slice=pos_slice,
            incl_bwd=incl_bwd,
        )
        with self.hooks(
            fwd_hooks=fwd,
            bwd_hooks=bwd,
            reset_hooks_end=reset_hooks_end,
            clear_contexts=clear_contexts,
        ):
            out = self(*model_args, **model_kwargs)
            if incl_bwd:
                caching.backward_metric(out, metric)
        if not return_cache_object:
            return out, store
        entries = LazyEntries(store, derived, order=names)
        cache = ActivationCache(
            entries,
            self,
            has_batch_dim=not remove_batch_dim,
            pos_slice=caching.dropped_positions(self.cfg.n_pos, pos_slice),
        )
        return out, cache

    def decomposition_hooks(self) -> list[str]:
        """Names of the hook points the ``ActivationCache.decompose_*`` methods read.

        Example:
            >>> embed, cache = model.run_with_cache(
            ...     images, names_filter=model.decomposition_hooks())  # doctest: +SKIP
            >>> cache.decompose_heads().shape  # doctest: +SKIP
        """
        names = ["blocks.0.hook_resid_pre", "ln_final.hook_scale"]
        for layer in range(self.cfg.n_layers):
            prefix = f"blocks.{layer}."
            names += [
                prefix + "attn.hook_pattern",
                prefix + "attn.hook_v",
                prefix + "hook_attn_out",
                prefix + "hook_mlp_out",
            ]
        names.append(f"blocks.{self.cfg.n_layers - 1}.hook_resid_post")
        if self.cfg.readout == "map":
            names += ["readout.attn.hook_pattern", "readout.hook_mlp_out"]
        return names

    def run_with_decomposition_cache(
        self,
        images: Float[Tensor, "batch 3 height width"],
        device: str | torch.device | None = None,
    ) -> tuple[Float[Tensor, "batch d_embed"], ActivationCache]:
        """Forward pass that caches exactly what the decompositions need, and no more.

        Values ``blocks.L.attn.hook_v`` are kept whole (every source token); every other
        per-position entry keeps only the rows of the positions the readout reads
        (``model.readout.query_positions``): for a class-token readout, attention patterns are
        stored as ``[batch, head, 1, key_pos]`` and residual-stream entries as ``[batch, 1, d]``,
        about ``n_pos`` times less memory than caching full patterns. Average and
        attention-pooling readouts read every patch, so their patterns are kept whole.

        Args:
            images: Preprocessed images ``[batch, 3, H, W]``.
            device: Where to keep the cached tensors (default: the model's device).

        Returns:
            ``(image_embed, cache)``; all ``cache.decompose_*`` methods work on it.

        Example:
            >>> import torch, vision_lens as vl
            >>> cfg = vl.HookedViTConfig.tiny()
            >>> model = vl.HookedViT(cfg).init_weights(seed=0)
            >>> embed, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
            >>> cache["blocks.1.attn.hook_pattern"].shape
            torch.Size([2, 4, 1, 5])
            >>> torch.allclose(cache.decompose_tokens().sum(1), cache.decompose_heads().sum((1, 2)),
            ...                atol=1e-6)
            True
        """
        store: dict[str, Tensor] = {}
        rows = self.readout.query_positions

        def save(tensor: Tensor, hook: HookPoint) -> None:
            name = hook.name
            if name.endswith("hook_v") or name.startswith("readout."):
                kept = tensor
            elif name.endswith("hook_pattern"):
                kept = tensor[:, :, rows]
            elif tensor.dim() == 3:  # per-position entries [batch, pos, d]
                kept = tensor[:, rows]
            else:  # ln_final.hook_scale of a norm applied after pooling: [batch, 1]
                kept = tensor
            # A copy, not a view: a slice (and hook_v, a view of the fused qkv) would keep the
            # whole activation's storage alive.
            store[name] = kept.detach().to(device or kept.device, copy=True)

        fwd_hooks = [(name, save) for name in self.decomposition_hooks()]
        with torch.no_grad():
            out = self.run_with_hooks(images, fwd_hooks=fwd_hooks)
        return out, ActivationCache(store, self)

    # ------------------------------------------------------------------ weights
    def _stack(self, get: Callable[[TransformerBlock], Tensor]) -> Tensor:
        return torch.stack([get(block) for block in self.blocks])

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        """Query weights of every layer (a stacked copy)."""
        return self._stack(lambda b: b.attn.W_Q)

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        """Key weights of every layer (a stacked copy)."""
        return self._stack(lambda b: b.attn.W_K)

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        """Value weights of every layer (a stacked copy)."""
        return self._stack(lambda b: b.attn.W_V)

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        """Output weights of every layer, layer scale folded in (a stacked copy)."""
        return self._stack(lambda b: b.attn.W_O)

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        """Query biases of every layer."""
        return self._stack(lambda b: b.attn.b_Q)

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        """Key biases of every layer."""
        return self._stack(lambda b: b.attn.b_K)

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        """Value biases of every layer."""
        return self._stack(lambda b: b.attn.b_V)

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        """Attention output biases of every layer, layer scale folded in."""
        return self._stack(lambda b: b.attn.b_O)

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        """MLP input weights of every layer."""
        return self._stack(lambda b: b.mlp.W_in)

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        """MLP input biases of every layer."""
        return self._stack(lambda b: b.mlp.b_in)

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        """MLP output weights of every layer, layer scale folded in."""
        return self._stack(lambda b: b.mlp.W_out)

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        """MLP output biases of every layer, layer scale folded in."""
        return self._stack(lambda b: b.mlp.b_out)

    @property
    def W_E(self) -> Float[Tensor, "d_model 3 patch_h patch_w"]:
        """Patch embedding (convolution layout)."""
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "pos d_model"]:
        """Position embeddings of every token, prefix tokens first."""
        return self.embed.W_pos

    @property
    def OV(self) -> FactoredMatrix:
        """Each head's OV circuit ``W_V @ W_O`` as a TransformerLens ``FactoredMatrix``
        ``[layer, head, d_model, d_model]`` (see :func:`vision_lens.analysis.circuits.ov_circuit`).

        Example:
            >>> import vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> model.OV.shape
            torch.Size([2, 4, 32, 32])
        """
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def QK(self) -> FactoredMatrix:
        """Each head's QK circuit ``W_Q @ W_K^T`` ``[layer, head, d_model, d_model]`` (the bilinear
        form of the attention scores before scaling; see
        :func:`vision_lens.analysis.circuits.qk_circuit`, which warns where qk-norm or RoPE make
        it differ from the scores).

        Example:
            >>> import vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> model.QK.shape
            torch.Size([2, 4, 32, 32])
        """
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def device(self) -> torch.device:
        return self.W_proj.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_proj.dtype

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> HookedViT:
        # Every dtype/device move (.to, .double, .float, .half, .cuda) goes through _apply, so
        # cfg.dtype stays in sync with the weights whichever one is used.
        out = super()._apply(fn, *args, **kwargs)
        self.cfg.dtype = self.W_proj.dtype
        return out

    def hook_names(self, filter: str | Sequence[str] | None = None) -> list[str]:
        """Names of the hook points, optionally only those containing one of ``filter``.

        Example:
            >>> import vision_lens as vl
            >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, n_heads=2)
            >>> vl.HookedViT(cfg).hook_names("hook_pattern")
            ['blocks.0.attn.hook_pattern']
        """
        names = list(self.hook_dict)
        if filter is None:
            return names
        parts = [filter] if isinstance(filter, str) else list(filter)
        return [n for n in names if any(p in n for p in parts)]
