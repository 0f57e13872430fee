"""SimSiam / Barlow Twins / VICReg / SwAV / DINO / MoCo v3 losses against references written here as
explicit loops in numpy / plain Python (never the code under test), plus their stop-gradients."""

import math

import numpy as np
import pytest
import torch

from medssl.ssl.losses import mocov3_loss
from medssl.ssl.losses_noncontrastive import (barlow_twins_loss, dino_center, dino_loss, effective_rank, simsiam_loss,
                                              sinkhorn, swav_loss, vicreg_loss, vicreg_terms)
from tests.ssl.tiny import one_torch_thread  # noqa: F401 (autouse fixture)

T = torch.tensor


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


# ----------------------------------------------------------------------------- SimSiam
def test_simsiam_loss_hand_computed():
    # row 0: cos([1,0],[.6,.8]) = .6; row 1: cos([2,2],[-1,-1]) = -1  -> -(.6 - 1)/2 = 0.2
    p = T([[1.0, 0.0], [2.0, 2.0]])
    z = T([[0.6, 0.8], [-1.0, -1.0]])
    assert simsiam_loss(p, z).item() == pytest.approx(0.2, abs=1e-6)
    assert simsiam_loss(z, z).item() == pytest.approx(-1.0, abs=1e-6)  # perfect prediction: -1


def test_simsiam_stop_gradient_blocks_the_target_branch():
    """The gradient w.r.t. the target z is exactly zero; a variant without stop-gradient (written
    here: the same negative cosine without detach) lets it through: the classic collapse bug."""
    p, z = _rand(4, 3, seed=1).requires_grad_(), _rand(4, 3, seed=2).requires_grad_()
    simsiam_loss(p, z).backward()
    assert z.grad is None and p.grad is not None and p.grad.abs().sum() > 0

    p2, z2 = p.detach().clone().requires_grad_(), z.detach().clone().requires_grad_()
    broken = -torch.nn.functional.cosine_similarity(p2, z2, dim=1).mean()   # no stop-gradient
    broken.backward()
    assert z2.grad is not None and z2.grad.abs().sum() > 1e-3
    torch.testing.assert_close(p2.grad, p.grad)  # the prediction branch is the same in both


# ----------------------------------------------------------------------------- Barlow Twins
def _barlow_loops(za, zb, lambd, eps=1e-5):
    za, zb = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    n, d = za.shape

    def standardise(z):
        out = np.zeros_like(z)
        for j in range(d):
            mean = sum(z[b, j] for b in range(n)) / n
            var = sum((z[b, j] - mean) ** 2 for b in range(n)) / n
            for b in range(n):
                out[b, j] = (z[b, j] - mean) / math.sqrt(var + eps)
        return out

    a, b_ = standardise(za), standardise(zb)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[b, i] * b_[b, j] for b in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c ** 2
    return loss


def test_barlow_twins_hand_computed():
    # 2 samples, 2 dims: standardised columns are +-1, so C = [[1, -1], [-1, 1]] for
    # za = [[1, 5], [3, 1]], zb = [[0, 2], [4, 0]] (dim 0 rises, dim 1 falls in both):
    # on-diagonal (1-1)^2 * 2 = 0; off-diagonal 2 * (-1)^2 = 2 -> loss = 2 * lambda (up to eps)
    za, zb = T([[1.0, 5.0], [3.0, 1.0]]), T([[0.0, 2.0], [4.0, 0.0]])
    assert barlow_twins_loss(za, zb, lambd=0.5).item() == pytest.approx(1.0, abs=1e-4)
    za, zb = _rand(6, 4, seed=3), _rand(6, 4, seed=4)
    for lambd in (5e-3, 0.3):
        expected = _barlow_loops(za.numpy(), zb.numpy(), lambd)
        assert barlow_twins_loss(za, zb, lambd).item() == pytest.approx(expected, rel=1e-5)


def test_barlow_twins_is_invariant_to_scale_and_shift_per_dimension():
    # the standardisation makes the loss a function of the correlation only
    za, zb = _rand(8, 3, seed=5), _rand(8, 3, seed=6)
    scaled = za * T([2.0, 0.1, 7.0]) + T([1.0, -3.0, 0.5])
    assert barlow_twins_loss(scaled, zb).item() == pytest.approx(barlow_twins_loss(za, zb).item(), rel=1e-4)


