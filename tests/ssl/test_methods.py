"""SSL methods: forward contract, EMA maths, MoCo queue, patient masking, learning, collapse detector."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from medssl.config import SSLConfig
from medssl.errors import ConfigError
from medssl.models.backbones import build_encoder, monai_network
from medssl.ssl import METHODS, build_method
from medssl.ssl.byol import BYOL
from medssl.ssl.distributed import batch_shuffle_ddp, batch_unshuffle_ddp
from medssl.ssl.moco import MoCo
from medssl.ssl.simclr import SimCLR
from medssl.ssl.triplet import Triplet, pick_negatives
from tests.ssl.tiny import TinyBNEncoder, TinyEncoder, fixed_batch, one_torch_thread  # noqa: F401 (autouse fixture)

SMALL = dict(proj_hidden=32, proj_dim=8, pred_hidden=32, queue_size=16, swav_prototypes=16, dino_out_dim=64)
#: Methods that run on any encoder (MAE needs a ViT: tests/ssl/test_methods_pretext.py covers it).
ANY_ENCODER = sorted(n for n, c in METHODS.items() if not getattr(c, "requires_vit", False))
EMA_TARGETS = {"mocov2": ("encoder_k", "projector_k"), "byol": ("encoder_target", "projector_target")}


def tiny(name, **cfg):
    torch.manual_seed(0)
    return build_method(name, TinyEncoder(), SSLConfig(method=name, **{**SMALL, **cfg}))


def test_registry():
    assert {"mocov2": MoCo, "simclr": SimCLR, "byol": BYOL, "triplet": Triplet}.items() <= METHODS.items()
    with pytest.raises(ConfigError, match="simclr"):
        build_method("no-such-method", TinyEncoder(), SSLConfig())


#: Loss of each method on a batch whose images are all one image (every embedding equal), patients
#: [0, 1, 0, 2]. SimCLR: all logits equal, so -log(1 / #candidates): anchors of patients 0 keep 5 of
#: 8 columns (self and both views of the same-patient row dropped), the others 7. Triplet: d(a,p) =
#: d(a,n) = 0, so the margin. MoCo's first step: no negatives yet, 0. BYOL: 2 - 2 pos_sim (below).
IDENTICAL_LOSS = {"simclr": (math.log(5) + math.log(7)) / 2, "triplet": 0.5, "mocov2": 0.0}
#: Two-view methods whose logs (pos_sim, neg_sim, feat_std of the D-dim projections) are checked in value.
TWO_VIEW_METHODS = ("byol", "mocov2", "simclr", "triplet")


@pytest.mark.parametrize("name", ANY_ENCODER)
def test_forward_contract_with_monai_encoder(name):
    patient = torch.tensor([0, 1, 0, 2])
    torch.manual_seed(0)
    method = build_method(name, build_encoder("resnet18"), SSLConfig(method=name, **SMALL))
    view_a, view_b = fixed_batch(4, size=32)
    loss, logs = method(view_a, view_b, patient)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    compares_views = getattr(type(method), "compares_views", True)  # single-image pretext tasks: False
    for key in ("pos_sim", "neg_sim", "feat_std") if compares_views else ("feat_std",):
        assert logs[key].shape == () and not logs[key].requires_grad
    # checkpoints and export rely on the online encoder living at `encoder.net.*`
    keys = {k[len("encoder.net."):] for k in method.state_dict() if k.startswith("encoder.net.")}
    assert keys == set(monai_network("resnet18").state_dict())
    if name not in TWO_VIEW_METHODS:
        return  # the methods below have their own tests of what their logs mean
    assert -1 <= logs["pos_sim"].item() <= 1 and -1 <= logs["neg_sim"].item() <= 1
    # feat_std of D-dim unit vectors is at most 1/sqrt(D) (sum of the variances = 1 - |mean|^2);
    # distinct images through a random-init network (BN in train mode) spread to that scale
    bound = 1 / math.sqrt(SMALL["proj_dim"])
    assert 0.25 * bound < logs["feat_std"].item() <= bound + 1e-6, logs["feat_std"]
    if name == "mocov2":
        assert loss.item() == 0.0 and logs["neg_sim"].item() == 0.0  # first step: empty queue

    # one image four times: every embedding is the same, the detector reads 0, the loss is known
    same = view_a[:1].expand(4, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    method = build_method(name, build_encoder("resnet18"), SSLConfig(method=name, **SMALL))
    loss, logs = method(same, same.clone(), patient)
    assert logs["feat_std"].item() < 1e-5
    if name == "byol":  # prediction vs target: pos and neg pairs are the same pair, loss = 2 - 2 cos
        assert logs["neg_sim"].item() == pytest.approx(logs["pos_sim"].item(), abs=1e-5)
        assert loss.item() == pytest.approx(2 - 2 * logs["neg_sim"].item(), abs=1e-5)
    else:
        assert logs["pos_sim"].item() == pytest.approx(1.0, abs=1e-5)
        assert loss.item() == pytest.approx(IDENTICAL_LOSS[name], abs=1e-5)


@pytest.mark.parametrize("name", sorted(EMA_TARGETS))
def test_momentum_update_is_ema_of_parameters(name):
    method = tiny(name)
    enc_t, proj_t = (getattr(method, a) for a in EMA_TARGETS[name])
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)  # online and target now differ by 1 everywhere
    before = [p.clone() for p in enc_t.parameters()]
    online = [p.clone() for p in method.encoder.parameters()]
    method.momentum_update(0.9)
    for t0, o, t1 in zip(before, online, enc_t.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o)
    method.momentum = 0.0  # on_train_batch_end uses the momentum the trainer set: 0 copies
    method.on_train_batch_end()
    for o, t1 in zip(method.projector.parameters(), proj_t.parameters()):
        torch.testing.assert_close(t1, o)


@pytest.mark.parametrize("name", sorted(EMA_TARGETS))
def test_target_network_gets_no_gradient(name):
    method = tiny(name)
    view_a, view_b = fixed_batch(4)
    if name == "mocov2":
        with torch.no_grad():
            method(view_a, view_b, torch.arange(4))  # the first step has no negatives yet (empty queue)
    loss, _ = method(view_a, view_b, torch.arange(4))
    loss.backward()
    for attr in EMA_TARGETS[name]:
        for p in getattr(method, attr).parameters():
            assert p.grad is None and not p.requires_grad
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())


def test_byol_regresses_each_view_onto_the_target_of_the_other_view():
    """Loss = 0.5 * mean_i [(2 - 2 cos(p(a_i), z'(b_i))) + (2 - 2 cos(p(b_i), z'(a_i)))], by hand."""
    method = tiny("byol")
    # predictor = identity, target = online: each view's prediction IS its own target, so regressing
    # a view onto its own target would give loss 0; the other view's target is far (inverted image)
    method.predictor = torch.nn.Identity()
    view_a, _ = fixed_batch(4, seed=1)
    view_b = 1 - view_a
    with torch.no_grad():
        loss, logs = method(view_a, view_b)
        both = torch.cat([view_a, view_b])  # one pass, BN over both views, as the method does
        p = F.normalize(method.predictor(method.projector(method.encoder(both))), dim=1)
        z = F.normalize(method.projector_target(method.encoder_target(both)), dim=1)
    pred, target = (p[:4], p[4:]), (z[:4], z[4:])
    cos = lambda u, v: sum(float(u[i] @ v[i]) for i in range(4)) / 4  # noqa: E731
    cross = 0.5 * ((2 - 2 * cos(pred[0], target[1])) + (2 - 2 * cos(pred[1], target[0])))
    own = 0.5 * ((2 - 2 * cos(pred[0], target[0])) + (2 - 2 * cos(pred[1], target[1])))
    assert own == pytest.approx(0.0, abs=1e-6) and cross > 0.5  # the batch tells the pairings apart
    assert loss.item() == pytest.approx(cross, abs=1e-5)
    assert logs["pos_sim"].item() == pytest.approx((cos(pred[0], target[1]) + cos(pred[1], target[0])) / 2, abs=1e-5)


def test_moco_one_process_keys_get_batchnorm_statistics_per_chunk():
    """SplitBN: with shuffle_bn in one process the key encoder runs the shuffled batch in bn_splits
    chunks, so a key's BN statistics are those of its chunk, never of the whole batch (which the
    queries share: the loss could then be solved through BN)."""
    torch.manual_seed(0)
    cfg = SSLConfig(method="mocov2", **{**SMALL, "bn_splits": 2})
    method = build_method("mocov2", TinyBNEncoder(), cfg).train()
    view_a, view_b = fixed_batch(8)
    torch.manual_seed(7)
    method(view_a, view_b)
    torch.manual_seed(7)
    perm = torch.randperm(8)  # the shuffle the forward drew (its first draw of the global RNG)
    key_net = lambda x: F.normalize(method.projector_k(method.encoder_k(x)), dim=1)  # noqa: E731
    with torch.no_grad():
        per_chunk = torch.empty(8, SMALL["proj_dim"])
        for rows in perm.chunk(2):  # each chunk: 4 shuffled samples, their own BN statistics
            per_chunk[rows] = key_net(view_b[rows])
        whole = key_net(view_b)
    assert (per_chunk - whole).abs().max() > 1e-2  # per-chunk and whole-batch statistics differ here
    torch.testing.assert_close(method.queue[:8], per_chunk, atol=1e-5, rtol=1e-4)
    # a key depends on the other samples of its chunk only
    first, other = perm[:4], perm[4:]
    changed = view_b.clone()
    changed[other] = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(7)
        assert torch.allclose(method._keys(changed)[first], per_chunk[first], atol=1e-5)
        changed[other[0]], changed[first[0]] = view_b[other[0]], torch.rand(1, 16, 16)
        torch.manual_seed(7)
        moved = method._keys(changed)[first[1:]]
    assert (moved - per_chunk[first[1:]]).abs().max() > 1e-3


def test_enqueue_wraps_around_and_keeps_patients():
    method = tiny("mocov2", queue_size=5, proj_dim=2)
    keys = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]) * (i + 1) for i in range(3)]
    for i, k in enumerate(keys):
        method.enqueue(k, torch.tensor([10 * i, 10 * i + 1]))
    # slots 0,1 <- batch 0; 2,3 <- batch 1; 4,0 <- batch 2 (wrapped); pointer at 1
    expected = torch.stack([keys[2][1], keys[0][1], keys[1][0], keys[1][1], keys[2][0]])
    torch.testing.assert_close(method.queue, expected)
    assert method.queue_patient.tolist() == [21, 1, 10, 11, 20]
    assert int(method.queue_ptr) == 1
    # 7 keys into 5 slots from pointer 1: as if written one by one (slots 1,2,3,4,0,1,2), newest win
    method.enqueue(torch.arange(14.0).view(7, 2), None)
    assert method.queue[:, 0].tolist() == [8.0, 10.0, 12.0, 4.0, 6.0]
    assert method.queue_patient.tolist() == [-1] * 5 and int(method.queue_ptr) == 3


def test_forward_enqueues_the_keys_of_view_b_in_training_only():
    method = tiny("mocov2")
    view_a, view_b = fixed_batch(4)
    patient = torch.tensor([3, 4, 5, 6])
    method.eval()
    method(view_a, view_b, patient)
    assert int(method.queue_ptr) == 0
    method.train()
    method(view_a, view_b, patient)
    with torch.no_grad():
        keys = F.normalize(method.projector_k(method.encoder_k(view_b)), dim=1)
    torch.testing.assert_close(method.queue[:4], keys)
    assert method.queue_patient[:4].tolist() == [3, 4, 5, 6] and int(method.queue_ptr) == 4


def _info_nce_loops(q, k, queue, queue_patient, patient, t):
    """Reference by explicit loops; negatives of the anchor's own patient skipped when patient given."""
    total = 0.0
    for i in range(len(q)):
        s_pos = float(q[i] @ k[i]) / t
        denom = math.exp(s_pos)
        for j in range(len(queue)):
            if patient is not None and int(queue_patient[j]) == int(patient[i]):
                continue
            denom += math.exp(float(q[i] @ queue[j]) / t)
        total += math.log(denom) - s_pos
    return total / len(q)


