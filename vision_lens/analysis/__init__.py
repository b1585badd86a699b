"""Analyses built on the cache's decompositions: TextSpan, ablations, retrieval, spurious cues.

* :func:`textspan` / :func:`textspan_model`: per-head text bases (Gandelsman et al. §4.1).
* :class:`HeadMoments`, :func:`textspan_from_moments`: TextSpan from streamed per-head sums.
* :class:`Components`: direct-effect terms with chosen layers split into heads
  (:func:`decompose_components`, :func:`split_heads`).
* Ablations over precomputed :class:`Components` (one forward pass, many ablations):
  :func:`mean_ablate`, :func:`cumulative_attention_ablation` (Figure 3),
  :func:`head_ablation_accuracy`, :func:`mlp_ablation` (Table 3), :func:`replace_heads`,
  :func:`textspan_replacement_accuracy` and :func:`accuracy_vs_m` (Figure 4).
* :func:`image_neighbors`, :func:`text_to_image`: retrieval through heads (Figures 5 and 6).
* :func:`heads_by_keywords`, :func:`spurious_ablation`: spurious cue removal (Table 2).
* :func:`attribute_variance`: each head's variance inside each attribute's text span.
* :func:`embedding_lens`, :func:`lens_accuracy`, :func:`patch_lens`: the logit lens through the
  readout, per layer and per token.
* :func:`ov_circuit`, :func:`qk_circuit`, :func:`all_composition_scores`: head circuits;
  :func:`patch_activations`: activation patching between image pairs.
* :class:`CompAlign`, :func:`select_components`, :func:`alignment_report`: per-component linear
  maps into a CLIP space (Balasubramanian et al. §4); :func:`component_scores`: components ranked
  per property (their Algorithm 2).
* :func:`component_retrieval`, :func:`aligned_token_heatmaps`, :func:`layer_ablation_curve`,
  :func:`spurious_mitigation`, :func:`ranking_consistency`: their applications for any ViT.
* :func:`splice_sae`, :func:`run_with_sae_cache`, :func:`sae_direct_effects`,
  :func:`load_saelens_sae`: sparse autoencoders spliced with their error as a separate term.
"""

from vision_lens.analysis.ablation import (
    ablated_embedding,
    accuracy_vs_m,
    cumulative_attention_ablation,
    head_ablation_accuracy,
    mean_ablate,
    mlp_ablation,
    replace_heads,
    textspan_replacement_accuracy,
    zero_shot_accuracy,
)
from vision_lens.analysis.baselines import (
    attention_rollout,
    chefer_relevance,
    gradcam,
    raw_attention,
)
from vision_lens.analysis.beyond_clip import (
    TokenScores,
    aligned_token_heatmaps,
    aligned_token_scores,
    component_retrieval,
    ranking_consistency,
)
from vision_lens.analysis.beyond_clip_ablation import (
    LayerAblationCurve,
    SpuriousMitigation,
    layer_ablation_curve,
    spurious_mitigation,
)
from vision_lens.analysis.circuits import (
    PatchingScores,
    all_composition_scores,
    ov_circuit,
    patch_activations,
    qk_circuit,
)
from vision_lens.analysis.compalign import (
    AlignedComponents,
    AlignmentReport,
    CompAlign,
    FitHistory,
    alignment_report,
)
from vision_lens.analysis.direct_effects import (
    Components,
    decompose_components,
    head_label,
    split_heads,
)
from vision_lens.analysis.lens import (
    embedding_lens,
    lens_accuracy,
    lens_stage_names,
    patch_lens,
)
from vision_lens.analysis.moments import HeadMoments, textspan_from_moments
from vision_lens.analysis.neurons import (
    SparseTextDecomposition,
    TopActivations,
    mlp_bias_effect,
    neuron_direct_effects,
    neuron_second_order_effects,
    sparse_text_decomposition,
    top_activating_images,
)
from vision_lens.analysis.retrieval import Neighbors, image_neighbors, text_to_image
from vision_lens.analysis.sae import (
    SAEDirectEffects,
    SAESplice,
    SparseAutoencoder,
    StandardSAE,
    load_saelens_sae,
    run_with_sae_cache,
    sae_direct_effects,
    splice_sae,
)
from vision_lens.analysis.scoring import ComponentScores, component_scores
from vision_lens.analysis.seg_metrics import (
    SegmentationMetrics,
    binarize,
    normalize_heatmaps,  # noqa: F401  (deprecated alias, removed in 0.3; not in __all__)
    rescale_heatmaps,
)
from vision_lens.analysis.segmentation import segment, segment_heads, upsample_heatmaps
from vision_lens.analysis.selection import select_components
from vision_lens.analysis.spurious import (
    LOCATION_KEYWORDS,
    GroupAccuracy,
    HeadMatches,
    SpuriousAblation,
    group_accuracy,
    heads_by_keywords,
    spurious_ablation,
)
from vision_lens.analysis.subspace import AttributeVariance, attribute_variance
from vision_lens.analysis.textspan import head_outputs_dataset, textspan, textspan_model
from vision_lens.analysis.textspan_result import TextSpanResult

