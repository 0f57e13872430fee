import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from medssl.finetune.data import ArrayImages, make_set, to_unit_float
from medssl.finetune.features import FeatureStore, encode
from medssl.finetune.module import Classifier, FinetuneModule, masked_bce
from medssl.models.backbones import build_encoder


def test_masked_bce_ignores_masked_entries_exactly():
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.5, 3.0, -4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    kept = mask.bool()
    want = F.binary_cross_entropy_with_logits(logits[kept], targets[kept])
    torch.testing.assert_close(masked_bce(logits, targets, mask), want)
    garbage = targets.clone()
    garbage[~kept] = 1 - garbage[~kept]   # whatever sits under the mask cannot matter
    torch.testing.assert_close(masked_bce(logits, garbage, mask), want)
    # pos_weight 3 on class 0: the one kept positive of class 0 counts 3x
    pw = torch.tensor([3.0, 1.0, 1.0])
    manual = (3 * F.softplus(-logits[0, 0]) + F.softplus(logits[0, 1]) + F.softplus(logits[1, 0])
              + F.softplus(-logits[1, 2])) / 4
    torch.testing.assert_close(masked_bce(logits, targets, mask, pw), manual)


def test_encoder_learning_rate_is_lr_times_multiplier():
    man = pd.DataFrame({"path": ["a"], "patient_id": ["p"], "A": [1.0]})
    val = make_set(man, [0], ["A"], "val")
    module = FinetuneModule(Classifier(build_encoder("resnet18"), 1), val, ["A"], lr=0.01, encoder_lr_mult=0.1)
    opt = module.configure_optimizers()["optimizer"]
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([0.001, 0.01])
    assert sum(p.numel() for p in opt.param_groups[1]["params"]) == 512 + 1


def test_frozen_encoding_uses_batchnorm_running_stats_and_restores_mode():
    rng = np.random.default_rng(0)
    imgs = ArrayImages((rng.random((5, 32, 32)) * 255).astype(np.uint8))
    enc = build_encoder("resnet18").train()
    batch = encode(enc, imgs, [0, 1, 2, 3, 4], batch_size=5)
    alone = encode(enc, imgs, [2], batch_size=1)
    np.testing.assert_allclose(batch[2], alone[0], rtol=1e-4, atol=1e-5)   # no batch statistics
    assert enc.training and batch.dtype == np.float32 and batch.shape == (5, 512)


def test_to_unit_float_scales_by_dtype():
    assert to_unit_float(np.array([255], np.uint8))[0] == 1.0
    assert to_unit_float(np.array([65535, 0], np.uint16)).tolist() == [1.0, 0.0]
    assert to_unit_float(np.array([0.25], np.float64)).dtype == np.float32


def test_feature_store_computes_only_missing_rows(tmp_path):
    calls = []

    def compute(rows):
        calls.append(rows.tolist())
        return np.stack([rows * 1.0, -rows * 1.0], 1).astype(np.float32)

    store = FeatureStore(tmp_path, "k")
    np.testing.assert_array_equal(store.get("train", [5, 1, 3], compute)[:, 0], [5, 1, 3])
    out = FeatureStore(tmp_path, "k").get("train", [3, 7, 1], compute)   # a fresh object reads the file
    np.testing.assert_array_equal(out[:, 1], [-3, -7, -1])
    assert calls == [[1, 3, 5], [7]]
    (tmp_path / "k" / "train.npz").write_bytes(b"corrupt")
    FeatureStore(tmp_path, "k").get("train", [1], compute)   # recomputed, not trusted
    assert calls[-1] == [1]


def test_frozen_batchnorm_statistics_stay_put_while_the_weights_train():
    import lightning.pytorch as pl

    from medssl.finetune.data import ImageDataset, make_set
    from medssl.finetune.module import Classifier, FinetuneModule
    from medssl.models.backbones import build_encoder
    from tests.finetune.conftest import make_dataset

    man, imgs = make_dataset(n_patients=20, size=32)
    from medssl.finetune.data import ArrayImages

    train = make_set(man, np.arange(16), ["A", "B"], "train")
    loader = torch.utils.data.DataLoader(ImageDataset(ArrayImages(imgs), train), batch_size=8)
    for freeze in (True, False):
        torch.manual_seed(0)
        model = Classifier(build_encoder("resnet18", 1, 32), 2, 32)
        bn = model.encoder.net.bn1
        before_mean, before_w = bn.running_mean.clone(), bn.weight.detach().clone()
        module = FinetuneModule(model, train, ["A", "B"], epochs=1, freeze_bn_stats=freeze)
        pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0).fit(module, loader)
        assert torch.equal(bn.running_mean, before_mean) == freeze      # statistics frozen only when asked
        assert not torch.equal(bn.weight.detach(), before_w)            # the affine weights train either way
