import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from medssl.errors import ManifestError
from medssl.evaluate import bootstrap as bs
from medssl.evaluate import write_evaluation
from medssl.evaluate.metrics import (SingleClassWarning, class_metrics, compare_predictions, default_tasks,
                                     evaluate_predictions, predictions_frame)
from medssl.manifest.schema import CHEXPERT_COMPETITION_TASKS

# positives scored 0.9, 0.4, 0.6; negatives 0.5, 0.4. Pairs (pos > neg): 0.9>0.5, 0.9>0.4, 0.6>0.5,
# 0.6>0.4 count 1 each, 0.4 vs 0.4 is a tie (1/2), 0.4 < 0.5 counts 0: AUC = 4.5 / 6 = 0.75.
HAND_Y = np.array([1, 1, 1, 0, 0], float)
HAND_S = np.array([0.9, 0.4, 0.6, 0.5, 0.4])


def test_hand_computed_auc():
    m = class_metrics(HAND_Y, HAND_S)
    assert m["auc"] == pytest.approx(0.75)
    assert (m["n_pos"], m["n_neg"]) == (3, 2)
    assert bs.weighted_auc(HAND_Y, HAND_S, np.ones((1, 5)))[0] == pytest.approx(0.75)
    # weight 2 on the tied negative (0.4): pairs 4 + 2 + ... = (0.9: 3) + (0.6: 3) + (0.4: 1.0 tie) = 7 / 9
    assert bs.weighted_auc(HAND_Y, HAND_S, np.array([[1, 1, 1, 1, 2]]))[0] == pytest.approx(7 / 9)


def test_weighted_auc_equals_sklearn_on_the_repeated_sample():
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.3).astype(float)
    s = np.round(rng.random(300) + 0.5 * y, 1)  # coarse rounding: many ties
    w = rng.integers(0, 4, size=(6, 300))
    got = bs.weighted_auc(y, s, w)
    want = [roc_auc_score(np.repeat(y, w[b]), np.repeat(s, w[b])) for b in range(6)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_uncertain_and_blank_targets_are_excluded_per_class():
    y = np.array([1, 0, -1, np.nan, 1, 0, 0])
    s = np.array([0.8, 0.3, 0.99, 0.01, 0.6, 0.7, 0.1])
    keep = [0, 1, 4, 5, 6]
    m = class_metrics(y, s)
    assert m["auc"] == pytest.approx(roc_auc_score(y[keep], s[keep]))
    assert m["ap"] == pytest.approx(average_precision_score(y[keep], s[keep]))
    assert (m["n_pos"], m["n_neg"]) == (2, 3)


def test_single_class_is_a_warning_and_nan_not_a_crash():
    df = predictions_frame([f"i{i}" for i in range(6)], ["p0", "p0", "p1", "p2", "p3", "p3"], ["A", "B"],
                           np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.4], [0.2, 0.5], [0.7, 0.6], [0.3, 0.1]]),
                           np.array([[1, 0], [0, 0], [1, -1], [0, 0], [1, np.nan], [0, 0]]))
    with pytest.warns(SingleClassWarning, match="'B'"):
        out = evaluate_predictions(df, n_bootstrap=50)
    assert np.isnan(out["classes"]["B"]["auc"]) and out["classes"]["B"]["n_neg"] == 4
    assert out["classes"]["A"]["auc"] == 1.0
    assert out["tasks_in_mean"] == ["A"] and out["mean_auc"] == 1.0


def test_default_tasks_are_the_chexpert_five_when_present():
    labels = ["No Finding", *CHEXPERT_COMPETITION_TASKS, "Fracture"]
    assert default_tasks(labels) == list(CHEXPERT_COMPETITION_TASKS)
    assert default_tasks(["Pneumonia", "Normal"]) == ["Pneumonia", "Normal"]


def _frame(n_patients=40, per_patient=1, seed=0, signal=1.0, ids=None):
    rng = np.random.default_rng(seed)
    y = (rng.random((n_patients, 2)) < 0.4).astype(float)
    y[0], y[1] = [1, 1], [0, 0]   # both classes present in every variant
    s = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape))))
    y, s = np.repeat(y, per_patient, 0), np.repeat(s, per_patient, 0)
    pids = ids if ids is not None else np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    return predictions_frame([f"img{i}" for i in range(len(y))], pids, ["A", "B"], s, y)


