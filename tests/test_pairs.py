import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medssl.errors import ConfigError, ManifestError
from medssl.pairs import PairSampler, queue_warning


def known_manifest() -> pd.DataFrame:
    """p0: one image; p1: study a (PA, LATERAL) + study b (PA); p2: one study (PA, AP, LATERAL);
    p3..p7: two frontal studies each (AP, ap lower-case in p7)."""
    rows = [("p0", "a", "PA"),
            ("p1", "a", "PA"), ("p1", "a", "LATERAL"), ("p1", "b", "PA"),
            ("p2", "a", "PA"), ("p2", "a", "AP"), ("p2", "a", "LATERAL")]
    for k in range(3, 8):
        rows += [(f"p{k}", "a", "AP"), (f"p{k}", "b", "ap" if k == 7 else "AP")]
    df = pd.DataFrame(rows, columns=["patient_id", "study_id", "view"])
    df.insert(0, "path", [f"img{i:02d}.png" for i in range(len(df))])
    df["modality"] = "CR"
    df["Edema"] = 1.0
    return df


def check_pairs(df, sampler, a, b, p, *, scope, views=None):
    pat, stu = df["patient_id"].to_numpy(), df["study_id"].to_numpy()
    assert (pat[a] == pat[b]).all()
    if scope == "study":
        assert (stu[a] == stu[b]).all()
    if views is not None:
        wanted = {v.upper() for v in views}
        assert all(str(v).upper() in wanted for v in df["view"].to_numpy()[np.concatenate([a, b])])
    # patient codes are consistent: equal code <=> equal patient
    assert len(set(zip(p.tolist(), pat[a].tolist()))) == len(set(p.tolist())) == len(set(pat[a].tolist()))
    # different images whenever the group has >= 2 eligible images
    eligible = np.zeros(len(df), bool)
    eligible[sampler.rows] = True
    key = pat if scope == "patient" else np.array([f"{x}/{y}" for x, y in zip(pat, stu)])
    group_size = pd.Series(key[eligible]).value_counts()
    for i, j in zip(a, b):
        assert (i != j) == (group_size[key[i]] >= 2)


def test_instance_pairs_are_each_image_with_itself_once_per_epoch():
    df = known_manifest()
    s = PairSampler(df, mode="instance", seed=0)
    a, b, p = s.pair_indices(0)
    assert len(s) == len(df) and (a == b).all() and sorted(a) == list(range(len(df)))
    assert a.dtype == b.dtype == p.dtype == np.int64
    frontal = PairSampler(df, mode="instance", views=["PA", "AP"])
    assert len(frontal) == len(df) - 2
    a, b, _ = frontal.pair_indices(0)
    assert (a == b).all() and set(df.view.to_numpy()[a]) == {"PA", "AP", "ap"}


def test_micle_patient_scope_pairs_different_images_of_one_patient():
    df = known_manifest()
    s = PairSampler(df, mode="micle", scope="patient", seed=1)
    for epoch in range(5):
        a, b, p = s.pair_indices(epoch)
        check_pairs(df, s, a, b, p, scope="patient")
        assert sorted(a) == list(range(len(df)))           # every image anchors exactly one pair
        assert set(df["patient_id"].to_numpy()[a]) == {f"p{k}" for k in range(8)}
        assert (a[df["patient_id"].to_numpy()[a] == "p0"] == b[df["patient_id"].to_numpy()[a] == "p0"]).all()
    assert s.n_patients == 8 and len(s) == len(df)


def test_micle_study_scope_and_views_restriction():
    df = known_manifest()
    s = PairSampler(df, mode="micle", scope="study", views=["pa", "AP"], seed=0)
    a, b, p = s.pair_indices(3)
    check_pairs(df, s, a, b, p, scope="study", views=["PA", "AP"])
    # p1's study b has one frontal image: falls back to itself although p1 has another PA image
    row_p1b = int(np.flatnonzero((df.patient_id == "p1") & (df.study_id == "b"))[0])
    assert b[a == row_p1b].tolist() == [row_p1b]
    # p2's study a: PA <-> AP only (the lateral is excluded)
    p2 = df.index[(df.patient_id == "p2") & (df.view != "LATERAL")].to_numpy()
    assert sorted(b[np.isin(a, p2)].tolist()) == sorted(p2.tolist())
    assert int(np.flatnonzero(df.view == "ap")[0]) in a           # lower-case view kept


