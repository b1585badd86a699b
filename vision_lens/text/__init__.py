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

Modules, each with one job:

- :mod:`vision_lens.text.tower`: the :class:`CLIPText` module.
- :mod:`vision_lens.text.backends`: the open_clip and Hugging Face adapters.
- :mod:`vision_lens.text.sources`: loading (name and checkpoint checks, transformers classes,
  tokenizers); also used by :mod:`vision_lens.models`.
- :mod:`vision_lens.text.scoring`: similarity and mean prompt embeddings.
- :mod:`vision_lens.text.checks`: input checks (texts, templates, token ids).
- :mod:`vision_lens.text.imagenet`: ImageNet class names and prompt templates.

Example:
    >>> from vision_lens.text import CLIPText, imagenet_templates
    >>> imagenet_templates("simple")[0]("dog")
    'itap of a dog.'
"""

from vision_lens.protocols import Template
from vision_lens.text.imagenet import imagenet_classnames, imagenet_templates
from vision_lens.text.sources import HF_TEXT_CLASSES
from vision_lens.text.tower import CLIPText

__all__ = [
    "HF_TEXT_CLASSES",
    "CLIPText",
    "Template",
    "imagenet_classnames",
    "imagenet_templates",
]
