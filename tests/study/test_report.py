"""Study statistics (subset variance in the CI, paired SSL-vs-random bootstrap), warnings and the report."""

import numpy as np
import pandas as pd
import pytest

from medssl.evaluate import bootstrap as bs
from medssl.evaluate.metrics import compare_predictions, predictions_frame
from medssl.study.checks import chance_warnings, pretraining_warnings
from medssl.study.report import class_gains, headline_table, paired_table, write_report
from medssl.study.stats import study_statistics

N_PATIENTS = 80


def _truth():
    rng = np.random.default_rng(0)
    pid = np.repeat(np.arange(N_PATIENTS), 2)
    y = np.stack([(rng.random(pid.size) < 0.4), (rng.random(pid.size) < 0.3)], 1).astype(float)
    return pid, y


def _study(tmp_path, quality, seeds=(0, 1, 2), budgets=(("50", 50), ("100", 100))):
    """A study folder with real predictions.csv files: score = quality * label + seeded noise."""
    pid, y = _truth()
    rows = []
    for init, base in quality.items():
        for budget, n in budgets:
            for seed in seeds:
                rng = np.random.default_rng([hash(init) % 1000, n, seed])
                q = base + 0.002 * n + 0.15 * seed            # seeds differ: label-subset variance
                probs = 1 / (1 + np.exp(-(q * (2 * y - 1) + rng.normal(size=y.shape))))
                key = f"{init}__linear__{budget}__seed{seed}"
                d = tmp_path / "cells" / key
                d.mkdir(parents=True)
                predictions_frame([f"img{i}.png" for i in range(len(pid))], [f"pid-{p:03d}" for p in pid],
                                  ["A", "B"], probs, y).to_csv(d / "predictions.csv", index=False)
                rows.append(dict(init=init, mode="linear", budget=budget, seed=seed, key=key, n_labeled=n,
                                 n_val_labeled=n // 2, n_labels_total=n + n // 2, mean_auc=np.nan,
                                 auc_A=np.nan, auc_B=np.nan, predictions=f"cells/{key}/predictions.csv"))
    return pd.DataFrame(rows)


def test_ci_adds_label_subset_variance_to_the_patient_bootstrap(tmp_path):
    results = _study(tmp_path, {"random": 0.3})
    summary, paired, _ = study_statistics(results, tmp_path, n_bootstrap=400, seed=0)
    row = summary[summary["budget"] == "50"].iloc[0]
    # by hand: per-seed AUCs on the full test set and on the same 400 patient resamples
    pid, y = _truth()
    points, boots = [], []
    for seed in (0, 1, 2):
        pred = pd.read_csv(tmp_path / results.loc[(results.budget == "50") & (results.seed == seed),
                                                  "predictions"].iloc[0], dtype={"patient_id": str})
        from sklearn.metrics import roc_auc_score

        p = pred[["prob_A", "prob_B"]].to_numpy()
        points.append(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in range(2)]))
        b, _ = bs.bootstrap_aucs(y, p, pred["patient_id"], n_resamples=400, seed=0)
        boots.append(b.mean(1))
    var_test = np.var(np.mean(boots, 0), ddof=1)
    var_subsets = np.var(points, ddof=1) / 3
    assert row["mean_auc"] == pytest.approx(np.mean(points))
    assert row["se"] == pytest.approx(np.sqrt(var_test + var_subsets))
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.959964 * np.sqrt(var_test + var_subsets), rel=1e-5)
    assert row["se_replicates"] > 0.3 * row["se_test"]      # the seeds really differ here
    assert row["replicates"] == 3 and paired.empty           # no pretrained init: nothing to pair


def test_paired_difference_vs_random_is_positive_for_a_better_init_and_zero_for_a_copy(tmp_path):
    results = _study(tmp_path, {"random": 0.3, "ssl": 0.9, "copy": 0.3})
    # 'copy' uses the same noise seed scheme as random only by name hash; make it an exact copy instead
    for _, r in results[results["init"] == "copy"].iterrows():
        twin = results[(results.init == "random") & (results.budget == r.budget) & (results.seed == r.seed)].iloc[0]
        (tmp_path / r.predictions).write_text((tmp_path / twin.predictions).read_text())
    summary, paired, per_cell = study_statistics(results, tmp_path, n_bootstrap=400, seed=0)
    ssl = paired[(paired["init"] == "ssl") & (paired["budget"] == "50")].iloc[0]
    assert ssl["diff"] > 0.05 and ssl["ci_low"] > 0 and ssl["p_value"] < 0.01
    copy = paired[paired["init"] == "copy"]
    assert np.allclose(copy["diff"], 0.0) and np.allclose(copy["se"], 0.0) and np.allclose(copy["p_value"], 1.0)
    # each cell's own paired difference equals medssl evaluate --compare on the same two files
    row = per_cell.set_index("row").loc[results.index[(results.init == "ssl") & (results.budget == "100")
                                                      & (results.seed == 1)][0]]
    a = pd.read_csv(tmp_path / "cells/ssl__linear__100__seed1/predictions.csv", dtype={"patient_id": str})
    b = pd.read_csv(tmp_path / "cells/random__linear__100__seed1/predictions.csv", dtype={"patient_id": str})
    ref = compare_predictions(a, b, n_bootstrap=400, seed=0)
    assert row["diff_vs_random"] == pytest.approx(ref["mean_auc_diff"])
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx(
        (ref["mean_auc_diff_ci_low"], ref["mean_auc_diff_ci_high"]))
    assert row["diff_p"] == pytest.approx(ref["p_two_sided"])
    text = paired_table(paired)
    assert "| ssl | linear |" in text and "p <0.001" in text


