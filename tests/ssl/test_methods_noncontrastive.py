"""SimSiam, Barlow Twins, VICReg, SwAV, DINO, MoCo v3 as methods: registry and config, the broken
variants their tests must catch (SimSiam without stop-gradient, DINO without centring), SwAV's
prototypes / queue / multi-crop, MoCo v3's patient masking, EMA targets, checkpointed state."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

import medssl.ssl.simsiam as simsiam_module
from medssl.config import SSLConfig, load_config
from medssl.errors import ConfigError
from medssl.ssl import METHODS, build_method
from medssl.ssl.barlowtwins import BarlowTwins
from medssl.ssl.dino import DINO
from medssl.ssl.losses_noncontrastive import sinkhorn
from medssl.ssl.mocov3 import MoCoV3
from medssl.ssl.multicrop import local_crops
from medssl.ssl.simsiam import SimSiam
from medssl.ssl.swav import SwAV
from medssl.ssl.vicreg import VICReg
from tests.ssl.tiny import TinyEncoder, fixed_batch, one_torch_thread  # noqa: F401 (autouse fixture)

NEW = {"simsiam": SimSiam, "barlowtwins": BarlowTwins, "vicreg": VICReg, "swav": SwAV, "dino": DINO, "mocov3": MoCoV3}
SMALL = dict(proj_hidden=32, proj_dim=8, pred_hidden=32, swav_prototypes=16, dino_out_dim=32)
EMA = {"dino", "mocov3"}


def tiny(name, **cfg):
    torch.manual_seed(0)
    return build_method(name, TinyEncoder(), SSLConfig(method=name, **{**SMALL, **cfg}))


# ----------------------------------------------------------------------------- registry, config, trainer hooks
def test_registered_with_their_trainer_contract():
    from medssl.config import Config
    from medssl.ssl.module import momentum_schedule

    assert NEW.items() <= METHODS.items()
    for name, cls in NEW.items():
        assert cls.global_batchnorm is True, name                      # SyncBN under DDP, as their references
        assert cls.has_momentum_network == (name in EMA), name
        cfg = Config()
        cfg.ssl.method = name
        # the trainer ramps the EMA momentum to 1 with a cosine for DINO and MoCo v3 (as for BYOL)
        assert momentum_schedule(cfg) == ("cosine" if name in EMA else "constant"), name
        assert load_config(None, [f"ssl.method={name}"]).ssl.method == name


def test_multicrop_below_half_the_field_is_refused_at_load_and_build():
    with pytest.raises(ConfigError, match=r"0\.14 of the field is refused.*at least 0\.5.*finding"):
        load_config(None, ["ssl.method=swav", "ssl.multicrop_n=4", "ssl.multicrop_scale=[0.14, 1.0]"])
    for name in ("swav", "dino"):
        with pytest.raises(ConfigError, match="ssl.multicrop_scale"):
            tiny(name, multicrop_n=2, multicrop_scale=[0.3, 0.6])
    load_config(None, ["ssl.method=dino", "ssl.multicrop_n=4", "ssl.multicrop_scale=[0.5, 0.8]"])  # allowed
    with pytest.raises(ConfigError, match="dino_teacher_temp"):
        load_config(None, ["ssl.dino_teacher_temp=0"])


@pytest.mark.parametrize("name", sorted(NEW))
def test_forward_contract_and_gradients(name):
    method = tiny(name, multicrop_n=2, multicrop_size=8) if name in ("swav", "dino") else tiny(name)
    view_a, view_b = fixed_batch(6)
    loss, logs = method(view_a, view_b, torch.tensor([0, 1, 0, 2, 3, 4]))
    assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
    for key in ("pos_sim", "neg_sim", "feat_std"):
        assert logs[key].shape == () and not logs[key].requires_grad and -1 <= logs[key].item() <= 1
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.encoder.parameters())
    frozen = [p for p in method.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen) and (len(frozen) > 0) == (name in EMA)


@pytest.mark.parametrize("name", sorted(EMA))
def test_ema_target_follows_the_online_network(name):
    method = tiny(name)
    with torch.no_grad():
        for p in method.projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.projector_target.parameters()]
    online = [p.clone() for p in method.projector.parameters()]
    method.momentum_update(0.9)
    for t0, o, t1 in zip(before, online, method.projector_target.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * o)


# ----------------------------------------------------------------------------- SimSiam: stop-gradient
def _no_stop_gradient(p, z):
    return -F.cosine_similarity(p, z, dim=1).mean()   # the broken variant: z keeps its gradient


def test_simsiam_target_branch_gets_no_gradient_and_the_broken_variant_is_caught(monkeypatch):
    """The loss's target input is cut out of the graph and replaced by a leaf, so its .grad is exactly
    the gradient that flows into the target branch: None with SimSiam's stop-gradient, non-zero without."""
    targets = []

    def spy(loss_fn):
        def wrapped(p, z):
            leaf = z.detach().requires_grad_(True)
            targets.append(leaf)
            return loss_fn(p, leaf)
        return wrapped

    view_a, view_b = fixed_batch(6)
    for loss_fn, flows in ((simsiam_module.simsiam_loss, False), (_no_stop_gradient, True)):
        targets.clear()
        monkeypatch.setattr(simsiam_module, "simsiam_loss", spy(loss_fn))
        method = tiny("simsiam")
        loss, _ = method(view_a, view_b)
        loss.backward()
        assert len(targets) == 2
        if flows:
            assert all(t.grad is not None and t.grad.abs().sum() > 1e-4 for t in targets)
        else:
            assert all(t.grad is None for t in targets)


