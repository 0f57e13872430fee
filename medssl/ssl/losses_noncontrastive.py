"""Objectives without explicit negatives (SimSiam, Barlow Twins, VICReg, SwAV, DINO) as pure functions.

Same conventions as `medssl.ssl.losses`: inputs are (B, D) embeddings, computation in float32 with
autocast off (SwAV's Sinkhorn in float64), no module state. What keeps these objectives from the
trivial constant solution is spelled out per function (stop-gradient, batch statistics,
equipartition, centring): the tests break each of those on purpose.

Global-batch statistics under DDP. Barlow Twins' cross-correlation and VICReg's variance and
covariance are statistics of the *global* batch: the methods pass embeddings gathered with
`distributed.gather_with_grad` (every rank then computes the same global loss; the gather's
summed backward and DDP's averaging give exactly the one-process gradient). SwAV's Sinkhorn and
DINO's centre reduce their sums over ranks here, through `distributed.all_reduce_sum`, as the
reference implementations do.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.ssl import distributed as D
from medssl.ssl.losses import _float32, _unit


def _float32_crops(fn):
    """`losses._float32` for functions whose first argument is a sequence of per-crop tensors."""
    @functools.wraps(fn)
    def wrapper(crops, *args, **kwargs):
        with torch.autocast(device_type=crops[0].device.type, enabled=False):
            return fn(crops, *args, **kwargs)
    return wrapper


def _off_diagonal(m: Tensor) -> Tensor:
    """The n*(n-1) off-diagonal entries of a square (n, n) matrix, flattened."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


# ----------------------------------------------------------------------------- SimSiam
@_float32
def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's negative cosine D(p, stopgrad(z)) = -mean_i cos(p_i, z_i); p, z: (B, D); range [-1, 1].

    The stop-gradient is applied *here* (z.detach()): without it SimSiam collapses (Chen & He 2021,
    Fig. 2), so a caller cannot forget it. `z` is the other view's projection, `p` the prediction.
    """
    return -(_unit(p) * _unit(z.detach())).sum(dim=1).mean()


# ----------------------------------------------------------------------------- Barlow Twins
def _standardise(z: Tensor, eps: float) -> Tensor:
    """Per-dimension (z - mean) / sqrt(var + eps) over the batch, biased variance: BatchNorm1d(affine=False)
    in training mode, which is what the reference applies to the projector output."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, correction=0) + eps)