def test_moco_masks_negatives_of_the_same_patient():
    method = tiny("mocov2", queue_size=6, temperature=0.5).eval()
    g = torch.Generator().manual_seed(3)
    method.queue.copy_(F.normalize(torch.randn(6, 8, generator=g), dim=1))
    method.queue_patient.copy_(torch.tensor([0, 1, 1, 2, -1, 0]))
    view_a, view_b = fixed_batch(3)
    patient = torch.tensor([0, 1, 7])
    with torch.no_grad():
        q = F.normalize(method.projector(method.encoder(view_a)), dim=1)
        k = F.normalize(method.projector_k(method.encoder_k(view_b)), dim=1)
        masked, logs = method(view_a, view_b, patient)
        method.mask_same_patient = False
        plain, _ = method(view_a, view_b, patient)
    expected_masked = _info_nce_loops(q, k, method.queue, method.queue_patient, patient, 0.5)
    expected_plain = _info_nce_loops(q, k, method.queue, method.queue_patient, None, 0.5)
    assert masked.item() == pytest.approx(expected_masked, abs=1e-5)
    assert plain.item() == pytest.approx(expected_plain, abs=1e-5)
    assert abs(masked.item() - plain.item()) > 1e-3
    assert logs["masked_negatives"].item() == pytest.approx(4 / 18)  # 2 + 2 + 0 of 3 x 6