def test_chance_and_pretraining_warnings_name_the_cause():
    summary = pd.DataFrame({"init": ["random", "ssl"], "mode": "linear", "budget": "100",
                            "ci_low": [0.45, 0.48], "ci_high": [0.55, 0.61]})
    (w,) = chance_warnings(summary)
    assert "contains 0.5" in w and "too few pretraining epochs" in w
    assert chance_warnings(summary.assign(ci_low=[0.45, 0.52])) == []
    s = {"method": "mocov2", "final_loss": 4.80, "chance_loss": float(np.log(129)), "feat_std": 0.012,
         "samples_seen": 3000, "n_images": 782, "input_size": 32}
    text = " ".join(pretraining_warnings("mocov2", s))
    for needle in ("within 5% of chance", "near representation collapse", "3,000 two-view samples",
                   "782 unlabelled images", "32 px"):
        assert needle in text
    micle = " ".join(pretraining_warnings("moco", {**s, "pairs": "micle"}))
    assert "compare its probe and kNN rows" in micle and "compare its probe" not in text
    assert pretraining_warnings("ok", {"method": "simclr", "final_loss": 3.0, "chance_loss": 4.85,
                                       "feat_std": 0.05, "samples_seen": 30000, "n_images": 5000,
                                       "input_size": 128}) == []


def test_report_has_the_tables_warnings_and_real_figures(tmp_path):
    from PIL import Image

    results = _study(tmp_path, {"random": 0.3, "mocov2": 0.8})
    results["auc_A"], results["auc_B"] = 0.7, 0.6
    results.loc[results.init == "mocov2", "auc_A"] = 0.8
    summary, paired, _ = study_statistics(results, tmp_path, n_bootstrap=200)
    path = write_report(tmp_path, results, summary=summary, paired=paired, prevalence={"A": 0.4, "B": 0.3},
                        config_text="name: test", data_notes="tiny", warnings=["something is off"],
                        search_text="- grid here")
    text = path.read_text()
    r = summary[(summary.init == "mocov2") & (summary.budget == "100")].iloc[0]
    assert f"{r.mean_auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" in headline_table(summary) in text
    for needle in ("## Warnings", "**something is off**", "minus random init (paired)", "| mocov2 | linear |",
                   "## Labels used", "| 50 | 50 | 25 | 75 |", "- grid here", "torch"):
        assert needle in text, needle
    assert class_gains(results).set_index("label").loc["A", "gain"] == pytest.approx(0.1)
    for name in ("label_efficiency.png", "class_gains.png"):
        img = np.asarray(Image.open(tmp_path / name).convert("L"), dtype=float)
        assert img.shape[0] > 200 and img.std() > 5  # a real figure, not a blank canvas
    # two rows of panels when there is a paired difference to show: taller than one row
    assert Image.open(tmp_path / "label_efficiency.png").size[1] > 700


def test_one_label_subset_says_the_ci_covers_test_sampling_only(tmp_path):
    results = _study(tmp_path, {"random": 0.3}, seeds=(0,))
    summary, _, _ = study_statistics(results, tmp_path, n_bootstrap=100)
    assert (summary["se_replicates"] == 0).all()
    path = write_report(tmp_path, results.assign(auc_A=0.6, auc_B=0.6), summary=summary, paired=pd.DataFrame(
        columns=["init", "mode", "budget", "n_labeled", "diff", "ci_low", "ci_high", "p_value"]),
        prevalence={}, config_text="x")
    assert "cover test sampling only" in path.read_text()


def test_several_pretraining_runs_measure_init_variance_and_pair_by_subset_seed(tmp_path):
    results = _study(tmp_path, {"random": 0.3, "ssl": 0.7})
    ssl = results[results.init == "ssl"]
    # a second pretraining run of 'ssl': same cells, another (better) init
    second = ssl.copy()
    for i, r in second.iterrows():
        src = tmp_path / r.predictions
        key = r.key + "__pre1"
        (tmp_path / "cells" / key).mkdir()
        pred = pd.read_csv(src)
        pred[["prob_A", "prob_B"]] = pred[["prob_A", "prob_B"]] ** 0.5   # monotone: same AUC ...
        pred.loc[:5, "prob_A"] = 1 - pred.loc[:5, "prob_A"]              # ... except a few flips
        pred.to_csv(tmp_path / "cells" / key / "predictions.csv", index=False)
        second.loc[i, ["key", "predictions"]] = [key, f"cells/{key}/predictions.csv"]
    results = pd.concat([results.assign(pretrain_seed=0), second.assign(pretrain_seed=1)], ignore_index=True)
    summary, paired, per_cell = study_statistics(results, tmp_path, n_bootstrap=200)
    row = summary[(summary.init == "ssl") & (summary.budget == "50")].iloc[0]
    assert row["replicates"] == 6 and row["pretrain_seeds"] == 2 and row["init_sd"] > 0
    p = paired[(paired.init == "ssl") & (paired.budget == "50")].iloc[0]
    assert p["seeds"] == 3                       # paired per subset seed, the two runs averaged first
    assert len(per_cell) == 12                   # every ssl cell against its random twin