def test_simsiam_gradients_equal_the_stop_gradient_formula_not_the_symmetric_one():
    view_a, view_b = fixed_batch(6)
    method = tiny("simsiam")
    loss, _ = method(view_a, view_b)
    loss.backward()
    got = [p.grad.clone() for p in method.encoder.parameters()]

    def grads(stop):
        method.zero_grad()
        z = method.projector(method.encoder(torch.cat([view_a, view_b])))
        p = method.predictor(z)
        t = z.detach() if stop else z
        ref = -0.5 * (F.cosine_similarity(p[:6], t[6:]).mean() + F.cosine_similarity(p[6:], t[:6]).mean())
        ref.backward()
        return [q.grad.clone() for q in method.encoder.parameters()]

    for g, r in zip(got, grads(stop=True)):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=1e-5)
    worst = max(((g - r).abs().max() / g.abs().max()).item() for g, r in zip(got, grads(stop=False)))
    assert worst > 0.05


# ----------------------------------------------------------------------------- DINO: centring
def test_dino_centre_is_subtracted_and_updated_with_the_teacher_batch_mean():
    method = tiny("dino", dino_center_momentum=0.8, dino_teacher_temp=0.5, dino_student_temp=0.3)
    view_a, view_b = fixed_batch(4)
    method.center.copy_(torch.linspace(-1, 1, 32))
    old = method.center.clone()
    with torch.no_grad():
        views = torch.cat([view_a, view_b])
        teacher = method.projector_target(method.encoder_target(views))
        student = method.projector(method.encoder(views))
    loss, _ = method(view_a, view_b)
    # centre: EMA of the teacher logits' mean over the batch (both views)
    torch.testing.assert_close(method.center, 0.8 * old + 0.2 * teacher.mean(0), atol=1e-6, rtol=1e-5)
    # loss: teacher softmax((t - old centre) / 0.5) of one view vs student log-softmax(s / 0.3) of the other
    total = 0.0
    for i, v in ((0, 1), (1, 0)):
        for b in range(4):
            t = [(x - c) / 0.5 for x, c in zip(teacher[i * 4 + b].tolist(), old.tolist())]
            s = [x / 0.3 for x in student[v * 4 + b].tolist()]
            pt = [math.exp(x) / sum(math.exp(y) for y in t) for x in t]
            lse = math.log(sum(math.exp(y) for y in s))
            total += -sum(p * (x - lse) for p, x in zip(pt, s)) / 4
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)
    method.eval()
    before = method.center.clone()
    method(view_a, view_b)
    torch.testing.assert_close(method.center, before)  # evaluation never moves the centre


