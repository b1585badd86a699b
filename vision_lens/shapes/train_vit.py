"""Train the shapes-world ViT classifier (a plain timm ViT, not a CLIP) on CPU, resumably.

Supervised, DeiT-style without distillation: the model (:mod:`vision_lens.shapes.vit_classifier`)
has one linear head over the concatenated class logits of every attribute, and the loss is the
sum of one cross-entropy per attribute slice (object attributes on single-object scenes,
background and object count on every scene). The data pipeline is the shapes CLIP's
(:func:`~vision_lens.shapes.train_data.make_training_scenes`,
:func:`~vision_lens.shapes.train_data.epoch_batches`,
:func:`~vision_lens.shapes.objectives.attribute_targets`), and so are the schedule
(:func:`~vision_lens.shapes.objectives.lr_at`: linear warmup, cosine decay) and the parameter
groups. ``scripts/train_shapes_vit.py`` is the command line.

Every ``checkpoint_every`` steps the model, optimiser, step and logs go to
``<out>/checkpoint.pt``; :func:`train_shapes_vit` with ``resume=True`` continues from it (the
scenes are regenerated from the seed and the batch order replayed, so a resumed run sees the
same batches as an uninterrupted one). At the end it writes ``shapes_vit.safetensors`` (float16
timm state dict), ``shapes_vit.json`` (:meth:`ShapesViTConfig.to_dict`) and
``shapes_vit_train_log.json``.

Example:
    >>> cfg = ViTTrainConfig(steps=2, batch_size=4, n_images=8, n_val=4, warmup=1,
    ...                      eval_every=0, model=ShapesViTConfig(embed_dim=32, depth=1,
    ...                      num_heads=2))
    >>> result = train_shapes_vit(cfg, progress=False, log=None)
    >>> result.steps_done, len(result.losses)
    (2, 2)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vision_lens.shapes.clip_model import save_weights
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.generator import generate
from vision_lens.shapes.objectives import attribute_targets, lr_at, param_groups
from vision_lens.shapes.train_data import (
    VALIDATION_SEED,
    epoch_batches,
    make_training_scenes,
)
from vision_lens.shapes.vit_classifier import (
    ShapesViTConfig,
    build_vit,
    classifier_accuracy,
    classifier_loss,
)
from vision_lens.utils.batching import progress_bar

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "WEIGHTS_NAME",
    "ViTTrainConfig",
    "ViTTrainResult",
    "evaluate_classifier",
    "train_shapes_vit",
]

#: File names written into the output directory.
WEIGHTS_NAME = "shapes_vit.safetensors"
CONFIG_NAME = "shapes_vit.json"
LOG_NAME = "shapes_vit_train_log.json"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class ViTTrainConfig:
    """Hyper-parameters of :func:`train_shapes_vit`.

    Attributes:
        seed: Seeds the scenes, the initialisation and the batch order.
        steps: Optimiser steps (the cosine schedule's length).
        batch_size: Scenes per step.
        lr: Peak learning rate (AdamW).
        warmup: Linear-warmup steps.
        min_lr_ratio: Final learning rate / ``lr``.
        weight_decay: AdamW weight decay (not on gains, biases and norms).
        grad_clip: Gradient-norm clip (0 for none).
        n_images: Training scenes (generated once, kept in memory as uint8).
        p_single: Fraction of single-object scenes (the rest have 2-4 objects).
        sincos_pos_init: Start the position embedding from 2D sin-cos values.
        threads: ``torch.set_num_threads`` during training.
        eval_every: Validate the head every this many steps (0: only at the end).
        n_val: Single-object validation scenes (seed ``VALIDATION_SEED``).
        checkpoint_every: Write ``checkpoint.pt`` every this many steps (needs ``out``).
        max_minutes: Stop (with a checkpoint) after this much wall time; ``None`` for no limit.
        model: The architecture.

    Example:
        >>> ViTTrainConfig().model.depth
        6
    """

    seed: int = 0
    steps: int = 2700
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    n_images: int = 100_000
    p_single: float = 0.85
    sincos_pos_init: bool = True
    threads: int = 2
    eval_every: int = 300
    n_val: int = 500
    checkpoint_every: int = 100
    max_minutes: float | None = None
    model: ShapesViTConfig = field(default_factory=ShapesViTConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (the model as :meth:`ShapesViTConfig.to_dict`)."""
        out = asdict(self)
        out["model"] = self.model.to_dict()
        return out


@dataclass
class ViTTrainResult:
    """What :func:`train_shapes_vit` returns.

    Example:
        >>> ViTTrainResult(torch.nn.Linear(1, 1), None, [0.5], [], 1.0, 1, True).steps_done
        1
    """

    model: torch.nn.Module
    weights_path: Path | None
    losses: list[float]
    history: list[dict[str, Any]]
    seconds: float
    steps_done: int
    finished: bool


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module, cfg: ShapesViTConfig, scenes: Any, batch_size: int = 250
) -> dict[str, float]:
    """The head's per-attribute accuracy on ``scenes`` (a ``ShapesDataset`` or training scenes).

    The model is put back into its previous train/eval mode.

    Example:
        >>> cfg = ShapesViTConfig(embed_dim=32, depth=1, num_heads=2)
        >>> acc = evaluate_classifier(build_vit(cfg), cfg, generate(4, seed=0, n_objects=1))
        >>> sorted(acc)[:3]
        ['background', 'color', 'count']
    """
    was_training = model.training
    model.eval()
    logits = torch.cat(
        [
            model(images_to_tensor(scenes.images[i : i + batch_size]))
            for i in range(0, len(scenes.images), batch_size)
        ]
    )
    model.train(was_training)
    return classifier_accuracy(logits, attribute_targets(scenes, range(len(logits))), cfg)


