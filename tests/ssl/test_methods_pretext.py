"""Single-image methods: MAE, rotation, jigsaw, inpainting (losses by hand, broken variants caught,
learning on real images without collapse) and the colourisation refusal."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medssl.config import SSLConfig, load_config
from medssl.errors import ConfigError
from medssl.models.backbones import build_encoder, encoder_from_config, monai_network
from medssl.models.weights import load_encoder_weights
from medssl.ssl import METHODS, build_method
from medssl.ssl.inpainting import block_mask, masked_mse
from medssl.ssl.jigsaw import _permutation_set, make_tiles, permutation_set, shuffle_tiles, standardise_tiles
from medssl.ssl.mae import mae_loss, patchify, random_masking, unpatchify
from medssl.ssl.rotation import rotate_batch
from tests.ssl._pretrain_data import step_losses, tiny_config, tiny_dataset
from tests.ssl.tiny import TinyEncoder, fixed_batch, one_torch_thread  # noqa: F401 (autouse fixture)

PRETEXT = ("mae", "rotation", "jigsaw", "inpainting")
SMALL = dict(proj_hidden=32, decoder_dim=32, decoder_depth=1, decoder_heads=4, jigsaw_permutations=30)
VIT = dict(patch_size=8, vit_depth=2)


def vit(size: int = 32):
    return build_encoder("vit_tiny", 1, size, **VIT)


def method(name, encoder=None, **cfg):
    torch.manual_seed(0)
    return build_method(name, encoder if encoder is not None else vit(), SSLConfig(method=name, **{**SMALL, **cfg}))


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name,arch", [(n, "vit_tiny") for n in PRETEXT] + [(n, "resnet18") for n in PRETEXT[1:]])
def test_contract_on_vit_and_cnn_encoders(name, arch):
    encoder = vit() if arch == "vit_tiny" else build_encoder("resnet18", 1, 32)
    m = method(name, encoder)
    assert METHODS[name] is type(m)
    assert m.compares_views is False and m.global_batchnorm is False and m.has_momentum_network is False
    view_a, view_b = fixed_batch(4, size=32)
    other_b = torch.rand_like(view_b)
    torch.manual_seed(1)
    loss, logs = m(view_a, view_b, torch.arange(4))
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    assert logs["feat_std"].shape == () and not logs["feat_std"].requires_grad and logs["feat_std"] > 1e-3
    torch.manual_seed(1)   # view_b (and patient) are ignored: another view_b, the same loss
    again, _ = m(view_a, other_b, None)
    assert again.item() == loss.item()
    loss.backward()
    # every trained parameter gets a gradient (DDP fails its reduction otherwise)
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    keys = {k[len("encoder.net."):] for k in m.state_dict() if k.startswith("encoder.net.")}
    want = monai_network(arch, input_size=32, **VIT) if arch == "vit_tiny" else monai_network(arch)
    assert keys == set(want.state_dict())   # export-backbone writes exactly the plain MONAI network


# ----------------------------------------------------------------------------- MAE
def test_patchify_by_hand_and_in_monai_token_order():
    x = torch.rand(2, 1, 8, 12)
    patches = patchify(x, 4)                                   # 2 x 3 grid
    assert patches.shape == (2, 6, 16)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                torch.testing.assert_close(patches[b, i * 3 + j], x[b, 0, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(-1))
    torch.testing.assert_close(unpatchify(patches, 4, 8, 12), x)
    # token n of MONAI's conv patch embedding is the linear map of patch n: same order as patchify
    emb = vit().net.patch_embedding.patch_embeddings
    z = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        tokens = emb(z).flatten(2).transpose(1, 2)
        by_patch = patchify(z, 8) @ emb.weight.reshape(192, -1).T + emb.bias
    torch.testing.assert_close(tokens, by_patch, atol=1e-5, rtol=1e-4)


def test_random_masking_keeps_the_lowest_noise_patches():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8, 0.7, 0.2, 0.6]])
    ids_keep, mask, ids_restore = random_masking(noise, 0.75)
    assert sorted(ids_keep[0].tolist()) == [1, 6]              # int(8 * 0.25) = 2 kept: the two smallest
    assert mask.tolist() == [[1, 0, 1, 1, 1, 1, 0, 1]]
    assert torch.equal(torch.argsort(noise, dim=1).gather(1, ids_restore), torch.arange(8)[None])


def _mae_by_hand(pred, target, mask, norm_pix):
    total, count = 0.0, 0
    for b in range(len(pred)):
        for n in range(len(pred[b])):
            if not mask[b][n]:
                continue
            t = target[b][n]
            if norm_pix:
                mu = sum(t) / len(t)
                var = sum((v - mu) ** 2 for v in t) / (len(t) - 1)     # unbiased, as the MAE reference
                t = [(v - mu) / math.sqrt(var + 1e-6) for v in t]
            total += sum((p - v) ** 2 for p, v in zip(pred[b][n], t)) / len(t)
            count += 1
    return total / count


def test_mae_loss_by_hand_counts_masked_patches_only():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 4, generator=g), torch.rand(2, 3, 4, generator=g)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    P, T, M = pred.tolist(), target.tolist(), mask.tolist()
    for norm_pix in (True, False):
        assert mae_loss(pred, target, mask, norm_pix).item() == pytest.approx(_mae_by_hand(P, T, M, norm_pix), abs=1e-6)
    # the broken variant (loss over every patch) gives another value, and mae_loss is not it
    every = _mae_by_hand(P, T, [[1] * 3] * 2, True)
    assert abs(every - _mae_by_hand(P, T, M, True)) > 1e-2
    assert mae_loss(pred, target, mask).item() != pytest.approx(every, abs=1e-3)
    # and a visible patch's prediction has no influence at all
    pred.requires_grad_(True)
    mae_loss(pred, target, mask).backward()
    assert pred.grad[mask == 0].abs().max() == 0 and pred.grad[mask == 1].abs().min() > 0


def test_mae_forward_is_that_loss_and_the_encoder_never_sees_masked_patches():
    m = method("mae")
    x, _ = fixed_batch(2, size=32)
    torch.manual_seed(3)
    loss, logs = m(x, x)
    torch.manual_seed(3)
    noise = torch.rand(2, 16)                                  # the draw forward made
    with torch.no_grad():
        pred, mask, latent = m.forward_parts(x, noise)
        assert latent.shape == (2, 4, 192) and mask.sum(dim=1).tolist() == [12.0, 12.0]
        assert loss.item() == pytest.approx(mae_loss(pred, patchify(x, 8), mask, True).item(), abs=1e-6)
        assert logs["mask_frac"].item() == 0.75
        # scramble the pixels of every masked patch: the encoder's output does not move
        scrambled = patchify(x, 8)
        scrambled[mask.bool()] = torch.rand(int(mask.sum()), 64)
        _, _, latent2 = m.forward_parts(unpatchify(scrambled, 8, 32, 32), noise)
    torch.testing.assert_close(latent2, latent)


def test_mae_refuses_a_cnn():
    with pytest.raises(ConfigError, match="needs a ViT encoder"):
        build_method("mae", build_encoder("resnet18"), SSLConfig(method="mae"))
    with pytest.raises(ConfigError, match="needs a ViT encoder.*resnet50"):
        load_config(None, ["ssl.method=mae", "model.arch=resnet50"])


# ----------------------------------------------------------------------------- rotation
def test_rotations_are_rot90_by_hand_with_their_labels():
    x = torch.arange(2 * 9, dtype=torch.float32).view(2, 1, 3, 3)
    rotated, labels = rotate_batch(x)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    s = 3
    for b in range(2):
        img = x[b, 0].tolist()
        by_hand = {0: [[img[i][j] for j in range(s)] for i in range(s)],
                   1: [[img[j][s - 1 - i] for j in range(s)] for i in range(s)],       # 90 degrees CCW
                   2: [[img[s - 1 - i][s - 1 - j] for j in range(s)] for i in range(s)],
                   3: [[img[s - 1 - j][i] for j in range(s)] for i in range(s)]}
        for k in range(4):
            assert rotated[k * 2 + b, 0].tolist() == by_hand[k]
            assert torch.equal(rotated[k * 2 + b], torch.rot90(x[b], k, dims=(1, 2)))


def test_rotation_loss_is_cross_entropy_by_hand():
    m = method("rotation", TinyEncoder()).eval()
    x, _ = fixed_batch(2)
    with torch.no_grad():
        loss, logs = m(x, x)
        rotated, labels = rotate_batch(x)
        logits = m.head(m.encoder(rotated)).tolist()
    hand = sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels.tolist())) / 8
    assert loss.item() == pytest.approx(hand, abs=1e-5)
    acc = sum(max(range(4), key=row.__getitem__) == y for row, y in zip(logits, labels.tolist())) / 8
    assert logs["acc"].item() == pytest.approx(acc)


# ----------------------------------------------------------------------------- jigsaw
def test_permutation_set_is_fixed_and_far_apart():
    perms = permutation_set(30)
    assert perms.shape == (30, 9) and all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 30
    # pinned: a change of seed or algorithm would silently change what class k of a checkpoint means
    assert perms[:3].tolist() == [[7, 5, 1, 6, 2, 3, 8, 0, 4], [0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 0, 3, 2, 5, 4, 7, 8, 6]]
    dist = (perms[:, None] != perms[None]).sum(-1) + 9 * torch.eye(30, dtype=torch.long)
    assert dist.min() == 7                                      # maximal-Hamming: every pair differs in >= 7 tiles
    # determinism without the cache, and across method instances built under different torch seeds
    assert _permutation_set.__wrapped__(30, 0) == tuple(map(tuple, perms.tolist()))   # recomputed, not cached
    assert _permutation_set.__wrapped__(30, 1) != _permutation_set.__wrapped__(30, 0)
    a = method("jigsaw", TinyEncoder())                        # built under torch seed 0
    torch.manual_seed(5)
    b = build_method("jigsaw", TinyEncoder(), SSLConfig(method="jigsaw", **SMALL))
    assert torch.equal(a.perms, perms) and torch.equal(b.perms, perms) and "perms" in a.state_dict()
    # the broken variant this guards against: a set drawn afresh per call fails the same check
    drifting = lambda n: torch.stack([torch.randperm(9) for _ in range(n)])  # noqa: E731
    assert not torch.equal(drifting(30), drifting(30))


def test_tiles_reassemble_into_the_image_by_hand():
    x = torch.arange(2 * 144, dtype=torch.float32).view(2, 1, 12, 12)
    perms, labels = permutation_set(30), torch.tensor([3, 17])
    shuffled = shuffle_tiles(make_tiles(x, 4), perms, labels)  # tile = cell = 4: the tiles cover the image
    rebuilt = torch.zeros_like(x)
    for b in range(2):
        for i, cell in enumerate(perms[labels[b]].tolist()):   # position i holds the tile of cell perms[y][i]
            r, c = divmod(cell, 3)
            rebuilt[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = shuffled[b, i]
    assert torch.equal(rebuilt, x) and not torch.equal(shuffled, make_tiles(x, 4))
    offsets = torch.randint(0, 2, (2, 9, 2))                   # 3-pixel tiles at random places in their cells
    tiles = make_tiles(x, 3, offsets)
    for b in range(2):
        for k in range(9):
            r, c = divmod(k, 3)
            top, left = 4 * r + int(offsets[b, k, 0]), 4 * c + int(offsets[b, k, 1])
            assert torch.equal(tiles[b, k], x[b, :, top:top + 3, left:left + 3])
    z = standardise_tiles(torch.rand(2, 9, 1, 5, 5))
    torch.testing.assert_close(z.mean(dim=(2, 3, 4)), torch.full((2, 9), 0.5))
    torch.testing.assert_close(z.std(dim=(2, 3, 4), correction=0), torch.full((2, 9), 0.25), atol=1e-2, rtol=0)


def test_jigsaw_loss_is_cross_entropy_over_the_permutation_set_by_hand():
    m = method("jigsaw", TinyEncoder()).eval()                 # eval: centred tiles, only labels are random
    x = fixed_batch(3, size=24)[0]
    with torch.no_grad():
        torch.manual_seed(4)
        loss, _ = m(x, x)
        torch.manual_seed(4)
        labels = torch.randint(0, 30, (3,))                    # the labels forward drew
        tiles, _ = m.puzzle(x, labels)
        logits = m.head(m.encoder(standardise_tiles(tiles).reshape(27, 1, 7, 7)).reshape(3, -1)).tolist()
        torch.testing.assert_close(m.classify(tiles)[0], torch.tensor(logits))
    hand = sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels.tolist())) / 3
    assert loss.item() == pytest.approx(hand, abs=1e-5)


# ----------------------------------------------------------------------------- inpainting
def test_block_masks_by_hand():
    centre = block_mask((2, 1, 8, 8), 0.5, "center")
    expected = torch.zeros(2, 1, 8, 8)
    expected[:, :, 2:6, 2:6] = 1
    assert torch.equal(centre, expected)
    torch.manual_seed(0)
    rand = block_mask((16, 1, 8, 8), 0.5, "random")
    for m in rand[:, 0]:
        rows, cols = m.nonzero(as_tuple=True)
        assert m.sum() == 16 and rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
    assert len({tuple(m.nonzero()[0].tolist()) for m in rand[:, 0]}) > 1   # not all in one place


def test_inpainting_loss_only_inside_the_hole():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, 0, :2, :2] = 1
    mask[1, 0, 1:3, 2:] = 1
    P, T, M = pred.tolist(), target.tolist(), mask.tolist()
    cells = [(b, i, j) for b in range(2) for i in range(4) for j in range(4)]
    hand = sum((P[b][0][i][j] - T[b][0][i][j]) ** 2 for b, i, j in cells if M[b][0][i][j]) / 8
    plain = sum((P[b][0][i][j] - T[b][0][i][j]) ** 2 for b, i, j in cells) / 32   # the broken variant
    assert masked_mse(pred, target, mask).item() == pytest.approx(hand, abs=1e-6)
    assert abs(plain - hand) > 1e-2
    outside = pred + 5 * (1 - mask)                            # pixels outside the hole have weight 0
    assert masked_mse(outside, target, mask).item() == pytest.approx(hand, abs=1e-6)
    assert masked_mse(pred + 0.1 * mask, target, mask).item() != pytest.approx(hand, abs=1e-4)


def test_inpainting_encoder_never_sees_the_hole():
    m = method("inpainting", TinyEncoder()).eval()
    x, _ = fixed_batch(2, size=32)
    hole = block_mask(x.shape, 0.5, "center")
    with torch.no_grad():
        pred, _, feats = m.forward_parts(x, hole)
        _, _, feats2 = m.forward_parts(torch.where(hole.bool(), torch.rand_like(x), x), hole)
        torch.manual_seed(2)
        loss, _ = m(x, x)
        torch.manual_seed(2)
        drawn = block_mask(x.shape, 0.5, "random")
        expected = masked_mse(m.forward_parts(x, drawn)[0], x, drawn)
    assert pred.shape == x.shape and 0 <= pred.min() and pred.max() <= 1
    torch.testing.assert_close(feats2, feats)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


# ----------------------------------------------------------------------------- colourisation
@pytest.mark.parametrize("name", ["colorization", "colourisation"])
def test_colourisation_is_refused_for_grayscale_images(name):
    with pytest.raises(ConfigError, match="no colour to predict") as err:
        load_config(None, [f"ssl.method={name}", "data.modality=ct"])
    assert "grayscale" in str(err.value) and "data.modality ct" in str(err.value) and "undefined" in str(err.value)
    with pytest.raises(ConfigError, match=f"{name} is refused for grayscale images"):
        build_method(name, TinyEncoder(), SSLConfig())
    assert name not in METHODS


# ----------------------------------------------------------------------------- learning on real images
#: method -> (steps, overrides) for a few CPU steps on 8 embedded Kermany images (32 px). The ViT (patch 8,
#: 2 blocks) keeps checkpoints small (each epoch end writes last.ckpt and best.ckpt; ResNet-18 + AdamW: 137 MB).
VIT_RUN = ("model.arch=vit_tiny", "model.patch_size=8", "model.vit_depth=2", "optim.optimizer=adamw", "optim.lr=0.001",
           "optim.weight_decay=0.05")
RUNS = {
    "mae": (10, VIT_RUN + ("ssl.decoder_dim=64", "ssl.decoder_depth=1", "ssl.decoder_heads=4")),
    "rotation": (10, VIT_RUN),
    "inpainting": (10, ("optim.lr=0.05",)),                  # ResNet-18
    # 2 steps: it runs through `medssl pretrain`; learning is test_jigsaw_learns_... below. A ViT's pooled
    # tile features read feat_std ~0.009 at init (medssl.ssl.pretext): the documented lower threshold
    "jigsaw": (2, VIT_RUN + ("ssl.jigsaw_permutations=30", "ssl.collapse_threshold=0.003")),
}


def effective_rank(feats: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of centred L2-normalised features (Roy & Vetterli 2007)."""
    f = F.normalize(feats.float(), dim=1)
    s = torch.linalg.svdvals(f - f.mean(dim=0))
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def cached_images(data, size: int) -> torch.Tensor:
    from medssl.cache.dataset import open_cache

    images = open_cache(data["cache"])
    x = torch.stack([torch.from_numpy(np.array(images[i])) for i in range(len(images))]).float().unsqueeze(1) / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_pretext_method_lowers_its_loss_on_real_images(tmp_path, name):
    from medssl.ssl.train import run_pretrain

    steps, overrides = RUNS[name]
    data = tiny_dataset(tmp_path, n_train=8, n_val=16)  # one batch of 8 patients per epoch
    out = tmp_path / name
    cfg = tiny_config(data, out, f"ssl.method={name}", "optim.schedule=constant", "trainer.max_epochs=50",
                      f"trainer.max_steps={steps}", "trainer.checkpoint_every_n_steps=0", "ssl.proj_hidden=64",
                      *overrides)
    torch.manual_seed(0)
    random_init = encoder_from_config(cfg.model).eval()
    result = run_pretrain(cfg)
    losses = list(step_losses(out).values())
    stds = list(step_losses(out, "feat_std_step").values())
    assert len(losses) == steps and len(stds) == steps and all(math.isfinite(v) for v in losses)
    start, end = np.mean(losses[1:4]), np.mean(losses[-3:])
    assert name == "jigsaw" or end < start, f"{name}: loss {losses}"
    # no collapse: the logged detector stays above the trainer's threshold (it would warn below)
    assert min(stds) > cfg.ssl.collapse_threshold, stds
    logged = pd.read_csv(next((out / "logs" / "csv").glob("version_*/metrics.csv")))
    assert "pos_sim_step" not in logged.columns   # no pairs: nothing to log there
    chance = json.loads((out / "pretrain_summary.json").read_text())["chance_loss"]
    assert chance == pytest.approx({"rotation": math.log(4), "jigsaw": math.log(30)}[name]) if name in (
        "rotation", "jigsaw") else chance is None
    # the exported backbone loads into the plain encoder; its features on all 24 images keep their rank
    encoder = encoder_from_config(cfg.model)
    load_encoder_weights(result.encoder, encoder)
    x = cached_images(data, cfg.model.input_size)
    with torch.no_grad():
        rank_init, rank = effective_rank(random_init(x)), effective_rank(encoder.eval()(x))
    assert rank > 3 and rank > 0.5 * rank_init, (rank, rank_init)
    print(f"{name}: loss {start:.3f} -> {end:.3f}; feat_std {np.mean(stds[:3]):.4f} -> {np.mean(stds[-3:]):.4f}; "
          f"effective rank {rank_init:.2f} (random init) -> {rank:.2f} on {len(x)} images")


