"""kNN evaluation and nearest-neighbour retrieval on real images (embedded Kermany subset, random init)."""

from __future__ import annotations

import json

import numpy as np


def _features(kermany):
    """Features of every split, encoded here with medssl.finetune.features.encode (not read from the run)."""
    from medssl.finetune import data as fd
    from medssl.finetune.features import encode
    from medssl.finetune.run import build_init_encoder

    cfg = kermany.cfg()
    enc = build_init_encoder(cfg, "random")
    labels = fd.label_names(kermany.df)
    sets = {s: fd.make_set(kermany.df, fd.split_rows(kermany.df, s), labels, s) for s in ("train", "val", "test")}
    rows = np.arange(len(kermany.df))
    x = encode(enc, kermany.images, rows, batch_size=256, input_size=cfg.model.input_size)
    return labels, sets, {s: x[sets[s].rows] for s in sets}


def test_knn_aucs_equal_fit_knn_probe_on_the_same_features(kermany, random_run):
    """knn.json's per-class test AUCs and k are exactly those of fit_knn_probe (k on val) on encode()'s
    features; the random init's features separate the findings (AUC > 0.65 each)."""
    from sklearn.metrics import roc_auc_score

    from medssl.finetune.probe import fit_knn_probe

    labels, sets, x = _features(kermany)
    fit = fit_knn_probe(x["train"], sets["train"], x["val"], sets["val"], labels, ks=kermany.cfg().finetune.knn_ks)
    probs = fit.predict(x["test"])
    saved = json.loads((random_run.out_dir / "knn.json").read_text())
    assert saved["n_train"] == len(sets["train"]) == 780 and saved["n_test"] == len(sets["test"])
    for j, name in enumerate(labels):
        y = sets["test"].labels_raw[:, j]
        keep = (y == 0) | (y == 1)
        expected = roc_auc_score(y[keep], probs[keep, j])
        assert saved["classes"][name]["test_auc"] == expected
        assert saved["classes"][name]["k"] == fit.selected[j]["k"]
        assert expected > 0.65, (name, expected)
    table = (random_run.out_dir / "knn.md").read_text()
    assert all(f"| {name} | {saved['classes'][name]['k']} |" in table for name in labels)


def test_nearest_neighbours_skip_the_query_patient():
    """Constructed: the query's nearest gallery row is its own patient -> skipped, counted, next one shown."""
    from medssl.analyze.retrieval import nearest_neighbours

    gallery = np.array([[1.0, 0.1], [1.0, 0.3], [0.2, 1.0], [-1.0, 0.0]])
    query = np.array([[1.0, 0.12]])
    free, _, _ = nearest_neighbours(query, ["x"], gallery, ["a", "b", "c", "d"], 2, mean=np.zeros(2))
    assert free[0].tolist() == [0, 1]
    idx, sim, skipped = nearest_neighbours(query, ["a"], gallery, ["a", "b", "c", "d"], 2, mean=np.zeros(2))
    assert idx[0].tolist() == [1, 2] and skipped.tolist() == [1]
    assert np.all(np.diff(sim[0]) <= 0)
    # every gallery row of the query's patient: fewer than k neighbours, marked -1 / NaN
    idx, sim, _ = nearest_neighbours(query, ["a"], gallery, ["a", "a", "a", "d"], 2, mean=np.zeros(2))
    assert idx[0].tolist() == [3, -1] and np.isnan(sim[0, 1])


def test_retrieval_excludes_a_same_patient_nearest_neighbour_end_to_end(kermany, random_run, tmp_path):
    """Real data: give the first query's nearest training image the query's patient id; rerun retrieval:
    that image is no longer shown, the old second neighbour comes first, and retrieval.json counts one skip."""
    from medssl.analyze.run import AnalysisOptions, run_analysis

    q_row = int(random_run.query_rows[0])
    nbrs = random_run.neighbour_rows[0]
    df = kermany.df.copy()
    assert df.loc[int(nbrs[0]), "patient_id"] != df.loc[q_row, "patient_id"]
    df.loc[int(nbrs[0]), "patient_id"] = df.loc[q_row, "patient_id"]
    again = run_analysis(kermany.cfg(), "random", df, kermany.images, tmp_path / "out",
                         feature_dir=kermany.feature_dir, options=AnalysisOptions(steps=("retrieval",)))
    assert int(again.query_rows[0]) == q_row
    assert int(nbrs[0]) not in again.neighbour_rows[0].tolist()
    assert again.neighbour_rows[0].tolist()[:len(nbrs) - 1] == nbrs[1:].tolist()
    records = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    assert records["queries"][0]["same_patient_skipped"] == 1
    assert all(q["same_patient_skipped"] == 0 for q in records["queries"][1:])
    # and in the original run no neighbour shares its query's patient
    pid = kermany.df["patient_id"].to_numpy()
    for q, row in zip(random_run.query_rows, random_run.neighbour_rows):
        assert all(pid[n] != pid[q] for n in row if n >= 0)