@_float32
def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021): sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

    z_a, z_b: (N, D) projector outputs of the two views of the *whole* batch (under DDP: gathered
    over ranks with gradient). C = standardise(z_a)^T standardise(z_b) / N is their (D, D)
    cross-correlation, standardisation per dimension over the batch as BatchNorm does.
    lambd 5e-3 is the paper's value for D = 8192 (it weighs D(D-1) off-diagonal against D
    diagonal terms, so smaller projectors tolerate larger values). Range [0, inf); 0 iff C = I.
    """
    n = z_a.shape[0]
    c = _standardise(z_a, eps).T @ _standardise(z_b, eps) / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


# ----------------------------------------------------------------------------- VICReg
@_float32
def vicreg_terms(z_a: Tensor, z_b: Tensor, *, all_a: Tensor | None = None, all_b: Tensor | None = None,
                 gamma: float = 1.0, eps: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """VICReg's (invariance, variance, covariance) terms (Bardes et al. 2022), unweighted.

    invariance: mean squared error between the local (n, D) z_a and z_b (a per-sample term);
    variance:   mean over dims of relu(gamma - sqrt(Var + eps)), averaged over the two branches;
    covariance: sum of squared off-diagonal covariances / D, summed over the two branches.
    Variance and covariance use `all_a`, `all_b` (N, D), the global batch under DDP (default: the
    local batch), with unbiased (N - 1) estimates as the reference. Collapse (constant features)
    reads variance = gamma - sqrt(eps) per branch.
    """
    all_a = z_a if all_a is None else all_a
    all_b = z_b if all_b is None else all_b
    invariance = F.mse_loss(z_a.float(), z_b.float())
    x = all_a.float() - all_a.float().mean(dim=0)
    y = all_b.float() - all_b.float().mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    variance = F.relu(gamma - std_x).mean() / 2 + F.relu(gamma - std_y).mean() / 2
    n, d = x.shape
    cov_x = x.T @ x / (n - 1)
    cov_y = y.T @ y / (n - 1)
    covariance = _off_diagonal(cov_x).pow(2).sum() / d + _off_diagonal(cov_y).pow(2).sum() / d
    return invariance, variance, covariance


def vicreg_loss(z_a: Tensor, z_b: Tensor, *, all_a: Tensor | None = None, all_b: Tensor | None = None,
                sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                gamma: float = 1.0) -> Tensor:
    """sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance (paper: 25, 25, 1);
    see `vicreg_terms` for the shapes and for which terms use the global batch."""
    inv, var, cov = vicreg_terms(z_a, z_b, all_a=all_a, all_b=all_b, gamma=gamma)
    return sim_coeff * inv + std_coeff * var + cov_coeff * cov


# ----------------------------------------------------------------------------- SwAV
@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iters: int = 3) -> Tensor:
    """SwAV's Sinkhorn-Knopp codes (Caron et al. 2020, `distributed_sinkhorn` of facebookresearch/swav).

    scores: (B, K) cosines between this rank's embeddings and the K prototypes (|s| <= 1).
    Returns Q: (B, K) float32, no gradient, each row a distribution over prototypes (sums to 1)
    and, over the *global* batch of B_total = sum of B over ranks, each prototype receiving
    B_total / K of the mass after the last column step (the equipartition that prevents all
    samples from taking one prototype). Row and total sums are all-reduced over ranks, so 2
    ranks of B rows give exactly the codes of 1 process on their 2B rows. exp(s / epsilon) in
    float64 (e^20 for the default epsilon; float32 overflows below epsilon ~0.012).
    """
    q = torch.exp(scores.double() / epsilon).T                       # (K, B)
    k = q.shape[0]
    b_total = q.shape[1] * D.world_size()
    q /= D.all_reduce_sum(q.sum())
    for _ in range(iters):
        q /= D.all_reduce_sum(q.sum(dim=1, keepdim=True))           # each prototype: total mass 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True)                              # each sample: total mass 1/B_total
        q /= b_total
    return (q * b_total).T.float()                                   # rows sum to 1


@_float32_crops
def swav_loss(scores: Sequence[Tensor], codes: Sequence[Tensor], temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction: the code of crop i predicted from the scores of every other crop.

    scores: V crops' (B, K) prototype scores (with gradient); codes: the Sinkhorn codes (B, K) of
    the first len(codes) crops (the two full-size views). Loss = mean over coded crops i of the
    mean over crops v != i of -mean_b sum_k codes_i[b, k] log softmax(scores_v[b] / temperature)_k.
    """
    total = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        sub = scores[0].new_zeros(())
        for v, s in enumerate(scores):
            if v != i:
                sub = sub - (q.detach().float() * F.log_softmax(s.float() / temperature, dim=1)).sum(dim=1).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(codes)


# ----------------------------------------------------------------------------- DINO
@_float32_crops
def dino_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], center: Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> Tensor:
    """DINO's cross-entropy (Caron et al. 2021) between teacher and student distributions.

    student: V crops' (B, K) head logits (with gradient); teacher: the teacher's (B, K) logits of the
    first len(teacher) crops (the full-size views; no gradient is taken through them); center: (K,).
    Teacher targets are softmax((t - center) / teacher_temp): *centring* removes a dimension that
    dominates for every sample (which would collapse all outputs onto it), *sharpening* (a low
    teacher_temp) the opposite, uniform collapse; together they keep the teacher informative.
    Loss = mean over pairs (teacher crop i, student crop v != i) of
    -mean_b sum_k P_t,i[b, k] log softmax(s_v[b] / student_temp)_k.
    """
    targets = [F.softmax((t.detach().float() - center.float()) / teacher_temp, dim=-1) for t in teacher]
    log_p = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student]
    total, terms = student[0].new_zeros((), dtype=torch.float32), 0
    for i, q in enumerate(targets):
        for v, lp in enumerate(log_p):
            if v != i:
                total = total - (q * lp).sum(dim=-1).mean()
                terms += 1
    return total / terms


@torch.no_grad()
def dino_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """The next centre: momentum * center + (1 - momentum) * (mean of the teacher logits over the
    global batch). teacher: (B, K) this rank's teacher logits (all full-size crops); the sum and
    the count are reduced over ranks. momentum 1 never moves the centre (= no centring from 0)."""
    batch_sum = D.all_reduce_sum(teacher.float().sum(dim=0))
    batch_mean = batch_sum / (teacher.shape[0] * D.world_size())
    return center * momentum + batch_mean.to(center.dtype) * (1 - momentum)


# ----------------------------------------------------------------------------- diagnostics
@_float32
def effective_rank(features: Tensor, eps: float = 1e-7) -> Tensor:
    """exp(entropy of the normalised singular values) of (N, D) features (Roy & Vetterli 2007; RankMe,
    Garrido et al. 2023): about 1 for collapsed features (all rows one vector), up to min(N, D)."""
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum().clamp(min=eps) + eps
    return torch.exp(-(p * p.log()).sum())