def test_moco_empty_queue_slots_are_not_negatives():
    """The random initial queue is never used: negatives are only keys that were really enqueued."""
    method = tiny("mocov2", queue_size=6, temperature=0.5)
    view_a, view_b = fixed_batch(4)
    first, logs = method(view_a[:2], view_b[:2], torch.tensor([0, 1]))
    assert first.item() == 0.0 and logs["neg_sim"].item() == 0.0  # no negative exists yet
    assert method.queue_patient.tolist() == [0, 1, -2, -2, -2, -2]
    method.eval()
    with torch.no_grad():
        q = F.normalize(method.projector(method.encoder(view_a[2:])), dim=1)
        k = F.normalize(method.projector_k(method.encoder_k(view_b[2:])), dim=1)
        loss, logs = method(view_a[2:], view_b[2:], torch.tensor([2, 3]))
    expected = _info_nce_loops(q, k, method.queue[:2], method.queue_patient[:2], None, 0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-5) and loss.item() > 0.1
    assert logs["neg_sim"].item() == pytest.approx(float((q @ method.queue[:2].T).mean()), abs=1e-5)
    # keys without a patient (-1) are ordinary negatives, not empty slots
    method.train()
    method.enqueue(torch.randn(4, 8), None)
    assert method.queue_patient.tolist() == [0, 1, -1, -1, -1, -1]


