import numpy as np
import pandas as pd

from medssl.study.report import class_gains, headline_table, summarise, write_report


def _results():
    rows = []
    for init, shift in (("random", 0.0), ("mocov2", 0.05)):
        for budget, n in (("50", 50), ("100", 100), ("10%", 78)):
            for seed in (0, 1):
                auc = 0.6 + shift + 0.001 * n + 0.01 * seed
                rows.append(dict(init=init, mode="linear", budget=budget, seed=seed, n_labeled=n, mean_auc=auc,
                                 mean_auc_ci_low=auc - 0.05, mean_auc_ci_high=auc + 0.05,
                                 auc_Pneumonia=auc, auc_Viral=auc - 0.1))
    return pd.DataFrame(rows)


def test_summary_means_over_seeds():
    s = summarise(_results())
    r = s[(s["init"] == "random") & (s["budget"] == "50")].iloc[0]
    assert r["mean_auc"] == np.float64(0.6 + 0.05 + 0.005)
    assert r["seeds"] == 2
    # sorted by number of labeled images within init/mode
    assert list(s[s["init"] == "random"]["n_labeled"]) == [50, 78, 100]


def test_gain_is_ssl_minus_random_per_class():
    g = class_gains(_results()).set_index("label")["gain"]
    assert np.allclose(g.to_numpy(), 0.05)


def test_report_files_present_and_plots_non_empty(tmp_path):
    from PIL import Image

    path = write_report(tmp_path, _results(), prevalence={"Pneumonia": 0.6, "Viral": 0.2},
                        config_text="name: test", data_notes="tiny")
    text = path.read_text()
    assert "| mocov2 | linear |" in text and "label_efficiency.png" in text and "torch" in text
    assert "0.710 [0.660, 0.760]" in headline_table(_results()) or "0.7" in text
    for name in ("label_efficiency.png", "class_gains.png"):
        img = np.asarray(Image.open(tmp_path / name).convert("L"), dtype=float)
        assert img.shape[0] > 200 and img.std() > 5  # a real figure, not a blank canvas
