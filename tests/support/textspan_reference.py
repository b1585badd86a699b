"""A literal, per-head TextSpan (Gandelsman et al. 2024, Algorithm 1), kept as the test oracle.

This follows the algorithm and the reference code's preprocessing step by step, with no
algebraic shortcuts: the SVD of the (uncentred) head outputs, the projection of the texts onto
its top-``rank`` right singular vectors, centring, then ``m`` rounds of "score every text by the
variance of ``C @ R_j`` over images, take the best, deflate ``C`` and ``R`` by it". It runs in
float64 and shares the two rules the fast version documents: a text already chosen is never
chosen again, and a text whose residual has (numerically) vanished (squared norm <=
``ELIGIBLE_TOL`` times its squared norm as given) is not eligible.

It is slow (``m`` products of ``[images, d] x [d, n_text]`` per head) and is only used by the
tests and by ``benchmarks/bench_textspan.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor

ELIGIBLE_TOL = 1e-12


def textspan_literal(
    head_output: Tensor, texts: Tensor, m: int, rank: int | None = 80, normalize: bool = True
) -> dict[str, Tensor]:
    """Literal TextSpan for one head.

    Args:
        head_output: ``[images, d]`` one head's outputs.
        texts: ``[n_text, d]`` text embeddings.
        m: Number of texts to choose.
        rank: Project the texts onto the top-``rank`` right singular vectors of the uncentred
            head outputs first (``None``: no projection).
        normalize: L2-normalise the texts first.

    Returns:
        dict with ``indices`` ``[m]``, ``explained`` ``[m]`` (cumulative variance of the centred
        outputs explained by the chosen texts), ``total`` (scalar total variance) and
        ``reconstruction`` ``[images, d]`` (``C'`` plus the mean).
    """
    C = head_output.double().clone()
    R = texts.double().clone()
    if normalize:
        R = R / R.norm(dim=-1, keepdim=True)
    given = (R * R).sum(-1)
    n_images = C.shape[0]
    if rank is not None:
        _, _, vh = torch.linalg.svd(C, full_matrices=False)
        vh = vh[:rank]
        R = R @ vh.T @ vh  # project the texts onto the span of the head's top singular vectors
    mean = C.mean(0)
    C = C - mean
    total = (C * C).sum() / n_images
    reconstruction = torch.zeros_like(C)
    picked: list[int] = []
    explained: list[Tensor] = []
    for _ in range(m):
        D = C @ R.T  # [images, n_text]
        variance = D.var(dim=0, correction=0)
        eligible = (R * R).sum(-1) > ELIGIBLE_TOL * given
        eligible[picked] = False
        if not eligible.any():
            raise ValueError("no eligible text left")
        variance[~eligible] = -torch.inf
        j = int(variance.argmax())
        t = R[j].clone()
        tt = t @ t
        coefficient = C @ t / tt
        reconstruction += coefficient[:, None] * t[None, :]
        C = C - coefficient[:, None] * t[None, :]
        R = R - (R @ t / tt)[:, None] * t[None, :]
        picked.append(j)
        explained.append((reconstruction * reconstruction).sum() / n_images)
    return {
        "indices": torch.tensor(picked),
        "explained": torch.stack(explained),
        "total": total,
        "reconstruction": reconstruction + mean,
    }
