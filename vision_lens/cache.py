"""The vision ActivationCache: TransformerLens' cache plus exact direct-effect decompositions."""

from __future__ import annotations

from transformer_lens import ActivationCache as _TLActivationCache


class ActivationCache(_TLActivationCache):
    """TransformerLens' ``ActivationCache`` for a :class:`vision_lens.HookedViT`.

    Indexing (``cache["blocks.3.attn.hook_pattern"]``, ``cache["pattern", 3]``), ``to``,
    ``remove_batch_dim``, ``stack_activation`` and the rest of TransformerLens' API behave as
    there.
    """