def test_bootstrap_resamples_patients_not_images():
    one = evaluate_predictions(_frame(), n_bootstrap=300, seed=3)
    # every patient's image repeated 10x: the same patients, the same AUCs, so exactly the same CIs
    ten = evaluate_predictions(_frame(per_patient=10), n_bootstrap=300, seed=3)
    assert ten["mean_auc"] == pytest.approx(one["mean_auc"])
    assert (ten["mean_auc_ci_low"], ten["mean_auc_ci_high"]) == pytest.approx(
        (one["mean_auc_ci_low"], one["mean_auc_ci_high"]), abs=1e-12)
    # had the 400 images been 400 independent patients the interval would be ~sqrt(10)x narrower
    iid = evaluate_predictions(_frame(per_patient=10, ids=[f"x{i}" for i in range(400)]), n_bootstrap=300, seed=3)
    width = lambda r: r["mean_auc_ci_high"] - r["mean_auc_ci_low"]  # noqa: E731
    assert width(iid) < 0.6 * width(one)
    assert one["mean_auc_ci_low"] < one["mean_auc"] < one["mean_auc_ci_high"]


def test_a_patients_images_move_together():
    codes, n_pat = bs.patient_codes(["b", "a", "b", "c", "b"])
    assert n_pat == 3 and codes.tolist() == [1, 0, 1, 2, 1]
    (counts,) = list(bs.count_blocks(n_pat, 5, 200, seed=0))
    weights = counts[:, codes]
    assert (counts.sum(1) == 3).all()
    assert (weights[:, 0] == weights[:, 2]).all() and (weights[:, 0] == weights[:, 4]).all()
    # a patient holding many images: its images' weight is always that patient's draw count
    assert set(np.unique(weights[:, 0])) <= {0, 1, 2, 3} and (weights[:, 0] == 0).any()


def test_bootstrap_replicate_equals_sklearn_on_the_expanded_sample():
    df = _frame(n_patients=30, per_patient=2)
    targets = df[["target_A", "target_B"]].to_numpy()
    probs = df[["prob_A", "prob_B"]].to_numpy()
    boot, _ = bs.bootstrap_aucs(targets, probs, df["patient_id"], n_resamples=5, seed=7)
    codes, n_pat = bs.patient_codes(df["patient_id"])
    (counts,) = list(bs.count_blocks(n_pat, len(df), 5, seed=7))
    for b in range(5):
        w = counts[b, codes]
        if len(set(np.repeat(targets[:, 0], w))) == 2:
            assert boot[b, 0] == pytest.approx(roc_auc_score(np.repeat(targets[:, 0], w), np.repeat(probs[:, 0], w)))


def test_paired_bootstrap_of_identical_models_is_exactly_zero():
    df = _frame()
    out = compare_predictions(df, df.sample(frac=1, random_state=0), n_bootstrap=200)  # row order must not matter
    assert out["mean_auc_diff"] == 0.0
    assert out["mean_auc_diff_ci_low"] == 0.0 and out["mean_auc_diff_ci_high"] == 0.0
    assert out["p_two_sided"] == 1.0
    assert all(c["diff"] == 0.0 for c in out["classes"].values())


def test_paired_bootstrap_detects_a_better_model():
    good, bad = _frame(n_patients=200, signal=2.0), _frame(n_patients=200, signal=2.0)
    rng = np.random.default_rng(5)
    bad[["prob_A", "prob_B"]] = 0.5 * bad[["prob_A", "prob_B"]].to_numpy() + 0.5 * rng.random((200, 2))
    out = compare_predictions(good, bad, n_bootstrap=500)
    assert out["mean_auc_diff"] > 0
    assert out["mean_auc_diff_ci_low"] > 0 and out["p_two_sided"] < 0.05 and out["frac_not_better"] < 0.025


def test_compare_refuses_different_test_sets():
    with pytest.raises(ManifestError, match="different images"):
        compare_predictions(_frame(n_patients=40), _frame(n_patients=41))


def test_write_evaluation_writes_strict_json_and_figures(tmp_path):
    df = _frame()
    df["target_C"], df["prob_C"] = 0.0, 0.5   # single-class column -> NaN -> null in JSON
    with pytest.warns(SingleClassWarning):
        out = write_evaluation(df, tmp_path, compare=df, n_bootstrap=50)

    def no_nan(x):
        raise AssertionError(f"non-strict JSON constant {x}")

    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_nan)
    assert metrics["classes"]["C"]["auc"] is None and metrics["mean_auc"] == pytest.approx(out["mean_auc"])
    assert metrics["classes"]["A"]["n_pos"] + metrics["classes"]["A"]["n_neg"] == 40
    for name in ("roc.png", "roc_compare.png", "comparison.json"):
        assert (tmp_path / name).read_bytes()[:4] in (b"\x89PNG", b"{\n  ")
    assert not list(tmp_path.glob("*.tmp"))

