"""Self-supervised objectives and their diagnostics as pure functions of embeddings.

No module state: queues, momentum encoders and gathering across ranks live in the methods
(`moco.py`, `simclr.py`, ...). Every function L2-normalises its inputs itself and computes in
float32 with autocast off (similarities divided by a temperature of 0.1-0.2 lose too much in
bf16), so callers may pass raw projector outputs from a bf16-mixed run. Masks are bool with
True = "exclude this pair" (a negative from the anchor's own patient is not a negative).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x.float(), dim=-1)


def _float32(fn):
    """Run `fn` with autocast disabled on the device of its first tensor argument."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)
    return wrapper


@_float32
def info_nce(q: Tensor, k: Tensor, queue: Tensor | None = None, temperature: float = 0.2,
             queue_mask: Tensor | None = None) -> Tensor:
    """MoCo's InfoNCE: row i of `k` is the positive of `q[i]`, the rows of `queue` its negatives.

    q, k: (B, D); queue: (K, D) negatives (None: the other rows of `k`, MoCo v3 style);
    queue_mask: (B, K) bool (or (B, B) when queue is None), True drops that negative for that
    anchor. Loss per anchor: -log(exp(q.k/t) / (exp(q.k/t) + sum_unmasked exp(q.n/t))),
    averaged over the batch. An anchor whose negatives are all masked contributes 0.
    """
    q, k = _unit(q), _unit(k)
    l_pos = (q * k).sum(dim=1, keepdim=True)                         # (B, 1)
    if queue is None:
        l_neg = q @ k.T                                               # (B, B), diagonal = positive
        self_pair = torch.eye(len(q), dtype=torch.bool, device=q.device)
        queue_mask = self_pair if queue_mask is None else (queue_mask.bool() | self_pair)
    else:
        l_neg = q @ _unit(queue).T                                    # (B, K)
    if queue_mask is not None:
        l_neg = l_neg.masked_fill(queue_mask.bool(), float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)   # the positive is column 0
    return F.cross_entropy(logits, target)


@_float32
def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float = 0.2, mask: Tensor | None = None, *,
            all_a: Tensor | None = None, all_b: Tensor | None = None, offset: int = 0) -> Tensor:
    """SimCLR's NT-Xent: both views are anchors; each has 1 positive and 2N-2 negatives.

    z_a, z_b: (n, D) the local batch, row i of z_a and z_b a positive pair. Candidates are all 2N
    embeddings `all_a`, `all_b` (N, D) (default: z_a, z_b, so N = n); under DDP pass the gathered
    batches and this rank's `offset` (rank * n): local row i is global row offset + i. Anchors are
    only the local 2n rows, so the mean over ranks of this loss equals the global-batch loss.
    mask: (n, N) bool, True = local sample i and global sample j must not be negatives of each
    other (same patient); it applies to both views of both samples; positives are never masked.
    Loss: mean over anchors of -log(exp(s_pos/t) / sum_{c != self, unmasked} exp(s_c/t)).
    """
    if all_a is None:
        all_a, all_b = z_a, z_b
    n, big_n = len(z_a), len(all_a)
    anchors = torch.cat([_unit(z_a), _unit(z_b)])                     # (2n, D)
    cands = torch.cat([_unit(all_a), _unit(all_b)])                   # (2N, D)
    logits = anchors @ cands.T / temperature                          # (2n, 2N)
    g = torch.arange(n, device=z_a.device) + offset                   # global row of each local row
    self_col = torch.cat([g, g + big_n])
    pos_col = torch.cat([g + big_n, g])
    rows = torch.arange(2 * n, device=z_a.device)
    drop = torch.zeros(2 * n, 2 * big_n, dtype=torch.bool, device=z_a.device)
    if mask is not None:
        drop = mask.bool().repeat(2, 2)
        drop[rows, pos_col] = False
    drop[rows, self_col] = True
    logits = logits.masked_fill(drop, float("-inf"))
    return F.cross_entropy(logits, pos_col)


