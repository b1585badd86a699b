"""vision_lens: mechanistic interpretability for vision transformers.

Load an OpenCLIP ViT into a :class:`HookedViT` with named hook points, run it with
``run_with_cache`` and decompose the image embedding into exact direct effects.
"""

from vision_lens.cache import ActivationCache
from vision_lens.config import HookedViTConfig
from vision_lens.hooked_vit import HookedViT
from vision_lens.loading.open_clip import UnsupportedModelError

__version__ = "0.1.0"

__all__ = [
    "ActivationCache",
    "HookedViT",
    "HookedViTConfig",
    "UnsupportedModelError",
    "__version__",
]