def train_shapes_vit(
    cfg: ViTTrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    steps: int | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    log: Callable[[str], object] | None = print,
) -> ViTTrainResult:
    """Train the shapes-world ViT classifier; with ``out``, checkpoint and save the result.

    Args:
        cfg: Hyper-parameters and architecture.
        out: Directory for ``checkpoint.pt`` and, once all ``cfg.steps`` are done,
            ``shapes_vit.safetensors``, ``shapes_vit.json`` and ``shapes_vit_train_log.json``;
            ``None`` saves nothing.
        resume: Continue from ``<out>/checkpoint.pt`` if it exists (its config wins over
            ``cfg``, except ``max_minutes``).
        steps: With ``resume``, a new schedule length that replaces the checkpoint's (to extend
            a run; the cosine schedule continues from the checkpoint's step with the new
            length).
        stop_after: Stop (with a checkpoint) after this many steps in all, e.g. to split a run.
        progress: Show a progress bar.
        log: Function for progress lines (JSON validation records); ``None`` to silence.

    Returns:
        A :class:`ViTTrainResult`; ``finished`` is False when the run stopped early
        (``stop_after`` or ``max_minutes``), in which case only the checkpoint is written.

    Example:
        >>> import tempfile
        >>> tiny = ShapesViTConfig(embed_dim=32, depth=1, num_heads=2)
        >>> cfg = ViTTrainConfig(steps=3, batch_size=4, n_images=8, n_val=4, warmup=1,
        ...                      eval_every=0, checkpoint_every=1, model=tiny)
        >>> out = tempfile.mkdtemp()
        >>> train_shapes_vit(cfg, out, stop_after=2, progress=False, log=None).finished
        False
        >>> train_shapes_vit(cfg, out, resume=True, progress=False, log=None).steps_done
        3
    """
    log = log or (lambda *a, **k: None)
    t_start = time.time()
    out_dir = Path(out) if out is not None else None
    ckpt_path = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    state = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        max_minutes = cfg.max_minutes
        saved = dict(state["config"])
        saved["model"] = ShapesViTConfig.from_dict(saved["model"])
        cfg = ViTTrainConfig(**{**saved, "max_minutes": max_minutes})
        if steps is not None and steps != cfg.steps:
            log(f"schedule length {cfg.steps} -> {steps} steps")
            cfg.steps = steps
            state.setdefault("schedule_changes", []).append([state["step"], steps])
        log(f"resuming from {ckpt_path} at step {state['step']}")

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_vit(cfg.model, sincos_pos_init=cfg.sincos_pos_init)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999)
    )
    start, losses, history, seconds_before = 0, [], [], 0.0
    schedule_changes = [] if state is None else state.get("schedule_changes", [])
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, losses, history = state["step"], state["losses"], state["history"]
        seconds_before = state["seconds"]
    model.train()

    t0 = time.time()
    image_size = cfg.model.img_size
    scenes = make_training_scenes(
        cfg.n_images, cfg.seed, cfg.p_single, image_size, progress=progress
    )
    val = generate(cfg.n_val, seed=VALIDATION_SEED, n_objects=1, image_size=image_size)
    log(f"generated {len(scenes)} training scenes in {time.time() - t0:.0f}s")
    batches = epoch_batches(len(scenes), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    for _ in range(start):  # replay the batch order up to the checkpoint
        next(batches)

    def seconds() -> float:
        return seconds_before + time.time() - t_start

    def checkpoint(step: int) -> None:
        if ckpt_path is None:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "config": cfg.to_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "losses": losses,
            "history": history,
            "seconds": seconds(),
            "schedule_changes": schedule_changes,
        }
        torch.save(record, str(ckpt_path) + ".tmp")
        Path(str(ckpt_path) + ".tmp").replace(ckpt_path)

    deadline = t_start + 60 * cfg.max_minutes if cfg.max_minutes else None
    bar = progress_bar(cfg.steps, "train", enabled=progress, unit="step")
    bar.update(start)
    step = start
    finished = start >= cfg.steps
    while step < cfg.steps:
        idx, epoch = next(batches)
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = lr
        logits = model(images_to_tensor(scenes.images[idx]))
        loss = classifier_loss(logits, attribute_targets(scenes, idx), cfg.model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        bar.set_postfix(
            loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.2e}", ep=epoch, refresh=False
        )
        bar.update()
        finished = step >= cfg.steps
        stop = (stop_after is not None and step >= stop_after) or (
            deadline is not None and time.time() > deadline
        )
        if (cfg.eval_every and step % cfg.eval_every == 0) or finished:
            rec = {
                "step": step,
                "loss": float(np.mean(losses[-50:])),
                "minutes": seconds() / 60,
                **{f"val_{k}": v for k, v in evaluate_classifier(model, cfg.model, val).items()},
            }
            history.append(rec)
            log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}))
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or finished or stop:
            checkpoint(step)
        if stop and not finished:
            log(f"stopping at step {step} (resume with resume=True)")
            break
    bar.close()
    model.eval()

    weights_path = None
    if out_dir is not None and finished:
        meta = {"config": json.dumps(cfg.model.to_dict()), "steps_done": str(step)}
        weights_path = save_weights(model, out_dir / WEIGHTS_NAME, meta)
        cfg.model.save(out_dir / CONFIG_NAME)
        log_record = {
            "train_config": cfg.to_dict(),
            "steps_done": step,
            "schedule_changes": schedule_changes,
            "seconds": seconds(),
            "history": history,
            "losses_every_10": losses[::10],
        }
        (out_dir / LOG_NAME).write_text(json.dumps(log_record, indent=1) + "\n")
    return ViTTrainResult(model, weights_path, losses, history, seconds(), step, finished)
