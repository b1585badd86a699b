"""Images and texts into the shapes-world CLIP: preprocessing and batched, normalised encoding.

:func:`images_to_tensor` is exactly what ``model.preprocess`` (open_clip's eval transform with
the default OpenAI mean/std) does to a 64x64 PIL image, so generated uint8 arrays go to the model
without PIL. Training, evaluation and the shipped-model checks all encode through here.

Example:
    >>> import numpy as np
    >>> images_to_tensor(np.zeros((2, 64, 64, 3), dtype=np.uint8)).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vision_lens.utils.checks import check_batch_size

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "Tokenizer",
    "class_embeddings",
    "encode_images",
    "encode_text_trimmed",
    "encode_texts",
    "images_to_tensor",
]

#: Per-channel mean of open_clip's default image normalisation (OpenAI CLIP's), used by
#: ``model.preprocess``.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
#: Per-channel standard deviation of the same normalisation.
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

#: A tokenizer: texts -> ``int [len(texts), context_length]`` token ids (open_clip's, or
#: :class:`~vision_lens.shapes.train_data.CaptionTokenizer`).
Tokenizer = Callable[[list[str]], torch.Tensor]


def _check_uint8_images(images: object, what: str = "images") -> None:
    if isinstance(images, torch.Tensor):
        dtype_ok, shape = images.dtype == torch.uint8, tuple(images.shape)
        dtype = images.dtype
    elif isinstance(images, np.ndarray):
        dtype_ok, shape, dtype = images.dtype == np.uint8, images.shape, images.dtype
    else:
        raise TypeError(
            f"{what} must be a uint8 numpy array [n, H, W, 3] (e.g. ShapesDataset.images), got "
            f"{type(images).__name__}."
        )
    if len(shape) == 3 and shape[-1] == 3:
        raise ValueError(
            f"{what} has shape {shape}: a single image; add a batch dimension (images[None])."
        )
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            f"{what} must be [n, H, W, 3] (channels last, as ShapesDataset.images), got shape "
            f"{shape}."
        )
    if not dtype_ok:
        raise TypeError(
            f"{what} must be uint8 pixels 0..255, got {dtype}: floats would be divided by 255 "
            "a second time. Convert with (x * 255).round().astype(np.uint8), or pass "
            "already-normalised tensors to the model directly."
        )


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``[n, H, W, 3]`` -> normalised float ``[n, 3, H, W]``.

    Exactly what ``model.preprocess`` (open_clip's eval transform with the default OpenAI
    mean/std) does to a PIL image of the model's size: ``ToTensor`` then ``Normalize``.

    Example:
        >>> x = images_to_tensor(np.zeros((2, 64, 64, 3), dtype=np.uint8))
        >>> tuple(x.shape), x.dtype
        ((2, 3, 64, 64), torch.float32)
    """
    _check_uint8_images(images)
    x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 500, *, normalize: bool = True
) -> torch.Tensor:
    """Image embeddings ``[n, d]`` (float32) of uint8 images ``[n, H, W, 3]``, unit-normalised
    unless ``normalize=False``.

    Example:
        >>> from vision_lens.shapes import generate
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip
        >>> model, _ = load_shapes_open_clip()
        >>> encode_images(model, generate(3, seed=0).images).norm(dim=-1)
        tensor([1.0000, 1.0000, 1.0000])
    """
    batch_size = check_batch_size(batch_size)
    _check_uint8_images(images)
    if len(images) == 0:
        raise ValueError("images is empty: pass at least one image [n >= 1, H, W, 3].")
    out = [
        model.encode_image(images_to_tensor(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    feats = torch.cat(out).float()
    return F.normalize(feats, dim=-1) if normalize else feats


def _check_texts(texts: object, what: str = "texts") -> list[str]:
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise TypeError(
            f"{what} must be a list of strings, got {type(texts).__name__} {texts!r}"
            + (f"; wrap a single text as [{texts!r}]." if isinstance(texts, str) else ".")
        )
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: pass at least one text.")
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"{what} must hold strings, got {type(text).__name__} {text!r}.")
    return texts


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, tokenizer: Tokenizer, texts: Sequence[str]
) -> torch.Tensor:
    """Normalised text embeddings ``[k, d]`` (float32).

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> encode_texts(model, shapes_tokenizer(), ["a red object", "a circle"]).shape
        torch.Size([2, 128])
    """
    texts = _check_texts(texts)
    return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


@torch.no_grad()
def class_embeddings(
    model: torch.nn.Module, tokenizer: Tokenizer, class_texts: Sequence[Sequence[str]]
) -> torch.Tensor:
    """One embedding per class: the renormalised mean of its texts' normalised embeddings.

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> texts = [["a red object", "a red circle"], ["a blue object"]]
        >>> class_embeddings(model, shapes_tokenizer(), texts).shape
        torch.Size([2, 128])
    """
    if isinstance(class_texts, str | bytes) or not isinstance(class_texts, Sequence):
        raise TypeError(
            f"class_texts must be a list with one list of texts per class, got "
            f"{type(class_texts).__name__} {class_texts!r}."
        )
    if not class_texts:
        raise ValueError("class_texts is empty: pass one list of texts per class.")
    for k, texts in enumerate(class_texts):
        if isinstance(texts, str):
            raise TypeError(
                f"class_texts[{k}] is the string {texts!r}, not a list of texts (it would be read "
                f"letter by letter); wrap it as [{texts!r}]."
            )
        _check_texts(texts, f"class_texts[{k}]")
    flat = [t for texts in class_texts for t in texts]
    emb = encode_texts(model, tokenizer, flat)
    out, i = [], 0
    for texts in class_texts:
        out.append(emb[i : i + len(texts)].mean(0))
        i += len(texts)
    return F.normalize(torch.stack(out), dim=-1)


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on tokens trimmed to the longest caption of the batch.

    Identical to the full-context result (the causal mask means padding after the end token
    never reaches it), but much cheaper for short captions.

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> tokens = shapes_tokenizer()(["a red object", "two shapes on grass"])
        >>> with torch.no_grad():
        ...     torch.allclose(encode_text_trimmed(model, tokens), model.encode_text(tokens),
        ...                    atol=1e-5)
        True
    """
    from open_clip.transformer import text_global_pool

    length = int((tokens != 0).sum(1).max())
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=model.text_eos_id)
    return x @ model.text_projection