# ----------------------------------------------------------------------------- VICReg
def _vicreg_loops(za, zb, gamma=1.0, eps=1e-4):
    za, zb = np.asarray(za, dtype=np.float64), np.asarray(zb, dtype=np.float64)
    n, d = za.shape
    inv = sum((za[b, j] - zb[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)
    var = cov = 0.0
    for z in (za, zb):
        mean = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
        x = [[z[b, j] - mean[j] for j in range(d)] for b in range(n)]
        for j in range(d):
            std = math.sqrt(sum(x[b][j] ** 2 for b in range(n)) / (n - 1) + eps)
            var += max(0.0, gamma - std) / d / 2
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov += (sum(x[b][i] * x[b][j] for b in range(n)) / (n - 1)) ** 2 / d
    return inv, var, cov


def test_vicreg_hand_computed():
    # za = [[0, 0], [2, 2]], zb = [[1, 0], [1, 2]]: invariance (1 + 0 + 1 + 0) / 4 = 0.5;
    # za: both dims {0, 2}, unbiased var 2, std sqrt(2.0001) > 1 -> no hinge; cov(dim0, dim1) = 2 -> 2*(2^2)/2 = 4
    # zb: dim 0 constant -> std sqrt(1e-4) = .01, hinge .99 -> variance .99/2/2 = .2475; dim 1 std sqrt(2) no hinge;
    #     covariance 0. Loss = 25 * .5 + 25 * .2475 + 1 * 4 = 22.6875
    za, zb = T([[0.0, 0.0], [2.0, 2.0]]), T([[1.0, 0.0], [1.0, 2.0]])
    inv, var, cov = vicreg_terms(za, zb)
    assert (inv.item(), var.item(), cov.item()) == pytest.approx((0.5, 0.2475, 4.0), abs=1e-5)
    assert vicreg_loss(za, zb).item() == pytest.approx(22.6875, abs=1e-4)
    za, zb = _rand(7, 4, seed=7), _rand(7, 4, seed=8)
    got = [t.item() for t in vicreg_terms(za, zb, gamma=1.5)]
    assert got == pytest.approx(_vicreg_loops(za.numpy(), zb.numpy(), gamma=1.5), rel=1e-5)


def test_vicreg_statistics_come_from_the_global_batch_invariance_from_the_local_one():
    za, zb = _rand(8, 3, seed=9), _rand(8, 3, seed=10)
    inv, var, cov = vicreg_terms(za[:4], zb[:4], all_a=za, all_b=zb)
    g_inv, g_var, g_cov = _vicreg_loops(za.numpy(), zb.numpy())
    l_inv, l_var, l_cov = _vicreg_loops(za[:4].numpy(), zb[:4].numpy())
    assert inv.item() == pytest.approx(l_inv, rel=1e-5)
    assert (var.item(), cov.item()) == pytest.approx((g_var, g_cov), rel=1e-5)
    assert abs(cov.item() - l_cov) > 1e-2  # the local-batch statistic is a different number


# ----------------------------------------------------------------------------- SwAV
def _sinkhorn_loops(scores, eps, iters):
    """facebookresearch/swav distributed_sinkhorn for one process, element by element."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(scores[i][j] / eps) for i in range(b)] for j in range(k)]   # (K, B)
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        for j in range(k):
            s = sum(q[j])
            q[j] = [v / s / k for v in q[j]]
        for i in range(b):
            s = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / s / b
    return [[q[j][i] * b for j in range(k)] for i in range(b)]                 # (B, K)


def test_sinkhorn_hand_computed_and_against_the_reference_loops():
    # 2 samples, 2 prototypes, eps 1: exp(scores) = [[e, 1], [e, 1]]: both samples prefer prototype 0.
    # Equipartition pulls them apart symmetrically: after the first row step each prototype row sums to
    # 1/2 with each sample 1/4 of it -> every entry 1/4; columns then normalise to 1/2 each -> Q = 1/2 everywhere.
    got = sinkhorn(T([[1.0, 0.0], [1.0, 0.0]]), epsilon=1.0, iters=1)
    torch.testing.assert_close(got, torch.full((2, 2), 0.5))
    scores = torch.nn.functional.normalize(_rand(6, 4, seed=11), dim=1) @ torch.nn.functional.normalize(
        _rand(5, 4, seed=12), dim=1).T                                                 # cosines (6, 5)
    for eps, iters in ((0.05, 3), (0.3, 1)):
        expected = torch.tensor(_sinkhorn_loops(scores.double().tolist(), eps, iters), dtype=torch.float32)
        torch.testing.assert_close(sinkhorn(scores, eps, iters), expected, rtol=1e-5, atol=1e-6)
    q = sinkhorn(scores, 0.5, 100)   # converged: rows sum to 1, each prototype gets B/K
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    torch.testing.assert_close(q.sum(0), torch.full((5,), 6 / 5), rtol=1e-4, atol=1e-4)


def test_swav_swapped_prediction_hand_computed():
    # V = 3 crops, 2 coded (the full-size views), K = 2, temperature 1.
    s = [T([[1.0, 0.0]]), T([[0.0, 1.0]]), T([[2.0, 0.0]])]
    q = [T([[1.0, 0.0]]), T([[0.5, 0.5]])]
    lsm = [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in (v[0].tolist() for v in s)]
    ce = lambda code, v: -sum(c * l for c, l in zip(code, lsm[v]))
    term0 = (ce([1.0, 0.0], 1) + ce([1.0, 0.0], 2)) / 2        # code of crop 0 from crops 1, 2
    term1 = (ce([0.5, 0.5], 0) + ce([0.5, 0.5], 2)) / 2        # code of crop 1 from crops 0, 2
    assert swav_loss(s, q, temperature=1.0).item() == pytest.approx((term0 + term1) / 2, abs=1e-6)
    # temperature divides the scores
    assert swav_loss([2 * v for v in s], q, temperature=2.0).item() == pytest.approx((term0 + term1) / 2, abs=1e-6)


# ----------------------------------------------------------------------------- DINO
def test_dino_loss_hand_computed_with_a_centre():
    # K = 2; teacher logits of 2 full-size views; centre [1, 0]; teacher temp 1, student temp 1
    t0, t1 = [3.0, 1.0], [1.0, 1.0]
    s0, s1 = [0.0, 0.0], [1.0, 0.0]
    c = [1.0, 0.0]

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    p0 = softmax([t0[0] - c[0], t0[1] - c[1]])          # softmax([2, 1])
    p1 = softmax([t1[0] - c[0], t1[1] - c[1]])          # softmax([0, 1])
    ls0 = [math.log(x) for x in softmax(s0)]
    ls1 = [math.log(x) for x in softmax(s1)]
    expected = (-sum(a * b for a, b in zip(p0, ls1)) - sum(a * b for a, b in zip(p1, ls0))) / 2
    got = dino_loss([T([s0]), T([s1])], [T([t0]), T([t1])], T(c), student_temp=1.0, teacher_temp=1.0)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    uncentred = dino_loss([T([s0]), T([s1])], [T([t0]), T([t1])], T([0.0, 0.0]), 1.0, 1.0)
    assert abs(uncentred.item() - expected) > 1e-2   # the centre is really subtracted


def test_dino_loss_pairs_each_teacher_view_with_every_other_crop_and_sharpens():
    g = torch.Generator().manual_seed(13)
    student = [torch.randn(3, 4, generator=g) for _ in range(4)]      # 2 full-size + 2 local crops
    teacher = [torch.randn(3, 4, generator=g) for _ in range(2)]
    center = torch.randn(4, generator=g)
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            for b in range(3):
                tb = [(x - c) / 0.04 for x, c in zip(t[b].tolist(), center.tolist())]
                m = max(tb)
                pt = [math.exp(x - m) for x in tb]
                pt = [x / sum(pt) for x in pt]
                sb = [x / 0.1 for x in s[b].tolist()]
                lse = max(sb) + math.log(sum(math.exp(x - max(sb)) for x in sb))
                total += -sum(p * (x - lse) for p, x in zip(pt, sb)) / 3
            terms += 1
    assert terms == 6
    got = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    assert got.item() == pytest.approx(total / terms, rel=1e-5)


def test_dino_loss_gives_no_gradient_to_the_teacher():
    s = [_rand(2, 3, seed=14).requires_grad_(), _rand(2, 3, seed=15).requires_grad_()]
    t = [_rand(2, 3, seed=16).requires_grad_(), _rand(2, 3, seed=17).requires_grad_()]
    dino_loss(s, t, torch.zeros(3)).backward()
    assert all(x.grad is None for x in t) and all(x.grad.abs().sum() > 0 for x in s)


def test_dino_center_is_an_ema_of_the_batch_mean():
    teacher = T([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])      # batch mean [2, 1, 2]
    c = T([10.0, 0.0, -10.0])
    torch.testing.assert_close(dino_center(c, teacher, 0.9), T([0.9 * 10 + 0.2, 0.1, -9 + 0.2]))
    torch.testing.assert_close(dino_center(c, teacher, 1.0), c)          # momentum 1: never moves
    torch.testing.assert_close(dino_center(c, teacher, 0.0), T([2.0, 1.0, 2.0]))


# ----------------------------------------------------------------------------- MoCo v3
def _mocov3_loops(q, k, t, offset, same):
    """Per local query i: -log softmax over all N keys at the positive offset+i, same-patient
    negatives skipped; times 2t (facebookresearch/moco-v3 contrastive_loss)."""
    q = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in q.tolist()]
    k = [[x / math.sqrt(sum(y * y for y in row)) for x in row] for row in k.tolist()]
    total = 0.0
    for i, qi in enumerate(q):
        pos = offset + i
        logits = [sum(a * b for a, b in zip(qi, kj)) / t for kj in k]
        denom = sum(math.exp(l) for j, l in enumerate(logits) if j == pos or not same(i, j))
        total += math.log(denom) - logits[pos]
    return 2 * t * total / len(q)


def test_mocov3_loss_hand_computed():
    # q0 = [1, 0] with keys k0 = [.6, .8] (positive), k1 = [0, 1]; t = .5:
    # -log(e^1.2 / (e^1.2 + e^0)) * 2 * .5 = log(1 + e^-1.2) = 0.263282
    got = mocov3_loss(T([[2.0, 0.0]]), T([[0.6, 0.8], [0.0, 1.0]]), offset=0, temperature=0.5)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-1.2)), abs=1e-6)


def test_mocov3_loss_with_global_keys_offset_and_patient_mask_matches_loops():
    q, k = _rand(2, 5, seed=18), _rand(6, 5, seed=19)         # this rank: rows 2, 3 of a global batch of 6
    patient_local, patient_all = [7, 8], [1, 7, 7, 8, 2, 8]
    mask = T(patient_local).view(-1, 1) == T(patient_all).view(1, -1)
    same = lambda i, j: patient_local[i] == patient_all[j]
    got = mocov3_loss(q, k, offset=2, temperature=0.2, mask=mask)
    assert got.item() == pytest.approx(_mocov3_loops(q, k, 0.2, 2, same), rel=1e-5)
    plain = mocov3_loss(q, k, offset=2, temperature=0.2)
    assert plain.item() == pytest.approx(_mocov3_loops(q, k, 0.2, 2, lambda i, j: False), rel=1e-5)
    assert abs(got.item() - plain.item()) > 1e-3


# ----------------------------------------------------------------------------- diagnostics, precision
def test_effective_rank_reads_one_for_collapse_and_d_for_isotropic():
    assert effective_rank(T([[1.0, 2.0, 3.0]]).repeat(10, 1)).item() == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.eye(4) * 3).item() == pytest.approx(4.0, abs=1e-3)
    # singular values 3 and 1: p = (.75, .25), exp(H) = exp(-(.75 ln .75 + .25 ln .25)) = 1.7548
    assert effective_rank(torch.diag(T([3.0, 1.0]))).item() == pytest.approx(1.7548, abs=1e-3)


def test_losses_ignore_bf16_autocast():
    za, zb = _rand(6, 4, seed=20), _rand(6, 4, seed=21)
    c = torch.zeros(4)
    exact = (barlow_twins_loss(za, zb), vicreg_loss(za, zb), swav_loss([za, zb], [za.softmax(1), zb.softmax(1)]),
             dino_loss([za, zb], [zb, za], c), simsiam_loss(za, zb))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = (barlow_twins_loss(za, zb), vicreg_loss(za, zb), swav_loss([za, zb], [za.softmax(1), zb.softmax(1)]),
                 dino_loss([za, zb], [zb, za], c), simsiam_loss(za, zb))
    for a, b in zip(exact, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
