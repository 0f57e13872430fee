"""Probes fitted to convergence: logistic regression (C on val) and cosine kNN (k on val)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score

from medssl.finetune.data import LabeledSet
from medssl.finetune.probe import (fit_at, fit_knn_probe, fit_linear_probe, knn_scores, log_loss,
                                   logistic_estimator)


def _labeled(name, y, mask=None):
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    mask = np.ones_like(y, dtype=np.float32) if mask is None else mask.astype(np.float32)
    raw = np.where(mask > 0, y, -1.0)
    return LabeledSet(name=name, rows=np.arange(len(y)), paths=np.array([f"{name}{i}" for i in range(len(y))]),
                      patient_ids=np.array([f"{name}p{i}" for i in range(len(y))]), labels_raw=raw,
                      targets=y.astype(np.float32), mask=mask)


@pytest.fixture(scope="module")
def task():
    """(train, val, test) features like an encoder's: correlated, badly scaled and offset (the probe
    standardises), labels from a logistic model on a few latent dimensions."""
    rng = np.random.default_rng(0)
    d = 64
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    w = np.zeros(d)
    w[:8] = 0.5

    def draw(n):
        z = rng.normal(size=(n, d))
        y = (rng.random(n) < 1 / (1 + np.exp(-(z @ w)))).astype(float)
        return (z @ mix + 0.5).astype(np.float32) * 40.0, y
    return [draw(n) for n in (400, 400, 4000)]


def test_probe_reaches_logistic_regression_cv_and_is_converged_at_the_selected_C(task):
    (xt, yt), (xv, yv), (xs, ys) = task
    fit = fit_linear_probe(xt, _labeled("t", yt), xv, _labeled("v", yv), ["A"])
    auc = roc_auc_score(ys, fit.predict(xs)[:, 0])
    # the reference: scikit-learn's own CV over C (5 folds of train+val, same standardisation)
    mean, std = fit.state["mean"], fit.state["std"]
    ref = LogisticRegressionCV(Cs=np.logspace(-4, 1, 21), cv=5, scoring="roc_auc", max_iter=5000,
                               l1_ratios=(0.0,), use_legacy_attributes=False)
    ref.fit((xt - mean) / std, yt)
    auc_ref = roc_auc_score(ys, ref.predict_proba((xs - mean) / std)[:, 1])
    assert abs(auc - auc_ref) < 0.005, (auc, auc_ref)
    assert auc > 0.7                # the Bayes-optimal AUC of this task is about 0.75
    # converged: every fit stopped on tolerance, and refitting the selected C far longer and tighter
    # leaves the val loss where it is
    chosen = fit.selected[0]["C"]
    assert all(h["converged"] for h in fit.history[0])
    clf = fit_at(logistic_estimator(max_iter=50_000, tol=1e-12), (xt.astype(np.float64) - mean) / std, yt, chosen)
    loss_long = log_loss(yv, clf.predict_proba((xv - mean) / std)[:, 1])
    loss_probe = log_loss(yv, fit.predict(xv)[:, 0])
    assert abs(loss_long - loss_probe) < 1e-4
    # the chosen C is the val-AUC optimum of the grid (ties: lower val loss)
    best = max(fit.history[0], key=lambda h: (h["val_auc"], -h["val_loss"]))
    assert best["C"] == chosen


def test_probe_is_invariant_to_feature_scale_and_offset(task):
    (xt, yt), (xv, yv), _ = task
    train, val = _labeled("t", yt), _labeled("v", yv)
    plain = fit_linear_probe(xt, train, xv, val, ["A"])
    scaled = fit_linear_probe(xt * 3000.0 + 500.0, train, xv * 3000.0 + 500.0, val, ["A"])
    np.testing.assert_allclose(scaled.predict(xv * 3000.0 + 500.0), plain.predict(xv), atol=1e-4)
    # the exported head computes the same probabilities (standardisation buffers travel with it)
    import torch

    head = scaled.head()
    assert {"mean", "std", "linear.weight", "linear.bias"} <= set(head.state_dict())
    with torch.no_grad():
        p = torch.sigmoid(head(torch.from_numpy(xv * 3000.0 + 500.0))).numpy()
    np.testing.assert_allclose(p, scaled.predict(xv * 3000.0 + 500.0), atol=1e-5)


def test_each_label_is_fitted_on_its_own_masked_in_rows_and_one_class_labels_are_constant():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    a = (x[:, 0] > 0).astype(float)
    b = (x[:, 1] > 0).astype(float)
    mask = np.ones((200, 3))
    mask[:100, 1] = 0                              # U-Ignore: half of B's rows are not B's evidence
    y = np.stack([a, b, np.zeros(200)], 1)        # C: no positive in train
    train = _labeled("t", y, mask)
    val = _labeled("v", np.stack([a, b, (x[:, 2] > 0).astype(float)], 1))
    fit = fit_linear_probe(x, train, x, val, ["A", "B", "C"])
    # B is the same fit as on its 100 masked-in rows alone
    alone = fit_linear_probe(x[100:], _labeled("t", b[100:]), x, _labeled("v", b), ["B"])
    assert fit.selected[1]["C"] == alone.selected[0]["C"]
    assert fit.selected[2]["C"] is None and np.allclose(fit.predict(x)[:, 2], 1e-6, atol=1e-6)
    assert roc_auc_score(a, fit.predict(x)[:, 0]) > 0.95


def test_knn_scores_equal_an_explicit_weighted_vote():
    rng = np.random.default_rng(2)
    tr, q = rng.normal(size=(30, 5)), rng.normal(size=(7, 5))
    y = (rng.random((30, 2)) < 0.5).astype(np.float32)
    m = np.ones((30, 2), np.float32)
    m[:10, 1] = 0
    mean = tr.mean(0)
    got = knn_scores(tr, y, m, q, mean, k=[4, 6], temperature=0.1)
    unit = lambda v: (v - mean) / np.linalg.norm(v - mean, axis=1, keepdims=True)  # noqa: E731
    sim = unit(q) @ unit(tr).T
    for i in range(7):
        for j, k in enumerate([4, 6]):
            ok = np.flatnonzero(m[:, j] > 0)
            nn = ok[np.argsort(-sim[i, ok])[:k]]
            w = np.exp(sim[i, nn] / 0.1)
            assert got[i, j] == pytest.approx((w * y[nn, j]).sum() / w.sum(), rel=1e-9)


def test_knn_probe_chooses_k_on_val_and_separates_clusters():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(2, 16)) * 3
    def draw(n):
        y = rng.integers(0, 2, n).astype(float)
        return (centres[y.astype(int)] + rng.normal(size=(n, 16))).astype(np.float32), y
    (xt, yt), (xv, yv), (xs, ys) = draw(100), draw(60), draw(300)
    fit = fit_knn_probe(xt, _labeled("t", yt), xv, _labeled("v", yv), ["A"], ks=(1, 5, 20, 500))
    assert [h["k"] for h in fit.history[0]] == [1, 5, 20]        # k > n_train dropped
    assert fit.selected[0]["k"] in (5, 20)
    assert roc_auc_score(ys, fit.predict(xs)[:, 0]) > 0.97
