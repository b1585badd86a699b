"""Datasets with ground-truth masks for evaluating heatmaps (ImageNet-segmentation), and the
mask geometry helpers that keep masks aligned with their preprocessed images."""

from vision_lens.datasets.imagenet_seg import (
    ImagenetSegmentation,
    imagenet_class_index,
    write_imagenet_seg_mat,
)
from vision_lens.datasets.masks import geometric_transform, transform_mask

__all__ = [
    "ImagenetSegmentation",
    "geometric_transform",
    "imagenet_class_index",
    "transform_mask",
    "write_imagenet_seg_mat",
]
