"""MkDocs hooks (mkdocs.yml ``hooks:``): the results pages under ``docs/results/`` are written by
scripts and may or may not exist, so the nav entries and the list on ``results/index.md`` are
made from the files present at build time. A strict build then never links to a missing page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESULTS = "results"
INDEX = f"{RESULTS}/index.md"
MARKER = "<!-- results-list -->"
TITLES = {
    "shapes_head_roles.md": "Shapes head roles",
    "segmentation.md": "Segmentation benchmark",
    "segmentation_examples.html": "Segmentation examples (HTML figure)",
    "shapes_head_roles.json": "Shapes head roles (JSON)",
    "segmentation.json": "Segmentation benchmark (JSON)",
    "sae.md": "SAE on the shapes CLIP",
    "sae.json": "SAE on the shapes CLIP (JSON)",
    "circuits.md": "Circuits, neurons and the embedding lens",
    "circuits.json": "Circuits, neurons and the embedding lens (JSON)",
    "beyond_clip.md": "Beyond CLIP: the shapes ViT through CompAlign",
    "beyond_clip.json": "Beyond CLIP (JSON)",
}


def _present(docs_dir: str | Path) -> list[Path]:
    folder = Path(docs_dir) / RESULTS
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.name != "index.md"]
    known = list(TITLES)
    return sorted(files, key=lambda p: (known.index(p.name) if p.name in known else 99, p.name))


def _title(path: Path) -> str:
    return TITLES.get(path.name, path.stem.replace("_", " ").capitalize())


def on_config(config: Any, **kwargs: Any) -> Any:
    """Replace the nav's ``results/index.md`` entry by a section with every results page."""
    pages = [p for p in _present(config["docs_dir"]) if p.suffix == ".md"]
    if not pages or not config["nav"]:
        return config
    section = [{"Overview": INDEX}] + [{_title(p): f"{RESULTS}/{p.name}"} for p in pages]
    for i, item in enumerate(config["nav"]):
        if isinstance(item, dict) and list(item.values()) == [INDEX]:
            config["nav"][i] = {next(iter(item)): section}
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, **kwargs: Any) -> str:
    """Fill the list of results files on the results index."""
    if page.file.src_uri != INDEX or MARKER not in markdown:
        return markdown
    files = _present(config["docs_dir"])
    if not files:
        listing = "None yet: run the commands above to generate them."
    else:
        listing = "\n".join(f"* [{_title(p)}]({p.name})" for p in files)
    return markdown.replace(MARKER, listing)