def test_simclr_masks_in_batch_negatives_of_the_same_patient():
    method = tiny("simclr", temperature=0.5).eval()  # eval: BN uses running stats, z is per-sample
    view_a, view_b = fixed_batch(4)
    patient = torch.tensor([0, 0, 1, 2])
    with torch.no_grad():
        z_a = F.normalize(method.projector(method.encoder(view_a)), dim=1)
        z_b = F.normalize(method.projector(method.encoder(view_b)), dim=1)
        masked, _ = method(view_a, view_b, patient)
        unmasked, _ = method(view_a, view_b, None)
    z = torch.cat([z_a, z_b])
    def loops(same):
        total = 0.0
        for i in range(8):
            pos = (i + 4) % 8
            denom = sum(math.exp(float(z[i] @ z[j]) / 0.5) for j in range(8)
                        if j != i and (j == pos or not same(i % 4, j % 4)))
            total += math.log(denom) - float(z[i] @ z[pos]) / 0.5
        return total / 8
    assert masked.item() == pytest.approx(loops(lambda a, b: patient[a] == patient[b]), abs=1e-5)
    assert unmasked.item() == pytest.approx(loops(lambda a, b: False), abs=1e-5)
    assert abs(masked.item() - unmasked.item()) > 1e-3


def test_pick_negatives_takes_the_next_row_of_another_patient():
    idx, valid = pick_negatives(torch.tensor([0, 0, 1, 1, 2]), 5)
    assert idx.tolist() == [2, 2, 4, 4, 0] and valid.all()
    idx, valid = pick_negatives(torch.tensor([4, 4, 9]), 3)
    assert idx.tolist() == [2, 2, 0] and valid.tolist() == [True, True, True]
    _, valid = pick_negatives(torch.tensor([3, 3, 3]), 3)
    assert not valid.any()
    idx, valid = pick_negatives(None, 4)
    assert idx.tolist() == [1, 2, 3, 0] and valid.all()


