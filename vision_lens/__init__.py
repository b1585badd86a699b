"""vision_lens: mechanistic interpretability for vision transformers.

Load an OpenCLIP, timm or Hugging Face ViT into a :class:`HookedViT` with named hook points, run
it with ``run_with_cache`` and decompose its output into exact direct effects.

Example:
    >>> import torch, vision_lens as vl
    >>> cfg = vl.HookedViTConfig.tiny()
    >>> model = vl.HookedViT(cfg).init_weights(seed=0)
    >>> embed, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
    >>> cache.decompose_heads().shape
    torch.Size([2, 2, 4, 16])
"""

import importlib

from vision_lens import analysis
from vision_lens._version import __version__  # noqa: E402
from vision_lens.analysis import (
    CompAlign,
    Components,
    ComponentScores,
    TextSpanResult,
    accuracy_vs_m,
    aligned_token_heatmaps,
    alignment_report,
    all_composition_scores,
    attribute_variance,
    component_retrieval,
    component_scores,
    cumulative_attention_ablation,
    decompose_components,
    embedding_lens,
    head_ablation_accuracy,
    heads_by_keywords,
    image_neighbors,
    layer_ablation_curve,
    lens_accuracy,
    mean_ablate,
    mlp_ablation,
    neuron_direct_effects,
    neuron_second_order_effects,
    ov_circuit,
    patch_activations,
    patch_lens,
    qk_circuit,
    ranking_consistency,
    run_with_sae_cache,
    sae_direct_effects,
    segment,
    segment_heads,
    select_components,
    sparse_text_decomposition,
    splice_sae,
    spurious_ablation,
    spurious_mitigation,
    text_to_image,
    textspan,
    textspan_model,
    top_activating_images,
    zero_shot_accuracy,
)
from vision_lens.analysis.batched import decompose_dataset
from vision_lens.analysis.sae_format import load_saelens_sae
from vision_lens.cache import ActivationCache, ComponentId, LayerTerms
from vision_lens.config import HookedViTConfig
from vision_lens.errors import (
    CheckpointError,
    HookOutputError,
    IncompleteCacheError,
    InputWarning,
    StaleCacheError,
    UnsupportedModelError,
)
from vision_lens.hooked_vit import HookedViT
from vision_lens.loading.base import LoadedTower
from vision_lens.models import load_clip, load_clip_hf, load_shapes_clip, load_shapes_vit
from vision_lens.readout import LinearReadout, Readout
from vision_lens.streaming import CollectedRun, collect, open_collected
from vision_lens.text import CLIPText, imagenet_classnames, imagenet_templates
from vision_lens.text_pools import list_text_pools, text_pool

__all__ = [
    "ActivationCache",
    "CompAlign",
    "ComponentScores",
    "aligned_token_heatmaps",
    "alignment_report",
    "component_retrieval",
    "component_scores",
    "layer_ablation_curve",
    "ranking_consistency",
    "select_components",
    "spurious_mitigation",
    "CLIPText",
    "CollectedRun",
    "collect",
    "open_collected",
    "ComponentId",
    "Components",
    "LayerTerms",
    "LinearReadout",
    "LoadedTower",
    "Readout",
    "TextSpanResult",
    "accuracy_vs_m",
    "attribute_variance",
    "decompose_components",
    "head_ablation_accuracy",
    "heads_by_keywords",
    "image_neighbors",
    "list_text_pools",
    "mlp_ablation",
    "segment",
    "segment_heads",
    "spurious_ablation",
    "text_pool",
    "text_to_image",
    "textspan",
    "textspan_model",
    "HookedViT",
    "HookedViTConfig",
    "UnsupportedModelError",
    "CheckpointError",
    "HookOutputError",
    "IncompleteCacheError",
    "InputWarning",
    "StaleCacheError",
    "__version__",
    "analysis",
    "load_saelens_sae",
    "run_with_sae_cache",
    "sae_direct_effects",
    "splice_sae",
    "all_composition_scores",
    "embedding_lens",
    "lens_accuracy",
    "neuron_direct_effects",
    "neuron_second_order_effects",
    "ov_circuit",
    "patch_activations",
    "patch_lens",
    "qk_circuit",
    "sparse_text_decomposition",
    "top_activating_images",
    "cumulative_attention_ablation",
    "decompose_dataset",
    "imagenet_classnames",
    "imagenet_templates",
    "load_clip",
    "load_clip_hf",
    "load_shapes_clip",
    "load_shapes_vit",
    "mean_ablate",
    "plot",
    "shapes",
    "zero_shot_accuracy",
]

# Figures (plotly) and the shapes world load on first use: `import vision_lens` stays light, and
# `vl.plot` / `vl.shapes` still work as attributes.
_LAZY_SUBMODULES = ("plot", "shapes")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"vision_lens.{name}")
    raise AttributeError(f"module 'vision_lens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
