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
from tests.ssl.tiny import TinyEncoder, fixed_batch, one_torch_thread  # noqa: F401 (autouse fixture)

SMALL = dict(proj_hidden=32, proj_dim=8, pred_hidden=32, queue_size=16)
EMA_TARGETS = {"mocov2": ("encoder_k", "projector_k"), "byol": ("encoder_target", "projector_target")}


def tiny(name, **cfg):
    torch.manual_seed(0)
    return build_method(name, TinyEncoder(), SSLConfig(method=name, **{**SMALL, **cfg}))


def test_registry():
    assert METHODS == {"mocov2": MoCo, "simclr": SimCLR, "byol": BYOL, "triplet": Triplet}
    with pytest.raises(ConfigError, match="simclr"):
        build_method("swav", TinyEncoder(), SSLConfig())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_forward_contract_with_monai_encoder(name):
    torch.manual_seed(0)
    method = build_method(name, build_encoder("resnet18"), SSLConfig(**SMALL))
    view_a, view_b = fixed_batch(4, size=32)
    loss, logs = method(view_a, view_b, torch.tensor([0, 1, 0, 2]))
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    for key in ("pos_sim", "neg_sim", "feat_std"):
        assert logs[key].shape == () and not logs[key].requires_grad
        assert -1 <= logs[key].item() <= 1
    # checkpoints and export rely on the online encoder living at `encoder.net.*`
    keys = {k[len("encoder.net."):] for k in method.state_dict() if k.startswith("encoder.net.")}
    assert keys == set(monai_network("resnet18").state_dict())


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


@pytest.mark.parametrize("name", sorted(METHODS))
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


@pytest.mark.parametrize("name", sorted(METHODS))
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
