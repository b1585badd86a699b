"""Write the notebooks in notebooks/ from the cell sources below (outputs stripped).

Keeping notebook sources in a script makes them reviewable and regenerable:
    python scripts/make_notebooks.py
"""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_quickstart.ipynb": [
        (
            "markdown",
            "# vision_lens quickstart\n\n"
            "Load an OpenCLIP ViT into a `HookedViT`, look at its hook points, cache a forward "
            "pass and decompose the image embedding into exact direct effects.\n\n"
            "This notebook uses random weights so it runs anywhere offline. With internet (or a "
            'local checkpoint), pass `pretrained="laion2b_s34b_b88k"` or a file path.',
        ),
        (
            "code",
            "import torch\n"
            "import vision_lens as vl\n\n"
            'model = vl.HookedViT.from_open_clip("ViT-B-32", pretrained=None)  # random weights\n'
            "model.cfg",
        ),
        ("code", 'model.hook_names("blocks.0.")'),
        (
            "code",
            "images = torch.randn(2, 3, *model.cfg.image_size)\n"
            "embed, cache = model.run_with_cache(images)\n"
            'result = cache["blocks.10.attn.hook_result"]  # [batch, pos, head, d_model]\n'
            'embed.shape, result.shape, cache["pattern", -1].shape',
        ),
        (
            "markdown",
            "## Exact decomposition\n\nThe layer terms sum to the embedding; heads and tokens "
            "split the attention terms further.",
        ),
        (
            "code",
            "terms, labels = cache.decompose_layers()\n"
            "print(labels[:5], '...')\n"
            "print('max |sum - embed| =', (terms.sum(0) - embed).abs().max().item())\n"
            "heads = cache.decompose_heads()          # [batch, layer, head, d_embed]\n"
            "tokens = cache.decompose_tokens()        # [batch, pos, d_embed]\n"
            "heads.norm(dim=-1)[0]                    # direct-effect size of each head",
        ),
        (
            "code",
            "# Only the decomposition? Cache only what it reads.\n"
            "embed, lean = model.run_with_decomposition_cache(images)\n"
            "directions = torch.randn(5, model.cfg.d_embed)\n"
            "lean.decompose_heads_tokens(directions=directions, layers=[-1]).shape",
        ),
    ],
}


def cell(kind: str, source: str) -> dict:
    lines = source.splitlines(keepends=True)
    if kind == "markdown":
        return {"cell_type": "markdown", "metadata": {}, "source": lines}
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {},
        "outputs": [],
        "source": lines,
    }


def main() -> None:
    out_dir = Path(__file__).resolve().parent.parent / "notebooks"
    out_dir.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        notebook = {
            "cells": [cell(kind, src) for kind, src in cells],
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (out_dir / name).write_text(json.dumps(notebook, indent=1) + "\n")
        print("wrote", out_dir / name)


if __name__ == "__main__":
    main()