def test_dino_without_centring_collapses_onto_one_dimension():
    """Broken variant: centre momentum 1 keeps the centre at 0 (no centring). After 40 steps on one batch
    the sharpened teacher puts ~all its mass on one output dimension for every image (entropy ~0,
    loss ~0: student and teacher trivially agree). With centring the mass stays spread."""
    def train(center_momentum):
        method = tiny("dino", momentum=0.99, dino_center_momentum=center_momentum)
        view_a, view_b = fixed_batch(16, seed=1)
        opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
        for _ in range(40):
            loss, logs = method(view_a, view_b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.on_train_batch_end()
        with torch.no_grad():
            targets = method.teacher_targets(method.projector_target(method.encoder_target(torch.cat([view_a, view_b]))))
        return targets.mean(0).max().item(), logs["teacher_entropy"].item(), method.center.abs().max().item()

    dominant, entropy, center = train(1.0)
    assert dominant > 0.9 and entropy < 0.3 and center == 0.0, (dominant, entropy)
    dominant, entropy, center = train(0.9)
    assert dominant < 0.5 and entropy > 1.0 and center > 0.01, (dominant, entropy)


def test_dino_multicrop_student_sees_all_crops_teacher_the_two_views(monkeypatch):
    import medssl.ssl.dino as dino_module

    seen = {}
    real = dino_module.dino_loss

    def spy(student, teacher, *args):
        seen["student"], seen["teacher"] = [s.shape for s in student], [t.shape for t in teacher]
        return real(student, teacher, *args)

    monkeypatch.setattr(dino_module, "dino_loss", spy)
    method = tiny("dino", multicrop_n=3, multicrop_size=8)
    method(*fixed_batch(4))
    assert seen["student"] == [torch.Size([4, 32])] * 5 and seen["teacher"] == [torch.Size([4, 32])] * 2


# ----------------------------------------------------------------------------- SwAV
def test_swav_prototypes_are_renormalised_each_training_step_and_codes_are_sinkhorn():
    method = tiny("swav")
    view_a, view_b = fixed_batch(8)
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)                   # as if an optimizer step had grown them
    loss, logs = method(view_a, view_b)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(16))
    with torch.no_grad():                                     # the loss is the swapped prediction of Sinkhorn codes
        z = F.normalize(method.projector(method.encoder(torch.cat([view_a, view_b]))), dim=1)
        s = z @ method.prototypes.weight.T
        q = [sinkhorn(s[:8], 0.05, 3), sinkhorn(s[8:], 0.05, 3)]
        lsm = F.log_softmax(s / 0.1, dim=1)
        expected = -0.5 * ((q[0] * lsm[8:]).sum(1).mean() + (q[1] * lsm[:8]).sum(1).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_swav_freezes_prototypes_for_the_first_iterations():
    method = tiny("swav", swav_freeze_prototypes_iters=2)
    view_a, view_b = fixed_batch(8)
    for step in range(3):
        method.zero_grad()
        loss, _ = method(view_a, view_b)
        loss.backward()
        g = method.prototypes.weight.grad
        assert g is not None                                  # DDP needs every parameter in the graph...
        assert (g.abs().sum() == 0) == (step < 2), step       # ...but frozen ones get a zero gradient
        assert method.encoder.net[0].weight.grad.abs().sum() > 0
    assert int(method.iteration) == 3


def test_swav_queue_joins_the_sinkhorn_only_when_full_and_is_checkpointed():
    method = tiny("swav", swav_queue_size=8)
    view_a, view_b = fixed_batch(4)
    method(view_a, view_b)
    assert int(method.queue_filled) == 4 and method.queue[:, 4:].abs().sum() == 0
    with torch.no_grad():   # both views in one pass, as the method (train-mode BN statistics of all 8)
        z = F.normalize(method.projector(method.encoder(torch.cat([view_a, view_b]))), dim=1)[:4]
    torch.testing.assert_close(method.queue[0, :4], z, atol=1e-6, rtol=1e-5)   # newest rows first
    method.eval()
    scores = z @ method.prototypes.weight.T
    assert torch.equal(method._codes(scores, 0), sinkhorn(scores))               # not full: batch alone
    method.train()
    method(*fixed_batch(4, seed=5))    # other images (a queue of copies of the batch would not change the codes)
    assert int(method.queue_filled) == 8
    method.eval()
    with_queue = method._codes(scores, 0)
    assert not torch.allclose(with_queue, sinkhorn(scores), atol=1e-4)
    expected = sinkhorn(torch.cat([scores, method.queue[0] @ method.prototypes.weight.T]))[:4]
    torch.testing.assert_close(with_queue, expected)
    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    restored = tiny("swav", swav_queue_size=8)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(restored.queue, method.queue)
    assert int(restored.queue_filled) == 8 and int(restored.iteration) == 2


def test_local_crops_cover_the_allowed_fraction_of_a_view():
    torch.manual_seed(0)
    view_a = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1) / 64
    view_b = 1 - view_a
    crops, boxes = local_crops(view_a, view_b, 3, 4, scale=(0.5, 1.0), return_boxes=True)
    assert [c.shape for c in crops] == [torch.Size([16, 1, 4, 4])] * 3
    for box in boxes:
        area = box[:, 2] * box[:, 3] / 64
        assert (area >= 0.5 - 1 / 8).all() and (area <= 1.0).all()   # pixel rounding of the integer box
    # crop 0 comes from view_a, crop 1 from view_b: a full-view crop of view_a reproduces its resized content
    full, _ = local_crops(view_a, view_b, 1, 8, scale=(1.0, 1.0), return_boxes=True)
    torch.testing.assert_close(full[0], view_a, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- MoCo v3
def test_mocov3_masks_in_batch_negatives_of_the_same_patient():
    method = tiny("mocov3", temperature=0.5).eval()     # eval: BN on running stats, embeddings per sample
    view_a, view_b = fixed_batch(4)
    patient = torch.tensor([0, 0, 1, 2])
    with torch.no_grad():
        q = [F.normalize(method.predictor(method.projector(method.encoder(v))), dim=1) for v in (view_a, view_b)]
        k = [F.normalize(method.projector_target(method.encoder_target(v)), dim=1) for v in (view_a, view_b)]
        masked, logs = method(view_a, view_b, patient)
        plain, _ = method(view_a, view_b, None)

    def loops(same):
        total = 0.0
        for qs, ks in ((q[0], k[1]), (q[1], k[0])):
            for i in range(4):
                logits = [float(qs[i] @ ks[j]) / 0.5 for j in range(4)]
                denom = sum(math.exp(l) for j, l in enumerate(logits) if j == i or not same(i, j))
                total += 2 * 0.5 * (math.log(denom) - logits[i]) / 4
        return total

    assert masked.item() == pytest.approx(loops(lambda i, j: patient[i] == patient[j]), abs=1e-5)
    assert plain.item() == pytest.approx(loops(lambda i, j: False), abs=1e-5)
    assert logs["masked_negatives"].item() == pytest.approx(2 / 12)   # (0, 1) and (1, 0) of 4 x 3 negatives
