"""The linear probe standardises its features, so badly scaled frozen features still train."""

import numpy as np
from sklearn.metrics import roc_auc_score

from medssl.finetune.data import LabeledSet
from medssl.finetune.features import fit_linear_probe, predict_head


def _set(name, feats_rng, n, d=16):
    y = (np.arange(n) % 2).astype(np.float64)
    x = feats_rng.normal(size=(n, d)).astype(np.float32)
    x[:, 0] += 1.5 * (2 * y - 1)  # one informative dimension
    labels = y[:, None]
    return x, LabeledSet(name=name, rows=np.arange(n), paths=np.array([f"{name}{i}" for i in range(n)]),
                         patient_ids=np.array([f"p{i}" for i in range(n)]), labels_raw=labels,
                         targets=labels.astype(np.float32), mask=np.ones_like(labels, dtype=np.float32))


def test_probe_is_invariant_to_feature_scale_and_offset():
    rng = np.random.default_rng(0)
    xt, train = _set("train", rng, 200)
    xv, val = _set("val", rng, 100)
    plain = fit_linear_probe(xt, train, xv, val, ["A"], epochs=20, lr=1e-2, seed=0)
    # what an encoder after a few SSL steps can look like: norms in the thousands, large offsets
    scale, offset = 3000.0, 500.0
    scaled = fit_linear_probe(xt * scale + offset, train, xv * scale + offset, val, ["A"], epochs=20, lr=1e-2, seed=0)
    p_plain = predict_head(plain.head, xv)[:, 0]
    p_scaled = predict_head(scaled.head, xv * scale + offset)[:, 0]
    assert roc_auc_score(val.targets[:, 0], p_scaled) > 0.8
    np.testing.assert_allclose(p_scaled, p_plain, atol=1e-3)
    # the standardisation travels with the head (buffers in its state dict)
    assert {"mean", "std", "linear.weight", "linear.bias"} <= set(scaled.head.state_dict())