__all__ = [
    "SegmentationMetrics",
    "attention_rollout",
    "binarize",
    "chefer_relevance",
    "gradcam",
    "rescale_heatmaps",
    "raw_attention",
    "segment",
    "segment_heads",
    "upsample_heatmaps",
    "LOCATION_KEYWORDS",
    "AttributeVariance",
    "attribute_variance",
    "Components",
    "GroupAccuracy",
    "HeadMatches",
    "Neighbors",
    "SpuriousAblation",
    "TextSpanResult",
    "ablated_embedding",
    "accuracy_vs_m",
    "cumulative_attention_ablation",
    "decompose_components",
    "group_accuracy",
    "head_ablation_accuracy",
    "head_label",
    "head_outputs_dataset",
    "heads_by_keywords",
    "image_neighbors",
    "mean_ablate",
    "mlp_ablation",
    "replace_heads",
    "spurious_ablation",
    "split_heads",
    "text_to_image",
    "textspan",
    "textspan_model",
    "HeadMoments",
    "textspan_from_moments",
    "textspan_replacement_accuracy",
    "zero_shot_accuracy",
    "PatchingScores",
    "all_composition_scores",
    "ov_circuit",
    "patch_activations",
    "qk_circuit",
    "embedding_lens",
    "lens_accuracy",
    "lens_stage_names",
    "patch_lens",
    "SparseTextDecomposition",
    "TopActivations",
    "mlp_bias_effect",
    "neuron_direct_effects",
    "neuron_second_order_effects",
    "sparse_text_decomposition",
    "top_activating_images",
    "SAEDirectEffects",
    "SAESplice",
    "SparseAutoencoder",
    "StandardSAE",
    "load_saelens_sae",
    "run_with_sae_cache",
    "sae_direct_effects",
    "splice_sae",
    "AlignedComponents",
    "AlignmentReport",
    "CompAlign",
    "FitHistory",
    "alignment_report",
    "select_components",
    "ComponentScores",
    "component_scores",
    "TokenScores",
    "aligned_token_heatmaps",
    "aligned_token_scores",
    "component_retrieval",
    "ranking_consistency",
    "LayerAblationCurve",
    "SpuriousMitigation",
    "layer_ablation_curve",
    "spurious_mitigation",
]


def __getattr__(name: str):
    # Deprecated since 0.2: the segmentation benchmark runner is an application and moved to
    # vision_lens.apps.seg_eval (analysis does not import applications). Removed in 0.3.
    if name in ("evaluate_segmentation", "run_eval_seg"):
        from vision_lens.analysis import seg_eval

        return getattr(seg_eval, name)
    raise AttributeError(f"module 'vision_lens.analysis' has no attribute {name!r}")
