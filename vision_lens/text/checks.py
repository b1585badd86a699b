"""Input checks for the text tower: texts, prompt templates, token ids and embedding matrices.

Each check returns the canonical value or raises an error that names the offending item and the
fix, before any model runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from vision_lens.protocols import Template
from vision_lens.utils.checks import check_finite


def as_text_list(texts: object, what: str = "text") -> list[str]:
    """A string or a sequence of strings as a non-empty list of strings.

    Args:
        texts: What the user passed (one string counts as one text).
        what: The noun used in error messages (``"text"``, ``"class name"``).

    Returns:
        A new list of strings.

    Raises:
        TypeError: ``texts`` is a tensor, not iterable, or holds a non-string (its index is
            named).
        ValueError: ``texts`` is empty.

    Example:
        >>> as_text_list("a dog")
        ['a dog']
        >>> as_text_list(["a dog", 3])
        Traceback (most recent call last):
        ...
        TypeError: Every text must be a string, but the item at index 1 is int (3).
    """
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, Tensor):
        raise TypeError(
            "Expected a string or a sequence of strings, got a tensor. To embed token ids call "
            "the open_clip model directly: text.model.encode_text(tokens)."
        )
    if not isinstance(texts, Iterable) or isinstance(texts, bytes | dict):
        raise TypeError(f"Expected a string or a sequence of strings, got {type(texts).__name__}.")
    items = list(texts)
    if not items:
        raise ValueError(f"Got an empty {what} list; pass at least one string.")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"Every {what} must be a string, but the item at index {i} is "
                f"{type(item).__name__} ({item!r:.50})."
            )
    return items


def check_templates(templates: object) -> list[Template]:
    """One template or a sequence of them as a non-empty list of valid templates.

    A string template must be a format string with one ``"{}"`` placeholder for the class name;
    anything else must be a callable ``classname -> prompt``.

    Raises:
        TypeError: ``templates`` is not iterable, or a template is neither a string nor callable.
        ValueError: No templates, or a string template without a usable ``"{}"`` placeholder.

    Example:
        >>> check_templates("a photo of a {}.")
        ['a photo of a {}.']
        >>> check_templates(["a photo."])
        Traceback (most recent call last):
        ...
        ValueError: Template 0 ('a photo.') has no '{}' placeholder for the class name; ...
    """
    if isinstance(templates, str) or callable(templates):
        templates = [templates]
    if not isinstance(templates, Iterable):
        raise TypeError(
            f"templates must be a sequence of format strings or callables, got "
            f"{type(templates).__name__}."
        )
    items = list(templates)
    if not items:
        raise ValueError(
            "Got an empty template list; pass at least one template, e.g. ['a photo of a {}.'] "
            "or vision_lens.text.imagenet_templates()."
        )
    sentinel = "\x00CLASSNAME\x00"
    for i, template in enumerate(items):
        if isinstance(template, str):
            try:
                filled = template.format(sentinel)
            except (IndexError, KeyError, ValueError) as err:
                raise ValueError(
                    f"Template {i} ({template!r}) is not a valid format string with one '{{}}' "
                    f"placeholder for the class name ({type(err).__name__}: {err})."
                ) from None
            if sentinel not in filled:
                raise ValueError(
                    f"Template {i} ({template!r}) has no '{{}}' placeholder for the class name; "
                    f"write it like 'a photo of a {{}}.'."
                )
        elif not callable(template):
            raise TypeError(
                f"Template {i} is {type(template).__name__}; templates must be format strings "
                "with '{}' or callables classname -> prompt."
            )
    return items


def fill_template(template: Template, index: int, classname: str) -> str:
    """The prompt ``template`` (number ``index`` in its list, for errors) makes of ``classname``.

    Raises:
        TypeError: A callable template returned something other than a string.

    Example:
        >>> fill_template("a photo of a {}.", 0, "dog")
        'a photo of a dog.'
        >>> fill_template(lambda c: f"itap of a {c}.", 1, "cat")
        'itap of a cat.'
    """
    if isinstance(template, str):
        return template.format(classname)
    prompt = template(classname)
    if not isinstance(prompt, str):
        raise TypeError(
            f"Template {index} returned {type(prompt).__name__} for class {classname!r}; a "
            "callable template must return the prompt string."
        )
    return prompt


def as_matrix(x: object, name: str) -> Tensor:
    """An embedding tensor as ``[n, d_embed]``: a ``[d_embed]`` vector becomes one row.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` is neither 1-D nor 2-D, or holds NaN or inf.

    Example:
        >>> import torch
        >>> as_matrix(torch.zeros(4), "text_embeds").shape
        torch.Size([1, 4])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tensor [n, d_embed], got {type(x).__name__}.")
    if x.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be [n, d_embed] (or one [d_embed] vector), got shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}.")
    check_finite(x, name)
    return x.unsqueeze(0) if x.ndim == 1 else x


def check_tokens(
    inputs: Mapping[str, object],
    n_texts: int,
    *,
    embedding: nn.Embedding | None,
    context_length: int | None,
    exact_length: bool,
    hint: str,
) -> None:
    """Check a tokenizer's output before the text tower reads it.

    Args:
        inputs: The tokenized batch; ``inputs["input_ids"]`` must be ``[n_texts, length]``.
        n_texts: How many texts were tokenized.
        embedding: The tower's token embedding (``None``: a tower of another kind, which checks
            its own inputs; only the shape is checked).
        context_length: The tower's context length (``None`` if it does not say).
        exact_length: The sequences must be exactly ``context_length`` long (open_clip) rather
            than at most (Hugging Face).
        hint: How to get the right tokenizer, appended to every error.

    Raises:
        TypeError: The token ids are not a 2-D tensor with one row per text.
        ValueError: The sequences do not fit the context length, or a token id is outside the
            vocabulary.

    Example:
        >>> import torch
        >>> check_tokens({"input_ids": torch.zeros(2, 5, dtype=torch.long)}, 2,
        ...              embedding=torch.nn.Embedding(10, 4), context_length=5,
        ...              exact_length=True, hint="")
    """
    tokens = inputs["input_ids"]
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] != n_texts:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise TypeError(
            f"The tokenizer must return a LongTensor [n_texts, context_length]; for {n_texts} "
            f"texts it returned {shape}. {hint}"
        )
    if embedding is None:
        return
    length, context = tokens.shape[1], context_length
    if context is not None and (length != context if exact_length else length > context):
        need = "" if exact_length else "at most "
        raise ValueError(
            f"The tokenizer produced sequences of {length} tokens but the text tower's "
            f"context length is {context} (it needs {need}{context}). Use the model's "
            f"tokenizer, built with context_length/max_length={context}. {hint}"
        )
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= embedding.num_embeddings):
        raise ValueError(
            f"The tokenizer produced token ids in [{int(tokens.min())}, {int(tokens.max())}] "
            f"but the text tower's vocabulary has {embedding.num_embeddings} entries: is it "
            f"the tokenizer for this model? {hint}"
        )


__all__ = ["as_matrix", "as_text_list", "check_templates", "check_tokens", "fill_template"]
