"""The shipped text pools: sizes, coverage, loading and errors."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from vision_lens import shapes
from vision_lens.text_pools import list_text_pools, text_pool

ROOT = Path(__file__).resolve().parents[2]


def _words(pool):
    return {w for text in pool for w in re.findall(r"[a-z0-9]+", text.lower())}


def test_list_text_pools():
    assert list_text_pools() == ["general", "shapes"]


def test_general_pool_is_large_distinct_and_clean():
    pool = text_pool("general")
    assert len(pool) >= 3000
    assert len({t.lower() for t in pool}) == len(pool)  # distinct, even ignoring case
    assert all(t == t.strip() and t and not t.startswith("#") for t in pool)
    assert all("  " not in t for t in pool)
    assert not any(re.search(r"\ba [aeiou]", t) for t in pool)  # articles fixed


@pytest.mark.parametrize(
    "example",
    [
        "a photo with a dominant red color",  # colours
        "a rough texture",  # textures
        "an object made of wood",  # materials
        "a striped pattern",  # patterns
        "a hexagon shape",  # shapes
        "an image with three dogs",  # counts
        "the letter A",  # letters
        "the number 7",  # numbers
        "a photo of a bicycle",  # objects
        "a photo of a zebra",  # animals
        "a portrait of an old woman",  # people
        "a photo of a lake",  # scenes
        "a photo taken in Paris, France",  # places
        "a watercolor painting",  # styles
        "a peaceful atmosphere",  # moods
        "a photo taken on a rainy day",  # weather
        "an object in the top left corner",  # positions
    ],
)
def test_general_pool_covers_categories(example):
    assert example in text_pool("general")


def test_shapes_pool_covers_the_shapes_world():
    pool = text_pool("shapes")
    assert 500 <= len(pool) < 3000
    assert len(set(pool)) == len(pool)
    words = _words(pool)
    for attribute, values in shapes.VOCABULARY.items():
        for value in values:
            assert set(value.split()) <= words, (attribute, value)
    # the zero-shot prompts of every attribute are in the pool
    for attribute in ("color", "shape", "position", "size", "texture", "background"):
        assert set(shapes.prompts(attribute)) <= set(pool), attribute
    for text in ("two shapes", "a red circle", "a circle in the top left", "a photo of a dog"):
        assert text in pool


def test_unknown_pool_lists_available():
    with pytest.raises(ValueError, match="Unknown text pool 'imagenet'.*general, shapes"):
        text_pool("imagenet")
    with pytest.raises(TypeError, match="must be a string"):
        text_pool(3)


def test_returns_a_fresh_list():
    pool = text_pool("shapes")
    pool.clear()
    assert text_pool("shapes")


def test_committed_pools_match_the_generator():
    spec = importlib.util.spec_from_file_location(
        "make_text_pools", ROOT / "scripts" / "make_text_pools.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run python scripts/make_text_pools.py"