def test_jigsaw_learns_the_permutations_of_real_images(tmp_path):
    """20 AdamW steps of jigsaw on 8 real images (48 px, ResNet-18): on a FIXED evaluation set (every one of
    the 30 permutations of every image, centred tiles) the loss falls and accuracy leaves chance (1/30).
    A direct loop: the per-step training loss is over 8 fresh random puzzles, too noisy for 20 steps."""
    data = tiny_dataset(tmp_path, n_train=8, n_val=16)
    x = cached_images(data, 48)
    torch.manual_seed(0)
    m = build_method("jigsaw", build_encoder("resnet18", 1, 48), SSLConfig(method="jigsaw", proj_hidden=64,
                                                                           jigsaw_permutations=30))
    train = x[:8]

    def evaluate():
        m.eval()
        with torch.no_grad():
            labels = torch.arange(30).repeat(len(train))
            logits, _ = m.classify(m.puzzle(train.repeat_interleave(30, 0), labels)[0])
            out = F.cross_entropy(logits, labels).item(), (logits.argmax(dim=1) == labels).float().mean().item()
            rank = effective_rank(m.encoder(x))
        m.train()
        return out, rank

    (loss0, acc0), rank0 = evaluate()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    stds = []
    for _ in range(20):
        loss, logs = m(train, train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stds.append(logs["feat_std"].item())
    (loss1, acc1), rank1 = evaluate()
    assert loss1 < loss0 - 0.2 and acc1 > 5 / 30, (loss0, acc0, loss1, acc1)
    assert min(stds) > SSLConfig().collapse_threshold and rank1 > 3 and rank1 > 0.5 * rank0, (stds, rank0, rank1)
    print(f"jigsaw: fixed-set loss {loss0:.3f} -> {loss1:.3f}, accuracy {acc0:.3f} -> {acc1:.3f} (chance 0.033); "
          f"feat_std {np.mean(stds[:3]):.4f} -> {np.mean(stds[-3:]):.4f}; effective rank {rank0:.2f} -> {rank1:.2f}")
