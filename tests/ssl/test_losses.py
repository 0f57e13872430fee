"""Losses against small examples worked out by hand (dot products of 2-d unit vectors)."""

import math

import pytest
import torch

from tests.ssl.tiny import one_torch_thread  # noqa: F401 (autouse fixture)
from medssl.ssl.losses import byol_loss, feature_std, info_nce, mean_cosine, nt_xent, triplet_loss

T = torch.tensor


# ----------------------------------------------------------------------------- info_nce
# q0=[1,0] k0=[.6,.8]; q1=[0,1] k1=[0,1]; queue n0=[0,1], n1=[-1,0]; temperature 0.5
#   row 0: q.k = .6 -> 1.2; q.n0 = 0 -> 0; q.n1 = -1 -> -2   loss0 = log(e^1.2 + e^0 + e^-2) - 1.2 = 0.294129
#   row 1: q.k = 1  -> 2;   q.n0 = 1 -> 2; q.n1 = 0 -> 0     loss1 = log(e^2 + e^2 + e^0) - 2      = 0.758624
Q = T([[3.0, 0.0], [0.0, 1.0]])          # row 0 not unit length: the loss normalises
K = T([[0.6, 0.8], [0.0, 2.0]])
QUEUE = T([[0.0, 1.0], [-1.0, 0.0]])


def test_info_nce_hand_computed():
    loss0 = math.log(math.exp(1.2) + 1 + math.exp(-2)) - 1.2
    loss1 = math.log(2 * math.exp(2) + 1) - 2
    assert loss0 == pytest.approx(0.294129, abs=1e-6) and loss1 == pytest.approx(0.758624, abs=1e-6)
    got = info_nce(Q, K, QUEUE, temperature=0.5)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, abs=1e-6)


def test_info_nce_mask_removes_exactly_those_negatives():
    # mask n1 for row 0 and n0 for row 1 (same patient): each loses one term of its sum
    mask = T([[False, True], [True, False]])
    loss0 = math.log(math.exp(1.2) + 1) - 1.2             # 0.263282
    loss1 = math.log(math.exp(2) + 1) - 2                 # 0.126928
    got = info_nce(Q, K, QUEUE, temperature=0.5, queue_mask=mask)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, abs=1e-6)
    assert got.item() == pytest.approx(0.195105, abs=1e-5)


def test_info_nce_all_negatives_masked_is_zero():
    got = info_nce(Q, K, QUEUE, temperature=0.5, queue_mask=torch.ones(2, 2, dtype=torch.bool))
    assert got.item() == pytest.approx(0.0, abs=1e-7)


def test_info_nce_without_queue_uses_other_keys():
    # negatives of row 0: k1=[0,1] -> q0.k1 = 0; of row 1: k0 -> q1.k0 = .8 -> 1.6
    loss0 = math.log(math.exp(1.2) + 1) - 1.2
    loss1 = math.log(math.exp(2) + math.exp(1.6)) - 2
    got = info_nce(Q, K, None, temperature=0.5)
    assert got.item() == pytest.approx((loss0 + loss1) / 2, abs=1e-6)


# ----------------------------------------------------------------------------- nt_xent
# a0=[1,0] a1=[0,1] b0=[.6,.8] b1=[.8,.6]; temperature 0.5. Cosines: a0.a1=0 a0.b0=.6 a0.b1=.8
# a1.b0=.8 a1.b1=.6 b0.b1=.96. Each anchor: 1 positive + 2N-2 = 2 negatives.
#   a0: log(e^0 + e^1.2 + e^1.6) - 1.2     a1: log(e^0 + e^1.6 + e^1.2) - 1.2
#   b0: log(e^1.2 + e^1.6 + e^1.92) - 1.2  b1: log(e^1.6 + e^1.2 + e^1.92) - 1.2    mean = 1.270714
ZA = T([[1.0, 0.0], [0.0, 1.0]])
ZB = T([[0.6, 0.8], [0.8, 0.6]])


def test_nt_xent_hand_computed():
    expected = 0.5 * (math.log(1 + math.exp(1.2) + math.exp(1.6))
                      + math.log(math.exp(1.2) + math.exp(1.6) + math.exp(1.92))) - 1.2
    assert expected == pytest.approx(1.270714, abs=1e-6)
    assert nt_xent(ZA, 5 * ZB, temperature=0.5).item() == pytest.approx(expected, abs=1e-6)


def test_nt_xent_same_patient_mask_leaves_only_the_positive():
    # samples 0 and 1 are one patient: every negative is masked, each anchor's softmax is its positive
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert nt_xent(ZA, ZB, temperature=0.5, mask=mask).item() == pytest.approx(0.0, abs=1e-7)


