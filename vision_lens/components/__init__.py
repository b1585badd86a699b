"""The building blocks of HookedViT, one class per module."""

from vision_lens.components.attention import Attention
from vision_lens.components.block import TransformerBlock
from vision_lens.components.embed import Embed
from vision_lens.components.layer_norm import LayerNorm
from vision_lens.components.mlp import MLP

__all__ = ["MLP", "Attention", "Embed", "LayerNorm", "TransformerBlock"]
