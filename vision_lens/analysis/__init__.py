"""Analyses built on the cache's decompositions: ablations (and later TextSpan, segmentation)."""

from vision_lens.analysis.ablation import (
    cumulative_attention_ablation,
    mean_ablate,
    zero_shot_accuracy,
)

__all__ = ["cumulative_attention_ablation", "mean_ablate", "zero_shot_accuracy"]
