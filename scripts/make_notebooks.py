"""Write the notebooks in notebooks/ from the cell sources below (outputs stripped).

Keeping notebook sources in a script makes them reviewable and regenerable, and keeps outputs
and execution counts out of git:

    python scripts/make_notebooks.py          # (re)write notebooks/*.ipynb
    python scripts/make_notebooks.py --check  # exit 1 if a notebook differs from its source here

Edit the cells here, never the .ipynb files (tests/e2e/test_notebooks.py checks that they match, and
executes every notebook). Cell sources are dedented; a line that should start a cell with blank
lines cannot (they are stripped), which notebooks never need.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def md(source: str) -> tuple[str, str]:
    """A markdown cell (the source is dedented and stripped)."""
    return ("markdown", textwrap.dedent(source).strip())


def code(source: str) -> tuple[str, str]:
    """A code cell (the source is dedented and stripped)."""
    return ("code", textwrap.dedent(source).strip())


def real_clip(extra: str = "") -> tuple[str, str]:
    """The markdown cell every notebook has: how to run it on a real open_clip checkpoint."""
    text = textwrap.dedent(
        """
        ## Using a real CLIP instead

        The shapes model loads through the same open_clip path as any checkpoint, so every call
        below works unchanged on a real CLIP; only the loader and the images change:

        ```python
        model, clip = vl.load_clip("ViT-B-32", "openai")  # downloaded on first use
        model, clip = vl.load_clip("ViT-B-16", "/path/to/checkpoint.safetensors")  # local file
        ```

        `model.preprocess` is then that checkpoint's image transform; make a batch from your own
        PIL images with `torch.stack([model.preprocess(im) for im in pil_images])`. A real ViT
        is much bigger than the shapes model: use fewer images per call on a CPU, or
        `device="cuda"`.
        """
    ).strip()
    return ("markdown", text + ("\n\n" + textwrap.dedent(extra).strip() if extra else ""))


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    # ---------------------------------------------------------------------------- 01 quickstart
    "01_quickstart.ipynb": [
        md(
            """
            # vision_lens quickstart

            Load a CLIP image tower into a `HookedViT`, look at its hook points, cache a forward
            pass and decompose the image embedding into the exact direct effects of layers,
            heads and image patches.

            The model is the small CLIP shipped with vision_lens, trained on the procedural
            *shapes world*: coloured, textured shapes on simple backgrounds, generated with exact
            ground truth (attributes and pixel masks). It loads offline in a second, so this
            notebook runs anywhere.
            """
        ),
        real_clip(),
        code(
            """
            import torch

            import vision_lens as vl

            torch.set_grad_enabled(False)  # inference only
            model, clip = vl.load_shapes_clip()  # HookedViT (image tower), CLIPText (text tower)
            model.cfg
            """
        ),
        code(
            """
            scenes = vl.shapes.generate(8, seed=0, n_objects=1)  # images + exact ground truth
            print(scenes.attributes[0])
            scenes.grid(ncols=8, scale=2)
            """
        ),
        md(
            """
            ## Zero-shot classification

            `model(images)` is open_clip's `encode_image`, `clip.encode(texts)` its
            `encode_text`; `clip.classify` turns them into CLIP's logits.
            """
        ),
        code(
            """
            images = torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])
            prompts = vl.shapes.prompts("shape")  # "a circle", "a square", ...
            class_weights = clip.encode(prompts)  # [n_classes, d_embed], unit norm
            logits = clip.classify(model(images), class_weights)  # [n_images, n_classes]
            truth = vl.shapes.labels(scenes, "shape")
            for i, predicted in enumerate(logits.argmax(-1).tolist()):
                print(f"image {i}: {prompts[truth[i]]!r:>14} -> predicted {prompts[predicted]!r}")
            """
        ),
        md(
            """
            ## Hook points

            Every intermediate activation is a named TransformerLens hook point. Attention has
            `hook_q/k/v`, `hook_attn_scores`, `hook_pattern`, `hook_z` and the per-head output
            `hook_result`; blocks have `hook_resid_pre/mid/post`, `hook_attn_out`,
            `hook_mlp_out`.
            """
        ),
        code('model.hook_names("blocks.0.")'),
        code(
            """
            embed, cache = model.run_with_cache(images)
            last = model.cfg.n_layers - 1
            result = cache[f"blocks.{last}.attn.hook_result"]  # [batch, pos, head, d_model]
            embed.shape, result.shape, cache["pattern", -1].shape  # TransformerLens shorthands
            """
        ),
        code(
            """
            # where the class token of the last layer looks, head 0, image 0
            vl.plot.attention_pattern(cache, layer=-1, head=0, image=scenes.images[0])
            """
        ),
        md(
            """
            ## Exact decomposition

            The image embedding is a sum of direct effects: the layer terms (`embed`, each
            attention layer, each MLP, the final bias) add up to it exactly. Attention terms
            split further into heads and into source tokens.
            """
        ),
        code(
            """
            terms, labels = cache.decompose_layers()  # [component, batch, d_embed]
            print(labels)
            print("max |sum of terms - embed| =", (terms.sum(0) - embed).abs().max().item())
            vl.plot.layer_contributions(terms, labels, embed, title="Direct effects by component")
            """
        ),
        code(
            """
            heads = cache.decompose_heads()  # [batch, layer, head, d_embed]
            vl.plot.head_grid(heads.norm(dim=-1).mean(0), title="Mean direct-effect norm per head")
            """
        ),
        code(
            """
            tokens = cache.decompose_tokens()  # [batch, pos, d_embed], pos 0 = the class token
            text = class_weights[truth[0]]  # the true class of image 0
            scores = tokens[0, 1:] @ text  # one score per patch
            vl.plot.token_heatmap(
                scenes.images[0],
                scores.reshape(model.cfg.grid_size),
                title=f"Patch contributions toward {prompts[truth[0]]!r}",
            )
            """
        ),
        code(
            """
            # Only the decomposition? Cache only what it reads (class-token rows and values).
            embed, lean = model.run_with_decomposition_cache(images)
            lean.decompose_heads_tokens(directions=class_weights, layers=[-1]).shape
            """
        ),
        md(
            """
            ## Any plain ViT: DINOv2 with registers (timm) and SigLIP (MAP head)

            The same `HookedViT` loads timm and Hugging Face models, and open_clip's SigLIP
            towers. With real weights: `vl.HookedViT.from_timm("vit_base_patch14_reg4_dinov2",
            pretrained=True, num_classes=0)` and
            `vl.HookedViT.from_open_clip("ViT-B-16-SigLIP", pretrained="webli")`. Here, offline,
            small random versions of the same architectures show the API: register tokens are
            named positions, and SigLIP's attention-pooling MLP is one named component.
            """
        ),
        code(
            """
            dino = vl.HookedViT.from_timm(
                "vit_small_patch14_reg4_dinov2", depth=2, img_size=56, num_classes=0
            )
            x = torch.randn(2, 3, 56, 56)
            feats, dino_cache = dino.run_with_cache(x)
            tokens = dino_cache.decompose_tokens()  # [batch, pos, d_embed]
            print(dino.cfg.readout, dino.cfg.n_registers, dino_cache.token_names()[:6])
            heads = dino_cache.decompose_heads()
            exact = torch.allclose(tokens.sum(1), heads.sum((1, 2)), atol=1e-4)
            print("tokens sum to heads:", exact)
            """
        ),
        code(
            """
            siglip = vl.HookedViT.from_timm(
                "vit_base_patch16_siglip_224",
                depth=2,
                embed_dim=192,
                num_heads=3,
                img_size=64,
                num_classes=0,
            )
            x = torch.randn(2, 3, 64, 64)
            out, siglip_cache = siglip.run_with_cache(x)
            terms, labels = siglip_cache.decompose_layers()
            print(labels, "| sums to the output:", torch.allclose(terms.sum(0), out, atol=1e-4))
            """
        ),
        md(
            """
            Next: `02_textspan` (what each head writes), `03_segmentation` (heatmaps from the
            token decomposition) and `04_circuits` (ablation and activation patching with
            hooks).
            """
        ),
    ],
    # ---------------------------------------------------------------------------- 02 TextSpan
    "02_textspan.ipynb": [
        md(
            """
            # TextSpan: what each attention head writes

            TextSpan (Gandelsman et al. 2024, §4.1) describes an attention head by a few texts:
            from a pool of descriptions it greedily picks the text directions that explain the
            most variance of the head's direct effect on the image embedding. On the shapes-world
            CLIP the ground truth is known, so the descriptions can be tested: mean-ablate the
            heads whose texts are about colour and compare colour with shape classification, and
            retrieve images through one head.

            Whether clear roles appear depends on the weights; the code runs the same either way.
            """
        ),
        real_clip(
            """
            On a real CLIP use the general pool, `vl.text_pool("general")`, a few thousand
            images, and the last layers as in the paper (`layers=range(-4, 0)`, `m=60`,
            `rank=80`). Pick the heads of a role with keywords that fit the data, e.g. colour
            names or `vl.analysis.LOCATION_KEYWORDS`.
            """
        ),
        code(
            """
            import torch

            import vision_lens as vl
            from vision_lens import shapes
            from vision_lens.analysis import head_label

            model, clip = vl.load_shapes_clip()
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads


            def preprocess(scenes):
                return torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])
            """
        ),
        md(
            """
            ## TextSpan on every head

            Scenes with one to four objects, and the `shapes` text pool (descriptions of colours,
            shapes, positions, sizes, textures, backgrounds and counts). `textspan_model` runs
            the model, keeps each head's direct effects, encodes the pool and runs TextSpan.
            """
        ),
        code(
            """
            scenes = shapes.generate(160, seed=0, n_objects=(1, 4))
            pool = vl.text_pool("shapes")
            print(len(pool), "texts, e.g.", pool[:4])
            result = vl.textspan_model(
                model, clip, preprocess(scenes), pool, m=10, rank=64, progress=False
            )
            print(f"{result.n_heads} heads, {result.m} texts each")
            """
        ),
        md(
            """
            Per head, the texts in the order TextSpan chose them, with the variance explained so
            far (here the last two layers; `heads=` picks any):
            """
        ),
        code(
            """
            late_heads = [lh for lh in result.heads if lh[0] >= n_layers - 2]
            vl.plot.textspan_table(result, heads=late_heads, top=5)
            """
        ),
        code(
            """
            explained = result.explained_fraction[:, -1].reshape(n_layers, n_heads)
            vl.plot.head_grid(
                explained, labels=result, top=5, title="Variance explained by the texts (hover)"
            )
            """
        ),
        md(
            """
            ## Heads about colour, heads about shape

            The pool's texts often name several attributes at once ("a red circle"), so a
            head's TextSpan texts can be hard to read. `attribute_variance` asks a narrower
            question: how much of a head's variance lies in the span of one attribute's
            zero-shot class-prompt contrasts? `chance` is what a random subspace of that
            dimension would hold.
            """
        ),
        code(
            """
            outputs, all_heads = vl.decompose_components(
                model, preprocess(scenes), progress=False
            ).head_outputs()
            attributes = ("color", "shape", "position", "size", "texture", "background")
            spans = vl.attribute_variance(
                outputs,
                {a: clip.encode(shapes.prompts(a)) for a in attributes},
                heads=[head_label(*lh) for lh in all_heads],
            )
            roles = spans.roles(min_fraction=0.2, min_lead=1.5)
            colour_heads = [lh for lh, r in zip(all_heads, roles, strict=True) if r == "color"]
            shape_heads = [lh for lh, r in zip(all_heads, roles, strict=True) if r == "shape"]
            print("colour heads:", [head_label(*lh) for lh in colour_heads])
            print("shape heads: ", [head_label(*lh) for lh in shape_heads])
            for lh in colour_heads[:3]:
                print(head_label(*lh), result.texts_for(*lh, top=5))
            """
        ),
        code(
            """
            vl.plot.head_grid(
                spans.fractions[:, 0].reshape(n_layers, n_heads).float(),
                labels=result,
                title="Share of each head's variance in the colour span (hover: its texts)",
            )
            """
        ),
        md(
            """
            ## Ablation check

            On held-out single-object scenes, mean-ablate the direct effects of a set of heads
            and measure zero-shot accuracy on colour and on shape. `decompose_components` keeps
            every head's direct effect from one forward pass, so each ablation is a sum, not a
            new forward pass. Colour heads should hurt colour accuracy more than shape accuracy,
            and more than as many random heads.
            """
        ),
        code(
            """
            evaluation = shapes.generate(160, seed=1, n_objects=1)
            components = vl.decompose_components(model, preprocess(evaluation), progress=False)
            tasks = {
                task: (
                    clip.encode(shapes.prompts(task)),
                    torch.as_tensor(shapes.labels(evaluation, task)),
                )
                for task in ("color", "shape")
            }


            def accuracies(heads):
                return {
                    task: vl.head_ablation_accuracy(components, heads, weights, labels)
                    for task, (weights, labels) in tasks.items()
                }


            generator = torch.Generator().manual_seed(0)
            draw = torch.randperm(len(components.heads), generator=generator)
            random_heads = [components.heads[i] for i in draw[: max(1, len(colour_heads))]]
            rows = {
                "nothing": [],
                f"{len(colour_heads)} colour heads": colour_heads,
                f"{len(shape_heads)} shape heads": shape_heads,
                f"{len(random_heads)} random heads": random_heads,
            }
            print(f"{'ablated':>16} | colour acc | shape acc")
            for name, heads in rows.items():
                acc = accuracies(heads)
                print(f"{name:>16} | {acc['color']:10.1%} | {acc['shape']:9.1%}")
            """
        ),
        md(
            """
            Every head on its own: the drop in colour accuracy minus the drop in shape accuracy
            when that head alone is mean-ablated (hover for its texts).
            """
        ),
        code(
            """
            base = accuracies([])
            colour_vs_shape = torch.zeros(n_layers, n_heads)
            for layer, head in components.heads:
                acc = accuracies([(layer, head)])
                drop = {task: base[task] - acc[task] for task in tasks}
                colour_vs_shape[layer, head] = drop["color"] - drop["shape"]
            vl.plot.head_grid(
                colour_vs_shape,
                labels=result,
                top=5,
                signed=True,
                title="Colour minus shape accuracy drop when one head is ablated",
            )
            """
        ),
        md(
            """
            ## Retrieval through one head

            `image_neighbors` ranks images by the inner product of one head's direct effects
            (the paper's Figure 6): through a colour head the nearest images should share the
            query's colour, through a shape head its shape. With no head selected above, the head
            with the most colour (or shape) texts stands in.
            """
        ),
        code(
            """
            def strongest(attribute):  # the head with the largest share in that span
                column = spans.attributes.index(attribute)
                return all_heads[int(spans.fractions[:, column].argmax())]


            colour_head, shape_head = strongest("color"), strongest("shape")
            outputs, _ = components.head_outputs([colour_head, shape_head])  # [2, images, d]
            through = {
                f"colour head {head_label(*colour_head)}": outputs[0],
                f"shape head {head_label(*shape_head)}": outputs[1],
                "whole embedding": components.total(),
            }
            for name, values in through.items():
                found = vl.image_neighbors(values, k=5)  # every image as a query
                same = {
                    task: (labels[found.indices] == labels[:, None]).float().mean()
                    for task, (_, labels) in tasks.items()
                }
                print(
                    f"{name:>22}: 5 nearest share the colour {same['color']:.0%}, "
                    f"the shape {same['shape']:.0%}"
                )
            """
        ),
        code(
            """
            def describe(i):
                obj = evaluation.attributes[i][0]
                return f"{obj['color']} {obj['shape']}"


            query = 0
            found = vl.image_neighbors(outputs, queries=[query], k=5)  # indices [2 heads, 1, 5]
            index = [query, *found.indices[0, 0].tolist(), query, *found.indices[1, 0].tolist()]
            scores = [None, *found.scores[0, 0].tolist(), None, *found.scores[1, 0].tolist()]
            titles = [
                f"query: {describe(i)}" if k % 6 == 0 else describe(i) for k, i in enumerate(index)
            ]
            vl.plot.retrieval_grid(
                evaluation.images[index],
                scores=scores,
                titles=titles,
                ncols=6,
                title=f"Nearest images through {head_label(*colour_head)} (top) "
                f"and {head_label(*shape_head)} (bottom)",
            )
            """
        ),
        md("Text to image: the images whose colour-head output points most toward a text."),
        code(
            """
            text = "a red object"
            found = vl.text_to_image(outputs[0], clip.encode([text]), k=6)
            vl.plot.retrieval_grid(
                evaluation.images[found.indices[0]],
                scores=found.scores[0],
                titles=[describe(i) for i in found.indices[0].tolist()],
                ncols=6,
                title=f"{text!r} through {head_label(*colour_head)}",
            )
            """
        ),
    ],
    # ---------------------------------------------------------------------------- 03 segmentation
    "03_segmentation.ipynb": [
        md(
            """
            # Zero-shot segmentation from the token decomposition

            Each image patch contributes a direct term to the image embedding
            (`cache.decompose_tokens()`). Its inner product with a text embedding, minus the
            mean over a set of reference texts, is a heatmap of where the image "is" that text
            (Gandelsman et al. 2024, §5). The shapes world has exact object masks, so heatmaps
            can be scored against ground truth with the protocol of Chefer et al. 2021, and
            compared with a classic baseline.
            """
        ),
        real_clip(
            """
            For the ImageNet-segmentation benchmark, `vl.datasets.ImagenetSegmentation(
            "gtsegs_ijcv.mat", transform=model.preprocess)` yields image and mask pairs with the
            same resize and crop, and the `vision-lens eval-seg` command runs the whole
            evaluation.
            """
        ),
        code(
            """
            import torch

            import vision_lens as vl
            from vision_lens import shapes
            from vision_lens.analysis import SegmentationMetrics, attention_rollout, binarize

            model, clip = vl.load_shapes_clip()
            scenes = shapes.generate(96, seed=0, n_objects=1)
            images = torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])
            masks = torch.as_tensor(scenes.foreground)  # bool [N, H, W]: the object's pixels
            texts = [
                shapes.with_article(f"{a[0]['color']} {a[0]['shape']}") for a in scenes.attributes
            ]
            # the reference set: every colour-shape description (the paper: all class names)
            descriptions = [
                shapes.with_article(f"{c} {s}") for c in shapes.COLORS for s in shapes.SHAPES
            ]
            print(images.shape, masks.shape, texts[:4])
            """
        ),
        md(
            """
            The scenes are already at the model's input size (64 pixels), so `model.preprocess`
            does not move pixels and the masks line up with the images as they are.

            ## Heatmaps

            `vl.segment` with one text per image (its own description): `[N, n_text, H, W]`,
            upsampled from the patch grid. With `upsample=False` it returns the patch grid
            itself.
            """
        ),
        code(
            """
            heat = vl.segment(
                model, clip, images, [[t] for t in texts], reference_texts=descriptions
            )
            heat = heat[:, 0]  # [N, H, W]
            grid = vl.segment(
                model, clip, images[:1], [texts[0]], reference_texts=descriptions, upsample=False
            )
            print(heat.shape, grid.shape)
            vl.plot.token_heatmap(scenes.images[0], grid[0, 0], title=f"{texts[0]!r}, per patch")
            """
        ),
        md(
            """
            ## Binarisation and metrics

            The protocol: clip each heatmap at 0, min-max normalise it, and call a pixel
            foreground when it is above the heatmap's mean (`binarize`). `SegmentationMetrics`
            accumulates pixel accuracy, mIoU (background and foreground IoU over the dataset)
            and mAP (average precision of the soft heatmaps) over batches.
            """
        ),
        code(
            """
            predicted = binarize(heat)  # bool [N, H, W]
            overlap = (predicted & masks).flatten(1).sum(1) / (predicted | masks).flatten(1).sum(1)
            print(
                "foreground IoU of the first images:", [round(v, 2) for v in overlap[:6].tolist()]
            )

            rollout = attention_rollout(model, images)  # a text-free baseline, [N, H, W]
            for name, heatmaps in {"decomposition": heat, "attention rollout": rollout}.items():
                metrics = SegmentationMetrics()
                metrics.update(heatmaps, masks)  # call once per batch on a real dataset
                m = metrics.compute()
                print(
                    f"{name:>18}: pixel accuracy {m['pixel_accuracy']:.1%}, mIoU {m['miou']:.1%}, "
                    f"mAP {m['map']:.1%}"
                )
            """
        ),
        code(
            """
            show = [0, 1, 2, 3]
            vl.plot.segmentation_examples(
                scenes.images[show],
                masks[show],
                {
                    "decomposition": heat[show],
                    "binarised": predicted[show].float(),
                    "attention rollout": rollout[show],
                },
                texts=[texts[i] for i in show],
            )
            """
        ),
        md(
            """
            ## Several objects, several texts

            One heatmap per text: in a scene with several objects each description should light
            up its own object.
            """
        ),
        code(
            """
            crowded = shapes.generate(1, seed=5, n_objects=3)
            objects = [
                shapes.with_article(f"{a['color']} {a['shape']}") for a in crowded.attributes[0]
            ]
            scores = vl.segment(
                model,
                clip,
                [crowded.to_pil(0)],  # PIL images go through model.preprocess
                objects,
                reference_texts=descriptions,
                upsample=False,
            )  # [1, n_objects, rows, cols]
            vl.plot.token_heatmap_grid([crowded.images[0]], scores, objects)
            """
        ),
        md(
            """
            ## One head at a time

            `segment_heads` keeps the patch terms per attention head (the joint head x token
            decomposition): `[N, layer, head, n_text, H, W]`. Summed over all layers and heads
            it is `segment`'s heatmap.
            """
        ),
        code(
            """
            per_head = vl.segment_heads(
                model, clip, images[:4], texts[:1], reference_texts=descriptions
            )
            full = vl.segment(model, clip, images[:4], texts[:1], reference_texts=descriptions)
            print(per_head.shape, torch.allclose(per_head.sum((1, 2)), full, atol=1e-4))
            """
        ),
        code(
            """
            layer = model.cfg.n_layers - 1
            maps = vl.segment_heads(
                model, clip, images[:1], texts[:1], reference_texts=descriptions, layers=[layer]
            )[:, 0, :, 0]  # [1, head, H, W]
            vl.plot.segmentation_examples(
                scenes.images[:1],
                masks[:1],
                {f"L{layer}H{h}": maps[:, h] for h in range(maps.shape[1])},
                texts=texts[:1],
                title=f"The heads of layer {layer} on {texts[0]!r}",
            )
            """
        ),
        code(
            """
            head = 0
            maps = vl.segment_heads(
                model,
                clip,
                images[:4],
                shapes.prompts("color")[:4],
                layers=[layer],
                heads=[head],
            )[:, 0, 0]  # [4 images, 4 texts, H, W]
            vl.plot.token_heatmap_grid(
                list(scenes.images[:4]),
                maps,
                shapes.prompts("color")[:4],
                title=f"L{layer}H{head} on four colour prompts",
            )
            """
        ),
    ],
    # ---------------------------------------------------------------------------- 04 circuits
    "04_circuits.ipynb": [
        md(
            """
            # Circuits: ablation and activation patching with hooks

            `model.run_with_hooks(images, fwd_hooks=[(name, fn)])` works as in TransformerLens:
            `fn(activation, hook)` sees each activation and may return a replacement. Heads are
            reached through `blocks.L.attn.hook_z` (`[batch, pos, head, d_head]`, the
            pattern-weighted values) or `blocks.L.attn.hook_result` (`[batch, pos, head,
            d_model]`, each head's output).

            Speed: with nothing attached, attention runs as one fused kernel. Attaching a hook to
            one of a layer's attention hook points switches that layer (only) to the explicit
            computation, and the per-head `hook_result` tensor is built only when `hook_result`
            itself is hooked, so `hook_z` is the cheaper handle on a head.

            Effects are measured on zero-shot logits of the shapes classes.
            """
        ),
        real_clip(
            """
            Class prompts then come from your labels, e.g. `clip.zero_shot_weights(classnames,
            vl.imagenet_templates())`, and counterfactual pairs from your own edited images.
            """
        ),
        code(
            """
            from functools import partial

            import plotly.graph_objects as go
            import torch

            import vision_lens as vl
            from vision_lens import shapes

            torch.set_grad_enabled(False)
            model, clip = vl.load_shapes_clip()
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads


            def preprocess(scenes):
                return torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])


            scenes = shapes.generate(96, seed=0, n_objects=1)
            images = preprocess(scenes)
            labels = torch.as_tensor(shapes.labels(scenes, "shape"))
            class_weights = clip.encode(shapes.prompts("shape"))  # [8 classes, d_embed]


            def metric(embed):
                # mean log-probability of the true shape under CLIP's zero-shot softmax
                logits = clip.classify(embed, class_weights)
                return logits.log_softmax(-1).gather(1, labels[:, None]).mean().item()


            clean = metric(model(images))
            print(f"clean: mean log p(true shape) = {clean:.3f}")
            """
        ),
        md(
            """
            ## Zero ablation of one head

            Set a head's `z` to zero: its output vanishes (the layer's output bias `b_O` stays).
            The same through `hook_result` gives the same embedding. A hook that only observes
            changes nothing (the explicit path equals the fused one up to float rounding).
            """
        ),
        code(
            """
            def zero_head(activation, hook, head):
                activation[:, :, head] = 0.0  # hook_z and hook_result: [batch, pos, head, ...]
                return activation


            layer, head = n_layers - 1, 0
            via_z = model.run_with_hooks(
                images, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", partial(zero_head, head=head))]
            )
            via_result = model.run_with_hooks(
                images,
                fwd_hooks=[(f"blocks.{layer}.attn.hook_result", partial(zero_head, head=head))],
            )
            observed = model.run_with_hooks(
                images, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", lambda z, hook: None)]
            )
            print("hook_z == hook_result ablation:", torch.allclose(via_z, via_result, atol=1e-5))
            print("observing changes nothing:", torch.allclose(observed, model(images), atol=1e-5))
            print(f"L{layer}H{head} zero-ablated: change in metric {metric(via_z) - clean:+.3f}")
            """
        ),
        md(
            """
            ## Mean ablation of every head

            Replace one head's `z` by its mean over the images (per position), for every head in
            turn: a layer x head grid of *total* effects (through later layers too). The
            decomposition gives each head's *direct* effect (its own term in the embedding,
            mean-ablated, later layers untouched) for comparison.
            """
        ),
        code(
            """
            _, cache = model.run_with_cache(
                images, names_filter=lambda name: name.endswith("hook_z")
            )


            def mean_head(z, hook, head):
                z[:, :, head] = cache[hook.name][:, :, head].mean(0)
                return z


            total = torch.zeros(n_layers, n_heads)
            for layer in range(n_layers):
                for head in range(n_heads):
                    hook = (f"blocks.{layer}.attn.hook_z", partial(mean_head, head=head))
                    total[layer, head] = (
                        metric(model.run_with_hooks(images, fwd_hooks=[hook])) - clean
                    )

            components = vl.decompose_components(model, images, progress=False)
            direct = torch.zeros(n_layers, n_heads)
            for layer, head in components.heads:
                ablated = vl.analysis.ablated_embedding(components, [(layer, head)])
                direct[layer, head] = metric(ablated) - clean

            vl.plot.head_grid(total, signed=True, title="Mean-ablating one head: change in log p")
            """
        ),
        code(
            """
            names = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
            fig = go.Figure(
                go.Scatter(x=direct.flatten(), y=total.flatten(), mode="markers", text=names)
            )
            fig.update_layout(
                title="Direct vs total effect of mean-ablating each head",
                xaxis_title="direct effect (decomposition)",
                yaxis_title="total effect (run_with_hooks)",
            )
            fig
            """
        ),
        md(
            """
            ## Activation patching

            Counterfactual pairs: the same seed with the shape fixed to circle or to square
            gives scenes that differ only in the shape (same colour, size, position, texture and
            background). Cache each head's `z` on the circle scenes, then run the square scenes
            with one head's `z` patched in from its circle twin. The change in the logit
            difference `logit(circle) - logit(square)` is the share of the "circle" evidence
            that this one head carries across.
            """
        ),
        code(
            """
            circles = shapes.generate(32, seed=1, n_objects=1, shapes=["circle"])
            squares = shapes.generate(32, seed=1, n_objects=1, shapes=["square"])
            assert [a[0]["color"] for a in circles.attributes] == [
                a[0]["color"] for a in squares.attributes
            ]
            source, target = preprocess(circles), preprocess(squares)
            pair = class_weights[[shapes.SHAPES.index("circle"), shapes.SHAPES.index("square")]]


            def logit_diff(embed):
                logits = clip.classify(embed, pair)
                return (logits[:, 0] - logits[:, 1]).mean().item()


            _, source_cache = model.run_with_cache(
                source, names_filter=lambda n: n.endswith("hook_z")
            )
            clean_diff, corrupt_diff = logit_diff(model(source)), logit_diff(model(target))
            print(f"logit(circle) - logit(square): {clean_diff:.2f} on circles,", end=" ")
            print(f"{corrupt_diff:.2f} on squares")


            def patch_head(z, hook, head):
                z[:, :, head] = source_cache[hook.name][:, :, head]
                return z


            patching = torch.zeros(n_layers, n_heads)
            for layer in range(n_layers):
                for head in range(n_heads):
                    hook = (f"blocks.{layer}.attn.hook_z", partial(patch_head, head=head))
                    patched = model.run_with_hooks(target, fwd_hooks=[hook])
                    patching[layer, head] = logit_diff(patched) - corrupt_diff
            vl.plot.head_grid(
                patching, signed=True, title="Patching one head from circle into square scenes"
            )
            """
        ),
        md(
            """
            The same at the level of whole sublayers: patch the output of each attention layer
            or MLP (`blocks.L.hook_attn_out`, `blocks.L.hook_mlp_out`) at every position.
            """
        ),
        code(
            """
            def patch_output(activation, hook):
                return source_cache_out[hook.name]


            sublayers = [
                f"blocks.{layer}.hook_{part}_out"
                for layer in range(n_layers)
                for part in ("attn", "mlp")
            ]
            _, source_cache_out = model.run_with_cache(source, names_filter=sublayers)
            effect = {"attention": [], "MLP": []}
            for layer in range(n_layers):
                for part, key in (("attn", "attention"), ("mlp", "MLP")):
                    name = f"blocks.{layer}.hook_{part}_out"
                    patched = model.run_with_hooks(target, fwd_hooks=[(name, patch_output)])
                    effect[key].append(logit_diff(patched) - corrupt_diff)
            vl.plot.line_chart(
                effect,
                x=list(range(n_layers)),
                title="Patching one sublayer's output from circle into square scenes",
                xaxis_title="layer",
                yaxis_title="change in logit(circle) - logit(square)",
            )
            """
        ),
    ],
    # --------------------------------------------------------------------- 05 beyond CLIP
    "05_beyond_clip.ipynb": [
        md(
            """
            # Beyond CLIP: reading a ViT that has no text tower

            The decompositions of the earlier notebooks read a CLIP's heads and MLPs with its
            own text tower: every component writes into the space the texts live in. A ViT
            trained for anything else (a classifier, DINO) has no such space. Balasubramanian
            et al. (NeurIPS 2024, *Decomposing and interpreting image representations via text
            in ViTs beyond CLIP*) map each component of such a model into a CLIP's image space
            with its own linear map (**CompAlign**), then read it there with the CLIP's text
            tower.

            vision_lens ships such a pair, trained on the shapes world:

            * the **ViT**: a plain timm `VisionTransformer` classifier (6 layers x 4 heads,
              4 register tokens, no class token, average pooling), loaded with
              `HookedViT.from_timm`; without its head its output is the pooled feature;
            * the **CLIP**: the shapes-world CLIP of the other notebooks (image and text tower);
            * the **CompAlign**: one map per ViT head and MLP into the CLIP's image space,
              fitted label-free (`scripts/train_shapes_compalign.py`).

            Sections: 1. the ViT's exact decomposition; 2. aligning it and checking the
            alignment; 3. scoring components for properties (colour, shape, position);
            4. applications: retrieval, token heatmaps, layer ablation, ranking consistency;
            5. real models and fitting a CompAlign of your own.
            """
        ),
        code(
            """
            import torch
            from IPython.display import display

            import vision_lens as vl
            from vision_lens import shapes
            from vision_lens.shapes.encoding import images_to_tensor
            from vision_lens.shapes.pretrained_vit import shapes_vit_compalign_path

            torch.set_grad_enabled(False)  # inference (section 5's fit turns it back on)
            vit = vl.load_shapes_vit(head=False)  # the ViT classifier without its head
            clip_model, text = vl.load_shapes_clip()  # the CLIP: image and text towers
            aligner = vl.CompAlign.load(shapes_vit_compalign_path())  # ViT components -> CLIP
            n_layers, n_heads = vit.cfg.n_layers, vit.cfg.n_heads
            print(f"ViT: {n_layers} layers x {n_heads} heads, readout {vit.cfg.readout!r},")
            print("     tokens", vit.readout.position_names()[:6], "...")
            print(f"CompAlign: {len(aligner.ids)} maps, {aligner.d_source} -> {aligner.d_clip}")
            """
        ),
        md(
            """
            Every number below is on held-out single-object scenes (seed 10,000: the maps never
            saw them), so each image has one true colour, shape and position. Both models take
            64x64 images normalised the same way: `images_to_tensor` is what each model's
            `preprocess` does to a shapes image, for a whole batch at once.
            """
        ),
        code(
            """
            PROPERTIES = ("color", "shape", "position")
            scenes = shapes.generate(400, seed=10_000, n_objects=1)
            images = images_to_tensor(scenes.images)  # [400, 3, 64, 64], for both models
            labels = {p: torch.as_tensor(shapes.labels(scenes, p)) for p in PROPERTIES}
            class_texts = {p: text.encode(shapes.prompts(p)) for p in PROPERTIES}  # unit norm


            def describe(i):
                obj = scenes.attributes[i][0]
                return f"{obj['color']} {obj['shape']}, {obj['position']}"


            print({p: shapes.prompts(p)[:3] for p in PROPERTIES})
            scenes.grid(ncols=8, scale=2)
            """
        ),
        md(
            """
            ## 1. The ViT's output is a sum of components

            `vl.decompose_components` splits the ViT's output (the patch tokens averaged, then
            normalised by `fc_norm`) into the exact direct effects of every head, every MLP,
            each attention layer's output bias share (`L{l}_attn_bias`), the patch embedding
            and the readout's bias. `select_components` keeps the heads, bias
            shares and MLPs apart and sums the others into one `"rest"` term (the paper's
            `c_init`), as the shipped CompAlign was fitted: these are the components it has
            maps for. Both stay an exact split of the output.
            """
        ),
        code(
            """
            features = vit(images)  # [400, 128]: the pooled feature the head would read
            every = vl.decompose_components(
                vit, images, head_layers=list(range(n_layers)), progress=False
            )
            print(every.labels[:6], "...", every.labels[-3:])
            print("max |sum - ViT output| =", f"{(every.total() - features).abs().max():.1e}")
            components = vl.select_components(every)  # heads, bias shares, MLPs + "rest"
            print(len(components.labels), "components:", components.labels[:6], "...")
            print("still exact:", f"{(components.total() - features).abs().max():.1e}")
            print("the aligner's components:", components.labels == aligner.ids)
            """
        ),
        code(
            """
            is_head = [label.kind == "head" for label in components.labels]
            head_norms = components.terms[is_head].norm(dim=-1).mean(1)
            vl.plot.head_grid(
                head_norms.reshape(n_layers, n_heads),
                title="ViT: mean norm of each head's term in the output",
            )
            """
        ),
        md(
            """
            ## 2. Align: every component into the CLIP's space

            `aligner.align(components)` applies each component's map: `terms`
            `[n, component, d_clip]`. Their sum stands in for the CLIP's embedding of the same
            image. `alignment_report` measures how well: the mean cosine with the CLIP's own
            embedding, and zero-shot accuracy of the mapped sum against the CLIP's class
            prompts next to the CLIP itself (its ceiling). The ViT was never trained on text;
            whatever zero-shot accuracy the mapped sum reaches comes from the maps putting its
            features where the CLIP keeps the same information. A CompAlign with random
            (unfitted) maps is the floor.
            """
        ),
        code(
            """
            aligned = aligner.align(components)  # AlignedComponents: terms, ids
            clip_embeds = clip_model(images)  # the CLIP's own embeddings of the same images
            unfitted = vl.CompAlign(aligner.ids, aligner.d_source, aligner.d_clip, seed=0)
            print("terms", tuple(aligned.terms.shape), "[image, component, d_clip]")
            for name, maps in (("shipped CompAlign", aligner), ("random maps", unfitted)):
                print(name)
                for prop in PROPERTIES:
                    report = vl.alignment_report(
                        maps, components, clip_embeds, class_texts[prop], labels[prop]
                    )
                    print(
                        f"  {prop:>8}: mapped sum {report.accuracy:.2f},",
                        f"CLIP {report.clip_accuracy:.2f},",
                        f"chance {1 / len(class_texts[prop]):.2f}",
                    )
                print(f"  cosine(mapped sum, CLIP embedding) = {report.cosine:.3f}")
            """
        ),
        md(
            """
            ## 3. Scoring components for properties

            `component_scores` is the paper's Algorithm 2. A property is given by the text
            embeddings of its values ("a red object", "a green object", ...), orthogonalised
            into a basis; the score of a component is the mean, over the basis directions, of
            the correlation across images between the component's projection and the whole
            representation's. A component scores high for colour when, along the colour
            directions, it moves with the representation. The heatmaps show the heads (the
            MLPs and `rest` are columns of the same table).
            """
        ),
        code(
            """
            scores = vl.component_scores(aligned, class_texts)  # table [property, component]
            for prop in PROPERTIES:
                display(vl.plot.score_heatmap(scores, prop))
            """
        ),
        md(
            """
            `rank_components(prop)` orders the components for one property;
            `rank_properties(component)` orders the properties for one component. `rest` (the
            embedding and the readout bias) and the attention bias shares are left out of the
            lists below: they are not units one would name.
            """
        ),
        code(
            """
            def top(scores, prop, k=3):  # the k best heads and MLPs for a property
                ranked = scores.rank_components(prop)
                return [c for c, _ in ranked if c.kind in ("head", "mlp")][:k]


            for prop in PROPERTIES:
                best = top(scores, prop)
                print(f"{prop:>8}:", [f"{c} {scores.scores(prop)[c]:.2f}" for c in best])
                first = best[0]
                roles = ", ".join(f"{p} {s:.2f}" for p, s in scores.rank_properties(first))
                print(f"{'':>10}{first} by property: {roles}")
            vl.plot.top_components_chart(scores, top=8)
            """
        ),
        md(
            """
            `method="variance"` is a basis-free variant: the share of the representation's
            variance inside the property's text span that each component accounts for. Over
            components that sum to the representation the shares sum to exactly 1, so the
            bars read as "how much of the colour signal this component carries" (a share can
            be negative: a component that works against the rest).
            """
        ),
        code(
            """
            shares = vl.component_scores(aligned, class_texts, method="variance")
            print("shares sum to", [round(s, 6) for s in shares.table.sum(1).tolist()])
            for prop in PROPERTIES:
                print(f"{prop:>8}:", [str(c) for c in top(shares, prop)])
            vl.plot.top_components_chart(shares, top=8)
            """
        ),
        md(
            """
            ## 4. Applications

            ### Retrieval through one component

            `vl.component_retrieval` ranks images by the cosine between a text and the sum of
            chosen components (mapped into CLIP space). Each colour prompt ("a red object",
            ...) is a query, and precision@16 is the share of the 16 images found whose object
            has that colour. Through the top colour component alone (or the top three) the
            images found should have the queried colour whatever their shape and position,
            well above chance (1/8); through the top shape components the same queries should
            do much worse; through all components together (the mapped sum) it is ordinary
            zero-shot retrieval. The grid shows what the top colour component finds for
            "a red object", with each image's true attributes.
            """
        ),
        code(
            """
            colours = [a[0]["color"] for a in scenes.attributes]
            subsets = {
                "top colour component": top(scores, "color", 1),
                "top 3 colour components": top(scores, "color", 3),
                "top shape component": top(scores, "shape", 1),
                "top 3 shape components": top(scores, "shape", 3),
                "all components": list(aligned.ids),
            }


            def precision(subset, colour, k=16):  # share of the k found with that colour
                query = class_texts["color"][shapes.COLORS.index(colour)]
                hits = vl.component_retrieval(aligned, subset, query_text_embedding=query, k=k)
                return sum(colours[i] == colour for i in hits.indices[0].tolist()) / k


            print(f"{'precision@16':<26}{'mean over colours':>18}{'a red object':>14}")
            for name, subset in subsets.items():
                per_colour = [precision(subset, colour) for colour in shapes.COLORS]
                mean = sum(per_colour) / len(per_colour)
                red = per_colour[shapes.COLORS.index("red")]
                shown = ", ".join(subset[:3]) + (", ..." if len(subset) > 3 else "")
                print(f"{name:<26}{mean:>18.2f}{red:>14.2f}   {shown}")
            print(f"{'chance':<26}{1 / len(shapes.COLORS):>18.2f}")
            """
        ),
        code(
            """
            red = text.encode(["a red object"])
            colour_head = top(scores, "color", 1)
            hits = vl.component_retrieval(aligned, colour_head, query_text_embedding=red, k=8)
            found = hits.indices[0].tolist()
            vl.plot.retrieval_grid(
                scenes.images[found],
                scores=hits.scores[0],
                titles=[describe(i) for i in found],
                ncols=8,
                title=f"'a red object' through {colour_head[0]} alone",
            )
            """
        ),
        md(
            """
            ### Token heatmaps through CompAlign

            A head's term is a sum over the tokens it reads from, and each map is linear, so
            the text's score of a head splits over tokens too: `aligned_token_heatmaps` gives
            every patch's contribution `u^T f_i(c_{i,t})`, summed over the chosen components
            (default: all; the MLPs and `rest` are no sum over tokens and do not enter the
            map). Each column is one colour prompt minus the mean colour prompt
            (`reference_embeddings`), so a patch is warm when it pushes the representation
            toward that colour rather than toward colour in general. On the diagonal (each
            image's own colour) the object should light up.
            """
        ),
        code(
            """
            show = []  # the first images of three different colours
            for i, colour in enumerate(colours):
                if colour not in [colours[j] for j in show]:
                    show.append(i)
                if len(show) == 3:
                    break
            _, cache = vit.run_with_decomposition_cache(images[show])
            queries = [shapes.prompts("color")[labels["color"][i]] for i in show]
            heat = vl.aligned_token_heatmaps(
                cache,
                aligner,
                text.encode(queries),
                reference_embeddings=class_texts["color"],
            )  # [image, text, 8, 8] on the patch grid
            vl.plot.token_heatmap_grid(
                [scenes.images[i] for i in show],
                heat,
                queries,
                title="ViT patches through CompAlign: " + "; ".join(describe(i) for i in show),
            )
            """
        ),
        md(
            """
            ### Layer ablation

            `layer_ablation_curve` replaces every component of a layer by its mean over the
            images, layer after layer from the last one down (the paper's Figure 2), and reads
            zero-shot accuracy off the mapped sum after each step. The first point (nothing
            ablated) is the accuracy of section 2. For comparison, the shapes CLIP itself: it
            *is* a CLIP, so its own components are already in the text space and need no map.
            """
        ),
        code(
            """
            clip_components = vl.select_components(
                vl.decompose_components(
                    clip_model,
                    images,
                    head_layers=list(range(clip_model.cfg.n_layers)),
                    progress=False,
                )
            )
            curves = {}
            for prop in PROPERTIES:
                vit_curve = vl.layer_ablation_curve(aligned, labels[prop], class_texts[prop])
                curves[f"ViT via CompAlign: {prop}"] = vit_curve.accuracy
            for prop in PROPERTIES:
                clip_curve = vl.layer_ablation_curve(
                    clip_components, labels[prop], class_texts[prop]
                )
                curves[f"CLIP itself: {prop}"] = clip_curve.accuracy
            steps = ["none"] + [f"L{min(layers)}+" for layers in vit_curve.layers[1:]]
            vl.plot.line_chart(
                curves,
                x=steps,
                title="Zero-shot accuracy as layers are mean-ablated, last layer first",
                xaxis_title="layers mean-ablated (L3+: block 3 and every later block)",
                yaxis_title="accuracy",
            )
            """
        ),
        md(
            """
            ### Ranking consistency

            `ranking_consistency` compares two score tables: for each property, the Spearman
            correlation between their orderings of the components they share (matched by
            label). Here the ViT's scores through CompAlign against the CLIP's own scores,
            computed directly on its components. The two are different models of the same
            shape, so `L3H2` of one has nothing to do with `L3H2` of the other: head by head
            the correlation says little. Merged into whole layers (`select_components(...,
            heads=False)`: one attention term and one MLP term per block) it asks a question
            that does make sense across models: do both compute a property at the same depth?
            """
        ),
        code(
            """
            clip_scores = vl.component_scores(clip_components, class_texts)  # no map needed
            per_component = vl.ranking_consistency(scores, clip_scores)
            vit_layers = vl.select_components(
                vl.Components(aligned.terms.transpose(0, 1), aligned.ids), heads=False
            )  # the aligned terms, summed per attention layer
            clip_layers = vl.select_components(clip_components, heads=False)
            per_layer = vl.ranking_consistency(
                vl.component_scores(vit_layers, class_texts),
                vl.component_scores(clip_layers, class_texts),
            )
            for prop in PROPERTIES:
                print(
                    f"{prop:>8}: Spearman over heads and MLPs {per_component[prop]:+.2f},",
                    f"over layers {per_layer[prop]:+.2f}",
                )
            print("CLIP's top colour components:", [str(c) for c in top(clip_scores, "color")])
            """
        ),
        md(
            """
            ## 5. Real models

            Everything above works on any ViT vision_lens loads (timm, Hugging Face) and any
            open_clip CLIP. The one new piece is a CompAlign between the two, fitted once
            with `CompAlign.fit` on unlabelled images (the paper: 50,000 ImageNet images, one
            epoch, Adam with `lr=3e-4` and an orthogonality weight of `1/768`, the defaults
            here). Not run in this notebook (it downloads two models):

            ```python
            import torch

            import vision_lens as vl

            vit = vl.HookedViT.from_timm("deit_base_patch16_224", pretrained=True, num_classes=0)
            # or: vl.HookedViT.from_hf("facebook/dinov2-base"), any ViT vision_lens loads
            clip_model, text = vl.load_clip("ViT-B-16", "laion2b_s34b_b88k")

            pil_images = [...]  # unlabelled images from the domain you want to study
            vit_images = torch.stack([vit.preprocess(im) for im in pil_images])
            clip_images = torch.stack([clip_model.preprocess(im) for im in pil_images])
            with torch.no_grad():
                components = vl.select_components(  # heads and MLPs of the last 4 blocks
                    vl.decompose_components(vit, vit_images, head_layers=[8, 9, 10, 11]),
                    last_blocks=4,
                )
                clip_embeds = clip_model(clip_images)
            aligner = vl.CompAlign.for_components(components, d_clip=clip_embeds.shape[-1])
            aligner.fit(components, clip_embeds, epochs=1)  # early stopping on 10% held out
            aligner.save("deit_b16_to_clip_b16/")  # later: vl.CompAlign.load(...)
            ```

            Each model gets its own transform of the same images. For many images on a GPU,
            load both with `device="cuda"` and pass `fit` an iterable of
            `(components, clip_embeds)` batches (a generator or a DataLoader) instead of two
            tensors; every later call (`align`, `component_scores`, the applications) is the
            same as above, with property texts of your own (`text.encode([...])`).

            ### Fitting a CompAlign of your own

            On the shapes pair a fit takes seconds: 500 scenes with one to four objects, no
            labels read, up to 30 epochs at a higher learning rate than the paper's (there
            are few images), early stopping on 10% of them. Then the same held-out report as in
            section 2 for both aligners, and how consistently the two rank the components
            (the same components this time, so the correlation is meaningful head by head).
            """
        ),
        code(
            """
            train_scenes = shapes.generate(500, seed=1, n_objects=(1, 4))  # unlabelled
            train_images = images_to_tensor(train_scenes.images)
            train_components = vl.select_components(
                vl.decompose_components(
                    vit, train_images, head_layers=list(range(n_layers)), progress=False
                )
            )
            train_clip = clip_model(train_images)
            mine = vl.CompAlign.for_components(train_components, d_clip=train_clip.shape[-1])
            with torch.enable_grad():  # fit trains with gradients
                history = mine.fit(train_components, train_clip, epochs=30, lr=3e-3, progress=False)
            print(f"{history.epochs} epochs, kept step {history.best_step}", end="")
            print(" (stopped early)" if history.stopped_early else "")
            vl.plot.line_chart(
                {"held-out cosine": history.val_cosine},
                x=history.steps,
                title="Fitting a CompAlign: held-out cosine with the CLIP embedding",
                xaxis_title="step",
            )
            """
        ),
        code(
            """
            for name, maps in (("shipped", aligner), ("mine", mine)):
                reports = {
                    p: vl.alignment_report(maps, components, clip_embeds, class_texts[p], labels[p])
                    for p in PROPERTIES
                }
                accuracy = ", ".join(f"{p} {r.accuracy:.2f}" for p, r in reports.items())
                print(f"{name:>8}: cosine {reports['color'].cosine:.3f}; zero-shot {accuracy}")
            my_scores = vl.component_scores(mine.align(components), class_texts)
            agreement = vl.ranking_consistency(my_scores, scores)
            print("Spearman, mine vs shipped:", {p: round(r, 2) for p, r in agreement.items()})
            """
        ),
    ],
    # ------------------------------------------------------------ 06 circuits, neurons, SAEs
    "06_circuits_neurons_saes.ipynb": [
        md(
            """
            # Circuits, neurons and sparse autoencoders

            A tour of the analyses beyond the decompositions, on the shapes-world CLIP and a few
            dozen single-object scenes:

            1. TransformerLens' cache methods with vision semantics: the "unembedding" is the
               readout (final norm, pooling, `W_proj`) and logits are scores against text
               directions;
            2. the embedding lens (the logit lens of a vision tower) and the patch lens;
            3. circuits: OV and QK matrices, composition scores and activation patching;
            4. MLP neurons: direct and second-order effects, texts and images that describe
               them;
            5. a sparse autoencoder spliced into the residual stream, with its error kept as a
               term so that every decomposition stays exact.
            """
        ),
        real_clip(
            """
            `sparse_text_decomposition` then wants the general pool,
            `vl.text_pool("general")`, and `top_activating_images` a real dataset (it keeps a
            running top-k, so a DataLoader of any size works). SAEs saved by SAELens load with
            `vl.load_saelens_sae(folder, model=model)`.
            """
        ),
        code(
            """
            from pathlib import Path

            import torch

            import vision_lens as vl
            from vision_lens import shapes
            from vision_lens.analysis import mlp_bias_effect

            torch.set_grad_enabled(False)
            model, clip = vl.load_shapes_clip()
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads


            def preprocess(scenes):
                return torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])


            def describe(i):
                obj = scenes.attributes[i][0]
                return f"{obj['size']} {obj['color']} {obj['shape']}"


            scenes = shapes.generate(32, seed=0, n_objects=1)
            images = preprocess(scenes)
            colour_prompts = shapes.prompts("color")  # "a red object", ...
            colour_weights = clip.encode(colour_prompts)  # [8 colours, d_embed], unit norm
            colours = torch.as_tensor(shapes.labels(scenes, "color"))
            embed, cache = model.run_with_cache(images)
            terms, labels = cache.decompose_layers()
            names = [str(label) for label in labels]
            bias = terms[names.index("bias")]  # the readout's constant, owned by no component
            print(len(scenes), "images;", names)
            """
        ),
        md(
            """
            ## 1. TransformerLens' cache methods

            `cache.accumulated_resid()` is the residual stream before each block and after the
            last, `[stage, batch, pos, d_model]`. `cache.apply_readout_to_stack(stack)` maps
            each term through the readout with the final norm's statistics frozen at this run
            (a linear map), so a stack that sums to the final residual stream maps to terms
            that sum to the output minus `bias`. Read against the colour prompts, the stages
            show from which block on the class token's stream names the colour.
            """
        ),
        code(
            """
            accum, stages = cache.accumulated_resid(return_labels=True)
            through = cache.apply_readout_to_stack(accum)  # [stage, batch, d_embed]
            print(stages, tuple(accum.shape), "->", tuple(through.shape))
            exact = torch.allclose(through[-1] + bias, embed, atol=1e-5)
            print("last stage + bias == output:", exact)
            frozen = (((through + bias) @ colour_weights.T).argmax(-1) == colours).float().mean(1)
            print("colour accuracy per stage:", [round(a, 2) for a in frozen.tolist()])
            """
        ),
        md(
            """
            `cache.logit_attrs(stack, directions)` is TransformerLens' logit attribution with
            text directions in place of tokens: each term through the readout, dotted with each
            text. Over `cache.decompose_resid()` (the embedding and every attention and MLP
            output) the attributions plus `bias` are exactly the output's scores. The chart
            shows which sublayers push each image toward its own colour (minus the mean over
            the eight colours).
            """
        ),
        code(
            """
            stack, parts = cache.decompose_resid(return_labels=True)  # [component, b, pos, d]
            attrs = cache.logit_attrs(stack, colour_weights)  # [component, batch, 8 colours]
            scores = attrs.sum(0) + bias @ colour_weights.T
            exact = torch.allclose(scores, embed @ colour_weights.T, atol=1e-4)
            print("attributions + bias == output scores:", exact)
            own = attrs[:, torch.arange(len(colours)), colours]  # [component, batch]
            vl.plot.line_chart(
                {"own colour - mean colour": (own - attrs.mean(-1)).mean(1).tolist()},
                x=parts,
                title="Attribution of each residual-stream term to the image's colour",
                yaxis_title="mean attribution",
            )
            """
        ),
        md(
            """
            `cache.get_full_resid_decomposition()` splits the stream further: every head
            (`L{l}H{h}`), every MLP neuron (`L{l}N{n}`), the embedding and the biases. With
            `pos_slice=0` it keeps only the class token, the one position the readout reads
            (all 65 positions would be 3,098 terms x 65 x 128 floats per image). The terms
            again sum exactly; the strongest colour writers are listed.
            """
        ),
        code(
            """
            full, components = cache.get_full_resid_decomposition(pos_slice=0, return_labels=True)
            print(len(components), "terms:", components[:2], "...", components[-3:])
            effects = cache.apply_readout_to_stack(full, pos_slice=0)  # [term, batch, d_embed]
            exact = torch.allclose(effects.sum(0) + bias, embed, atol=1e-4)
            print("terms + bias == output:", exact)
            scores = cache.logit_attrs(full, colour_weights, pos_slice=0)  # [term, batch, 8]
            own = scores[:, torch.arange(len(colours)), colours]
            top = (own - scores.mean(-1)).mean(1).topk(8)
            for value, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                print(f"{components[index]:>7}: {value:+.3f}")
            """
        ),
        md(
            """
            ## 2. Embedding lens and patch lens

            `vl.lens_accuracy` puts each stage's residual stream through the readout with the
            final norm *recomputed* on it (the standard logit lens) and classifies it
            zero-shot. Next to it, the frozen-statistics curve from above: the two agree on
            where colour becomes readable. Shape becomes readable later than colour.
            """
        ),
        code(
            """
            shape_weights = clip.encode(shapes.prompts("shape"))
            shape_labels = torch.as_tensor(shapes.labels(scenes, "shape"))
            vl.plot.lens_accuracy_chart(
                {
                    "colour": vl.lens_accuracy(model, images, colour_weights, colours),
                    "shape": vl.lens_accuracy(model, images, shape_weights, shape_labels),
                    "colour, frozen final norm": frozen,
                }
            )
            """
        ),
        md(
            """
            `vl.patch_lens` reads every token's stream at one layer through the readout as if
            it were the class token: a map per text. After block 2 the patches of the object
            should already read as its colour (each map is that colour's score minus the mean
            over the colours).
            """
        ),
        code(
            """
            show = [0, 1, 2]
            maps = vl.patch_lens(model, images[show], colour_weights, layer=2)  # [3, pos, 8]
            maps = maps - maps.mean(-1, keepdim=True)
            own = colours[show]
            vl.plot.patch_lens_grid(
                [scenes.images[i] for i in show],
                maps[torch.arange(len(show)), :, own][..., None],  # [3, pos, 1]: own colour
                ["own colour"],
                n_prefix=model.cfg.n_prefix,
                grid_size=model.cfg.grid_size,
                title="Patch lens after block 2: " + ", ".join(describe(i) for i in show),
            )
            """
        ),
        md(
            """
            ## 3. Circuits

            `model.OV` and `model.QK` are TransformerLens `FactoredMatrix` objects
            `[layer, head, d_model, d_model]` (`W_V @ W_O` and `W_Q @ W_K^T`, never
            multiplied out unless asked): index a head, take singular values or norms.
            """
        ),
        code(
            """
            ov, qk = model.OV, model.QK
            print(ov.shape, "inner rank (d_head):", ov.mdim, "| QK:", qk.shape)
            print("L5H0 OV singular values:", ov[5, 0].S[:4])
            norms = ov.AB.norm(dim=(-2, -1))  # .AB multiplies the factors out: [6, 4, 128, 128]
            vl.plot.head_grid(norms, title="Frobenius norm of each head's OV circuit")
            """
        ),
        md(
            """
            `vl.all_composition_scores(model, mode)` scores how much each earlier head writes
            into the subspace a later head reads with its queries (`"Q"`), keys (`"K"`) or
            values (`"V"`) (Elhage et al. 2021): `[layer, head, layer, head]`, zero unless the
            first head is in an earlier layer.
            """
        ),
        code(
            """
            composition = {mode: vl.all_composition_scores(model, mode) for mode in "QKV"}
            for mode, values in composition.items():
                l1, h1, l2, h2 = torch.unravel_index(values.argmax(), values.shape)
                print(f"{mode}: strongest L{l1}H{h1} -> L{l2}H{h2} ({values.max():.3f})")
            vl.plot.composition_heatmap(composition["V"], mode="V")
            """
        ),
        md(
            """
            `vl.patch_activations` runs clean images once with a cache, then the corrupted
            images once per patch with that activation (one position, one head) taken from the
            clean run. Pairs from the same seed with the colour fixed to red or to blue, and
            the object fixed in the centre, differ only in colour; the metric is
            `logit(red) - logit(blue)`. Patching the residual stream at the class token and at
            four patches across the object's row shows the colour moving from the object's
            patches (early blocks) to the class token (later blocks).
            """
        ),
        code(
            """
            red = preprocess(
                shapes.generate(8, seed=5, n_objects=1, colors=["red"], positions=["center"])
            )
            blue = preprocess(
                shapes.generate(8, seed=5, n_objects=1, colors=["blue"], positions=["center"])
            )
            RED, BLUE = shapes.COLORS.index("red"), shapes.COLORS.index("blue")


            def logit_diff(out):
                logits = clip.classify(out, colour_weights)
                return (logits[:, RED] - logits[:, BLUE]).mean()


            rows, cols = model.cfg.grid_size
            row = 4  # the object covers patch rows 3-4, columns 3-4
            positions = [0] + [model.cfg.n_prefix + row * cols + c for c in range(2, 6)]
            per_position = vl.patch_activations(
                model, red, blue, logit_diff, "resid_pre", positions=positions
            )
            print(f"clean {per_position.clean:.2f}, corrupted {per_position.corrupted:.2f}")
            position_names = model.readout.position_names()
            vl.plot.patching_heatmap(
                per_position,
                x_labels=[position_names[p] for p in positions],
                title="Patching the residual stream from red into blue scenes (recovered)",
            )
            """
        ),
        code(
            """
            per_head = vl.patch_activations(
                model, red, blue, logit_diff, "z", positions="all", heads="each"
            )
            vl.plot.patching_heatmap(per_head, title="Patching one head's z (recovered)")
            """
        ),
        md(
            """
            ## 4. Neurons

            `vl.neuron_direct_effects(cache, layer)` maps each MLP neuron's output at the class
            token through the frozen readout, `[batch, d_mlp, d_embed]`; with the MLP's bias
            (`mlp_bias_effect`) the neurons sum to that MLP's term of `decompose_layers`. With
            `directions=` they are scored against texts directly.
            """
        ),
        code(
            """
            layer = n_layers - 2
            direct = vl.neuron_direct_effects(cache, layer)  # [batch, d_mlp, d_embed]
            mlp_term = terms[names.index(f"L{layer}_mlp")]
            summed = direct.sum(1) + mlp_bias_effect(cache, layer)
            print("neurons + bias == MLP term:", torch.allclose(summed, mlp_term, atol=1e-4))
            toward = vl.neuron_direct_effects(cache, layer, directions=colour_weights)
            own = toward[torch.arange(len(colours)), :, colours]  # [batch, d_mlp]
            best = (own - toward.mean(-1)).mean(0).topk(5)
            print(f"L{layer} neurons writing the image's colour:", best.indices.tolist())
            """
        ),
        md(
            """
            Earlier neurons act mostly through later attention heads. Their second-order effect
            (Gandelsman et al. 2025) carries each neuron's output through every later head
            (frozen patterns and norms) to the output. The neuron of block 2 with the largest
            one is described by `sparse_text_decomposition` (a sparse non-negative combination
            of texts from the `shapes` pool, as SpLiCE) and by the images that excite it
            most (`top_activating_images`).
            """
        ),
        code(
            """
            early = 2
            second = vl.neuron_second_order_effects(cache, early)  # [batch, d_mlp, d_embed]
            neuron = int(second.norm(dim=-1).mean(0).argmax())
            pool = vl.text_pool("shapes")
            pool_embeddings = clip.encode(pool)
            texts = vl.sparse_text_decomposition(
                second[:, neuron].mean(0), pool_embeddings, pool, n_terms=5
            )
            print(f"L{early}N{neuron}:", texts.texts, f"(cosine {texts.cosine:.2f})")
            top = vl.top_activating_images(model, images, early, [neuron], k=6, progress=False)
            found = top.indices[0].tolist()
            vl.plot.retrieval_grid(
                scenes.images[found],
                scores=top.values[0],
                titles=[describe(i) for i in found],
                ncols=6,
                title=f"Images that activate L{early}N{neuron} most",
            )
            """
        ),
        md(
            """
            ## 5. A sparse autoencoder

            vision_lens ships an SAE with 256 features trained on the class token at
            `blocks.3.hook_resid_post` (`scripts/train_shapes_sae.py`), in SAELens' on-disk
            format. `vl.run_with_sae_cache` splices it in: the activation becomes
            reconstruction + error, so the output is unchanged, and the cache gains
            `<hook>.sae.hook_features`, `hook_reconstruction` and `hook_error`.
            """
        ),
        code(
            """
            folder = Path(vl.__file__).parent / "shapes/weights/shapes_sae_L3_resid_post"
            sae = vl.load_saelens_sae(folder, model=model)
            hook = sae.hook_name  # "blocks.3.hook_resid_post"
            out, sae_cache = vl.run_with_sae_cache(model, images, {hook: sae})
            features = sae_cache[f"{hook}.sae.hook_features"]  # [batch, pos, d_sae]
            print("output unchanged:", torch.allclose(out, embed, atol=1e-5))
            print(f"{sae.d_sae} features, {(features[:, 0] > 0).sum(1).float().mean():.0f} active")
            """
        ),
        md(
            """
            `vl.sae_direct_effects` maps every feature (`f_i W_dec[i]`), the decoder bias and
            the error through the frozen readout. They sum exactly to the direct effect of the
            hooked residual stream: the embedding plus every sublayer up to block 3. With the
            colour prompts as directions, the features that write "red" most; the images on
            which the strongest one fires should be red.
            """
        ),
        code(
            """
            sae_effects = vl.sae_direct_effects(sae_cache, hook, sae)
            upto = terms[: names.index("L3_mlp") + 1].sum(0)  # embed, L0_attn, ..., L3_mlp
            error = (sae_effects.total() - upto).abs().max().item()
            print(f"features + decoder bias + error vs embed..L3_mlp: max difference {error:.1e}")
            print(
                "error share of the direct effect:",
                f"{(sae_effects.error.norm(dim=-1) / upto.norm(dim=-1)).mean():.2f}",
            )
            toward = vl.sae_direct_effects(sae_cache, hook, sae, directions=colour_weights)
            red_features = (toward.features[..., RED] - toward.features.mean(-1)).mean(0).topk(3)
            print("features writing 'red':", red_features.indices.tolist())
            feature = int(red_features.indices[0])
            activation = features[:, 0, feature]
            order = activation.argsort(descending=True)[:6].tolist()
            vl.plot.retrieval_grid(
                scenes.images[order],
                scores=activation[order],
                titles=[describe(i) for i in order],
                ncols=6,
                title=f"Images on which SAE feature {feature} fires most",
            )
            """
        ),
    ],
}


def cell(kind: str, source: str, cell_id: str) -> dict:
    """One nbformat 4.5 cell; code cells have no outputs and no execution count."""
    lines = source.splitlines(keepends=True)
    if kind == "markdown":
        return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": lines}
    if kind != "code":
        raise ValueError(f"unknown cell kind {kind!r}")
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": cell_id,
        "metadata": {},
        "outputs": [],
        "source": lines,
    }


def render(name: str) -> str:
    """The exact text of notebook ``name`` (as written to notebooks/)."""
    notebook = {
        "cells": [
            cell(kind, source, f"cell-{i:02d}") for i, (kind, source) in enumerate(NOTEBOOKS[name])
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    # nbformat's own layout, so saving an unchanged notebook from Jupyter changes nothing
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def stale(out_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """Problems with the notebooks on disk: missing, different from :func:`render`, or not
    generated here."""
    problems = []
    for name in NOTEBOOKS:
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != render(name):
            problems.append(f"{name}: differs from scripts/make_notebooks.py (or has outputs)")
    for path in sorted(out_dir.glob("*.ipynb")):
        if path.name not in NOTEBOOKS:
            problems.append(f"{path.name}: not generated by scripts/make_notebooks.py")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if any notebook differs from what this script writes",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("Run: python scripts/make_notebooks.py", file=sys.stderr)
        return 1 if problems else 0
    NOTEBOOK_DIR.mkdir(exist_ok=True)
    for name in NOTEBOOKS:
        (NOTEBOOK_DIR / name).write_text(render(name), encoding="utf-8")
        print("wrote", NOTEBOOK_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