@_float32
def mocov3_loss(q: Tensor, k_all: Tensor, offset: int = 0, temperature: float = 0.2,
                mask: Tensor | None = None) -> Tensor:
    """MoCo v3's InfoNCE (Chen et al. 2021) with in-batch keys from all ranks, no queue.

    q: (n, D) this rank's queries; k_all: (N, D) the momentum keys of the global batch (gathered,
    no gradient), the positive of q[i] is k_all[offset + i] (offset = rank * n), every other key
    a negative; mask: (n, N) bool, True drops that key as a negative (same patient; the positive
    is never dropped). Multiplied by 2 * temperature as facebookresearch/moco-v3 does, which keeps
    the gradient scale independent of the temperature (chance level: 2t ln N).
    """
    n = q.shape[0]
    rows = torch.arange(n, device=q.device)
    drop = torch.zeros(n, k_all.shape[0], dtype=torch.bool, device=q.device)
    if mask is not None:
        drop = mask.bool().clone()
    drop[rows, rows + offset] = True        # the positive is info_nce's column 0, not a negative
    return 2 * temperature * info_nce(q, k_all[offset:offset + n], k_all, temperature, drop)


@_float32
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL regression loss 2 - 2 cos(p, z), averaged over the batch; p, z: (B, D).

    `z` is the target projection: the caller passes it without gradient (target network).
    Range [0, 4]; 0 when the prediction points where the target does.
    """
    return (2 - 2 * (_unit(p) * _unit(z)).sum(dim=1)).mean()


@_float32
def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 0.5,
                 distance: Literal["euclidean", "cosine"] = "euclidean",
                 weight: Tensor | None = None) -> Tensor:
    """Margin loss mean(relu(d(a, p) - d(a, n) + margin)) on L2-normalised (B, D) embeddings.

    distance "euclidean": d = ||a - b||_2 in [0, 2]; "cosine": d = 1 - cos(a, b) in [0, 2]
    (= half the squared Euclidean distance of unit vectors). `weight` (B,) float 0/1 drops rows
    without a valid negative; the mean is over the kept rows (0 when none is kept).
    """
    a, p, n = _unit(anchor), _unit(positive), _unit(negative)
    if distance == "euclidean":
        d_ap, d_an = (a - p).norm(dim=1), (a - n).norm(dim=1)
    elif distance == "cosine":
        d_ap, d_an = 1 - (a * p).sum(dim=1), 1 - (a * n).sum(dim=1)
    else:
        raise ValueError(f"unknown triplet distance {distance!r}; choose euclidean or cosine")
    per_row = F.relu(d_ap - d_an + margin)
    if weight is None:
        return per_row.mean()
    weight = weight.to(per_row.dtype)
    return (per_row * weight).sum() / weight.sum().clamp(min=1)


# ----------------------------------------------------------------------------- diagnostics
@_float32
def feature_std(z: Tensor) -> Tensor:
    """Collapse detector: std across the batch of L2-normalised (B, D) features, mean over dims.

    Population std (no Bessel correction). 0 for constant (collapsed) features; about
    1/sqrt(D) for features spread uniformly on the unit sphere.
    """
    return _unit(z).std(dim=0, correction=0).mean()


@_float32
def mean_cosine(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean cosine over the (rows of a) x (rows of b) pairs where `mask` (bool, same shape) is True."""
    sim = _unit(a) @ _unit(b).T
    if mask is None:
        return sim.mean()
    mask = mask.bool()
    return (sim * mask).sum() / mask.sum().clamp(min=1)


@torch.no_grad()
def pair_monitors(z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
    """Training monitors of two (B, D) embeddings of the same B samples (view a, view b): pos_sim (mean
    cosine of each pair), neg_sim (mean cosine to the other samples' view b), feat_std of view a."""
    off_diagonal = ~torch.eye(z_a.shape[0], dtype=torch.bool, device=z_a.device)
    return {
        "pos_sim": F.cosine_similarity(z_a, z_b, dim=1).mean(),
        "neg_sim": mean_cosine(z_a, z_b, off_diagonal),
        "feat_std": feature_std(z_a),
    }