def test_positive_is_uniform_over_the_other_images_of_the_group():
    df = known_manifest()
    s = PairSampler(df, mode="micle", scope="patient", seed=5)
    anchor = 4                                     # p2 PA; others: rows 5 and 6
    counts = {5: 0, 6: 0}
    for epoch in range(300):
        a, b, _ = s.pair_indices(epoch)
        counts[int(b[a == anchor][0])] += 1
    assert 115 < counts[5] < 185 and counts[5] + counts[6] == 300


def test_determinism_per_seed_and_epoch_and_iteration():
    df = known_manifest()
    s1, s2 = PairSampler(df, mode="micle", seed=3), PairSampler(df, mode="micle", seed=3)
    for x, y in zip(s1.pair_indices(2), s2.pair_indices(2)):
        assert np.array_equal(x, y)
    assert not np.array_equal(s1.pair_indices(2)[0], s1.pair_indices(3)[0])
    assert not np.array_equal(s1.pair_indices(2)[0], PairSampler(df, mode="micle", seed=4).pair_indices(2)[0])
    s1.set_epoch(2)
    a, b, _ = s1.pair_indices(2)
    assert list(s1) == [(df.path[i], df.path[j]) for i, j in zip(a, b)]
    assert list(s1) == list(s1)
    s1.set_epoch(3)
    assert list(s1) != [(df.path[i], df.path[j]) for i, j in zip(a, b)]


def test_patient_anchored_epoch_has_one_pair_per_patient():
    df = known_manifest()
    s = PairSampler(df, mode="micle", scope="patient", anchors="patient", seed=0)
    a, b, p = s.pair_indices(0)
    assert len(s) == len(a) == 8 and sorted(p) == list(range(8))
    check_pairs(df, s, a, b, p, scope="patient")
    pat = df["patient_id"].to_numpy()
    seen = {int(x) for e in range(40) for x in s.pair_indices(e)[0] if pat[x] == "p2"}
    assert seen == {4, 5, 6}          # the anchor image of a patient varies across epochs


def test_batches_never_hold_two_pairs_of_one_patient():
    df = known_manifest()
    s = PairSampler(df, mode="micle", seed=0)
    batches = list(s.batches(4, epoch=0))
    assert len(batches) == len(df) // 4
    for a, b, p in batches:
        assert len(a) == 4 and len(set(p.tolist())) == 4
        check_pairs(df, s, a, b, p, scope="patient")
    every = list(s.batches(3, epoch=1, drop_last=False))
    all_a = np.concatenate([x[0] for x in every])
    assert sorted(all_a.tolist()) == list(range(len(df)))      # nothing lost without drop_last
    assert all(len(set(x[2].tolist())) == len(x[2]) for x in every)
    assert max(len(x[0]) for x in every) == 3
    # deterministic and reshuffled across epochs
    first = [x[0].tolist() for x in s.batches(4, epoch=0)]
    assert first == [x[0].tolist() for x in batches]
    assert first != [x[0].tolist() for x in s.batches(4, epoch=1)]


def test_batches_drop_extra_pairs_of_a_dominant_patient(caplog):
    big = pd.DataFrame({"path": [f"x{i}" for i in range(40)], "patient_id": ["big"] * 30 + [f"q{i}" for i in range(10)],
                        "study_id": "s", "view": "PA"})
    s = PairSampler(big, mode="micle", seed=0)
    with caplog.at_level(logging.INFO, logger="medssl.pairs"):
        batches = list(s.batches(4, epoch=0))
    # 11 patients: 'big' can be in each batch at most once -> n_batches = (10 + n_batches) // 4 = 3
    assert len(batches) == 3
    assert all(len(set(p.tolist())) == 4 for _, _, p in batches)
    assert "left out" in caplog.text
    with pytest.raises(ConfigError, match="needs 12 different patients but the data has 11"):
        next(s.batches(12))