def _nt_xent_loops(za, zb, t, patient):
    """Reference by explicit loops: anchors 0..2N-1, skip self and same-patient non-positives."""
    z = torch.nn.functional.normalize(torch.cat([za, zb]), dim=1).tolist()
    n = len(za)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = 0.0
        for j in range(2 * n):
            if j == i:
                continue
            if j != pos and patient is not None and patient[i % n] == patient[j % n]:
                continue
            denom += math.exp(sum(x * y for x, y in zip(z[i], z[j])) / t)
        s_pos = sum(x * y for x, y in zip(z[i], z[pos])) / t
        total += -(s_pos - math.log(denom))
    return total / (2 * n)


def test_nt_xent_mask_matches_loop_reference_and_distributed_form():
    g = torch.Generator().manual_seed(1)
    za, zb = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    patient = [0, 0, 1, 2]
    mask = T(patient).view(-1, 1) == T(patient).view(1, -1)
    full = nt_xent(za, zb, 0.3, mask)
    assert full.item() == pytest.approx(_nt_xent_loops(za, zb, 0.3, patient), abs=1e-5)
    unmasked = nt_xent(za, zb, 0.3)
    assert unmasked.item() == pytest.approx(_nt_xent_loops(za, zb, 0.3, None), abs=1e-5)
    assert abs(full.item() - unmasked.item()) > 1e-3
    # two "ranks" of 2 rows each, candidates = the whole batch: the mean of their losses is the full loss
    halves = [nt_xent(za[r:r + 2], zb[r:r + 2], 0.3, mask[r:r + 2], all_a=za, all_b=zb, offset=r) for r in (0, 2)]
    assert ((halves[0] + halves[1]) / 2).item() == pytest.approx(full.item(), abs=1e-6)


# ----------------------------------------------------------------------------- byol, triplet
def test_byol_loss_hand_computed():
    # row 0: cos([1,0],[.6,.8]) = .6 -> 2 - 1.2 = 0.8; row 1: cos([2,2],[-1,-1]) = -1 -> 4; mean 2.4
    p = T([[1.0, 0.0], [2.0, 2.0]])
    z = T([[0.6, 0.8], [-1.0, -1.0]])
    assert byol_loss(p, z).item() == pytest.approx(2.4, abs=1e-6)


A = T([[1.0, 0.0], [0.0, 1.0]])
P = T([[0.6, 0.8], [0.0, 3.0]])
N = T([[0.0, 1.0], [0.0, -1.0]])


def test_triplet_euclidean_hand_computed():
    # row 0: |a-p| = sqrt(.4^2+.8^2) = sqrt(.8) = .894427, |a-n| = sqrt(2) = 1.414214 -> .894427-1.414214+1 = .480214
    # row 1: |a-p| = 0, |a-n| = 2 -> 0 - 2 + 1 < 0 -> 0                               mean = .240107
    assert triplet_loss(A, P, N, margin=1.0).item() == pytest.approx(0.240107, abs=1e-6)
    # weight drops row 1: mean over the kept row only
    assert triplet_loss(A, P, N, 1.0, weight=T([1.0, 0.0])).item() == pytest.approx(0.480214, abs=1e-6)


def test_triplet_cosine_hand_computed():
    # row 0: (1-.6) - (1-0) + 1 = .4; row 1: (1-1) - (1-(-1)) + 1 < 0 -> 0; mean .2
    assert triplet_loss(A, P, N, margin=1.0, distance="cosine").item() == pytest.approx(0.2, abs=1e-6)


# ----------------------------------------------------------------------------- diagnostics
def test_feature_std_reads_zero_for_collapse():
    # [[1,0],[0,1]]: each dim holds {1, 0} -> population std .5; scale does not matter after L2 norm
    assert feature_std(T([[3.0, 0.0], [0.0, 5.0]])).item() == pytest.approx(0.5, abs=1e-6)
    assert feature_std(T([[0.3, -2.0]]).repeat(8, 1)).item() == pytest.approx(0.0, abs=1e-7)


def test_mean_cosine_with_mask():
    # A vs N: cosines [[0, 0], [1, -1]]; mask keeps (0,1) and (1,0): mean (0 + 1) / 2
    mask = T([[False, True], [True, False]])
    assert mean_cosine(A, N, mask).item() == pytest.approx(0.5, abs=1e-6)
    assert mean_cosine(A, N).item() == pytest.approx(0.0, abs=1e-6)


def test_losses_ignore_bf16_autocast():
    # similarities / 0.2 in bf16 carry ~1e-2 error; the losses switch autocast off and compute in fp32
    g = torch.Generator().manual_seed(0)
    q, k, queue = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g), torch.randn(32, 16, generator=g)
    exact = (info_nce(q, k, queue, 0.2), nt_xent(q, k, 0.2), mean_cosine(q, queue))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = (info_nce(q, k, queue, 0.2), nt_xent(q, k, 0.2), mean_cosine(q, queue))
    for a, b in zip(exact, mixed):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