def test_triplet_without_another_patient_has_no_loss():
    method = tiny("triplet")
    view_a, view_b = fixed_batch(3)
    loss, logs = method(view_a, view_b, torch.tensor([5, 5, 5]))
    assert loss.item() == 0.0 and logs["valid_frac"].item() == 0.0


# jigsaw draws a new random puzzle per image per step: 25 steps on 8 synthetic images do not show it
# learning; it is trained on real images in tests/ssl/test_methods_pretext.py. dino: on one fixed batch its
# loss first falls to ~0 (teacher and student agree on one dimension) and rises again once the centre
# has caught up with that dimension, so it is not monotone; tests/ssl/test_methods_noncontrastive.py
# checks its centring and tests/ssl/test_pretrain_noncontrastive.py its learning on real images
@pytest.mark.parametrize("name", [n for n in ANY_ENCODER if n not in ("jigsaw", "dino")])
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(name):
    method = tiny(name, queue_size=8, momentum=0.9, temperature=0.2, margin=0.5)
    view_a, view_b = fixed_batch(8)
    patient = torch.arange(8)
    if name == "mocov2":
        with torch.no_grad():
            method(view_a, view_b, patient)  # fill the queue with real keys (own patient masked)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = method(view_a, view_b, patient)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_train_batch_end()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses


@pytest.mark.parametrize("name", ANY_ENCODER)
def test_collapse_detector_reads_zero_for_constant_features(name):
    method = tiny(name)
    view_a, view_b = fixed_batch(8)
    _, logs = method(view_a, view_b, torch.arange(8))
    assert logs["feat_std"].item() > 5e-3
    with torch.no_grad():
        last = method.encoder.net[-1]
        last.weight.zero_()
        last.bias.fill_(0.7)  # every image now maps to the same feature vector
    _, logs = method(view_a, view_b, torch.arange(8))
    assert logs["feat_std"].item() < 1e-5


def test_queue_is_saved_and_restored_with_the_state_dict():
    method = tiny("mocov2")
    view_a, view_b = fixed_batch(4)
    method(view_a, view_b, torch.tensor([1, 2, 3, 4]))
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    restored = tiny("mocov2")
    restored.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(restored.queue, method.queue)
    assert restored.queue_patient.tolist() == method.queue_patient.tolist()
    assert int(restored.queue_ptr) == 4


def test_single_process_shuffle_round_trip():
    x = torch.arange(10.0).view(5, 2)
    shuffled, idx_unshuffle = batch_shuffle_ddp(x, generator=torch.Generator().manual_seed(0))
    assert sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist() and not torch.equal(shuffled, x)
    torch.testing.assert_close(batch_unshuffle_ddp(shuffled, idx_unshuffle), x)


def test_moco_projection_batchnorm_option_adds_bn_to_both_heads():
    """ssl.proj_batchnorm puts BN after the hidden layer of the query head and of its EMA key copy;
    the reference head (default) has none."""
    cfg = SSLConfig(method="mocov2", **{**SMALL, "queue_size": 32}, proj_batchnorm=True, bn_splits=2)
    model = MoCo(TinyEncoder(), cfg)
    for head in (model.projector, model.projector_k):
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in MoCo(TinyEncoder(), SSLConfig(
        method="mocov2", **SMALL)).projector.modules())
    a, b = fixed_batch(8)
    loss, logs = model(a, b, torch.arange(8))
    assert torch.isfinite(loss) and int(model.queue_ptr) == 8