def test_input_errors_are_clear():
    df = known_manifest()
    with pytest.raises(ManifestError, match="patient_id"):
        PairSampler(df.drop(columns="patient_id"))
    with pytest.raises(ManifestError, match="study_id"):
        PairSampler(df.drop(columns="study_id"), mode="micle", scope="study")
    with pytest.raises(ManifestError, match="no manifest rows with view in"):
        PairSampler(df, views=["OBLIQUE"])
    bad = df.copy()
    bad.loc[2, "patient_id"] = None
    with pytest.raises(ManifestError, match="1 manifest rows have no patient_id"):
        PairSampler(bad)
    with pytest.raises(ConfigError, match="pair mode"):
        PairSampler(df, mode="simclr")
    with pytest.raises(ConfigError, match="pair_scope"):
        PairSampler(df, scope="series")


def test_queue_warning():
    assert queue_warning(100, 10_000) is None
    text = queue_warning(4096, 500)
    assert "4096" in text and "500 patients" in text and "patient code" in text and "~100%" in text
    assert "~18%" in queue_warning(200, 1000)        # 1 - (1 - 1/1000)^200 = 0.181


manifests = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 2), st.sampled_from(["PA", "AP", "LATERAL", None])),
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=manifests, mode=st.sampled_from(["instance", "micle"]), scope=st.sampled_from(["patient", "study"]),
       frontal=st.booleans(), seed=st.integers(0, 2 ** 16), epoch=st.integers(0, 5), batch=st.integers(1, 4))
def test_property_pairs_and_batches_on_random_manifests(rows, mode, scope, frontal, seed, epoch, batch):
    df = pd.DataFrame(rows, columns=["patient_id", "study_id", "view"])
    df["patient_id"] = "p" + df["patient_id"].astype(str)
    df.insert(0, "path", [f"f{i}" for i in range(len(df))])
    views = ["PA", "AP"] if frontal else None
    if views and not df["view"].isin(views).any():
        with pytest.raises(ManifestError):
            PairSampler(df, mode=mode, scope=scope, views=views, seed=seed)
        return
    s = PairSampler(df, mode=mode, scope=scope, views=views, seed=seed)
    a, b, p = s.pair_indices(epoch)
    assert len(a) == len(s) == len(s.rows)
    assert sorted(a.tolist()) == sorted(s.rows.tolist())          # each eligible image anchors once
    if mode == "instance":
        assert (a == b).all()
    else:
        check_pairs(df, s, a, b, p, scope=scope, views=views)
    assert set(df["patient_id"].to_numpy()[s.rows]) == set(df["patient_id"].to_numpy()[a])   # all patients
    if batch > s.n_patients:
        with pytest.raises(ConfigError):
            next(s.batches(batch, epoch))
        return
    for drop_last in (True, False):
        got = list(s.batches(batch, epoch, drop_last=drop_last))
        for _, _, pb in got:
            assert len(set(pb.tolist())) == len(pb) > 0
            if drop_last:
                assert len(pb) == batch


def test_scale_on_the_real_chexpert_table(shared_data):
    raw = pd.read_csv(shared_data / "metadata" / "chexpert_train.csv.gz", usecols=["Path", "AP/PA"])
    parts = raw["Path"].str.split("/", expand=True)
    df = pd.DataFrame({"path": raw["Path"], "patient_id": parts[2], "study_id": parts[2] + "/" + parts[3],
                       "view": raw["AP/PA"]})
    assert len(df) > 200_000
    s = PairSampler(df, mode="micle", scope="patient", views=["PA", "AP"], seed=0)
    assert s.n_patients > 60_000
    a, b, p = s.pair_indices(0)
    pat = df["patient_id"].to_numpy()
    assert (pat[a] == pat[b]).all() and len(np.unique(p)) == s.n_patients
    counts = pd.Series(pat[s.rows]).value_counts()
    has_two = pd.Series(pat[a]).map(counts).to_numpy() >= 2
    assert (a[has_two] != b[has_two]).all() and (a[~has_two] == b[~has_two]).all()
    n = 0
    for _, _, pb in s.batches(256, epoch=0):
        assert len(np.unique(pb)) == 256
        n += 1
    assert n == len(s) // 256


def test_queue_warning_says_when_same_patient_keys_are_masked():
    masked = queue_warning(4096, 500, masked=True)
    assert "masked out of the negatives" in masked and "false negative" not in masked
    assert "false negative" in queue_warning(4096, 500, masked=False)
    # masked: no warning while the queue is smaller than the patients (the auto queue on the demo data)
    assert queue_warning(256, 518, masked=True) is None and queue_warning(256, 518, masked=False) is not None
