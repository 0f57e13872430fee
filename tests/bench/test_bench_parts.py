"""bench pipeline / pretrain / scale at tiny sizes: JSON keys and ratios from their own measurements."""

import json
import math

import pytest

from medssl.cli import main
from medssl.commands.bench import available_parts, default_args


def _part(tmp_path, name, *argv):
    out = tmp_path / f"{name}.json"
    assert main(["bench", name, *argv, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["environment"]["cpu_count"] >= 1
    return results["parts"][name]


def test_bench_pipeline_tiny(tmp_path, capsys):
    p = _part(tmp_path, "pipeline", "--n", "6", "--source-size", "64", "--cache-size", "40", "--out-size", "32",
              "--batch", "4", "--naive-batch", "2", "--repeats", "2", "--budget", "0.2", "--workers", "1")
    assert p["settings"]["n_sources"] == 6 and p["settings"]["out_size"] == 32
    assert p["inputs"]["cache_build_images_per_s"] > 0
    runs = p["pipelines"]
    assert set(runs) == {"batched", "per_sample", "naive"}
    for name, r in runs.items():
        one, many = r["one_core"], r["all_cores"]
        assert one["samples_per_s"] > 0 and one["per_core"] == one["samples_per_s"], name
        assert one["blocks"] == 2 and one["min"] <= one["samples_per_s"] <= one["max"], name
        assert many["workers"] == 1 and math.isclose(many["per_core"], many["samples_per_s"] / many["cores_used"])
    assert runs["batched"]["all_cores"]["cores_used"] == min(2, p["settings"]["cpu_count"])
    assert runs["naive"]["all_cores"]["cores_used"] == 1
    assert runs["batched"]["all_cores_main_threads_all"]["samples_per_s"] > 0
    # (d) the batched policy inside 1 and 2 DataLoader workers: positive, finite, per core = rate / cores used
    inw = p["in_workers"]
    assert set(inw) == {"workers_1", "workers_2"}
    for key, r in inw.items():
        assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0, key
        assert r["min"] <= r["samples_per_s"] <= r["max"] and r["blocks"] == 2, key
        assert r["cores_used"] == min(r["workers"], p["settings"]["cpu_count"])
        assert math.isclose(r["per_core"], r["samples_per_s"] / r["cores_used"])
    s = p["summary"]
    assert math.isclose(s["ratio_batched_vs_naive"], s["batched_per_core"] / s["naive_per_core"])
    assert math.isclose(s["ratio_batched_vs_per_sample"], s["batched_per_core"] / s["per_sample_per_core"])
    assert s["meets_target"] == (s["batched_per_core"] >= s["target_per_core_min"]
                                 and s["ratio_batched_vs_naive"] >= s["target_ratio_vs_naive_min"])
    table = capsys.readouterr().out
    assert "naive" in table and "in_workers, 2 worker(s)" in table


def test_bench_pretrain_tiny(tmp_path):
    p = _part(tmp_path, "pretrain", "--size", "32", "--batch", "4", "--steps", "2", "--warmup", "1",
              "--rounds", "1", "--queue-size", "16", "--workers", "0", "--device", "cpu")
    st = p["settings"]
    assert (st["size"], st["cache_size"], st["batch"], st["workers"], st["torch_threads"]) == (32, 48, 4, 0, 1)
    e2e, top = p["end_to_end"], p["ceiling"]
    for m in (e2e, top):
        assert m["steps"] == 2 and m["min_step_s"] <= m["median_step_s"] <= m["max_step_s"]
        assert math.isclose(m["images_per_s"], 4 / m["median_step_s"])
    s = p["summary"]
    assert math.isclose(s["ratio_end_to_end_vs_ceiling"], e2e["images_per_s"] / top["images_per_s"])
    assert len(s["ratio_per_round"]) == 1
    assert s["meets_target"] == (s["ratio_end_to_end_vs_ceiling"] >= s["target_ratio_min"])


def test_bench_scale_tiny_synthetic(tmp_path):
    p = _part(tmp_path, "scale", "--synthetic", "--rows", "3000", "--cache-size", "16", "--touch", "20")
    assert p["settings"]["table"].startswith("synthetic")
    m = p["manifest"]
    assert m["rows"] == 3000 and 600 < m["patients"] < 1200 and m["patients"] < m["studies"] < m["rows"]
    assert m["labels"] == 14 and m["maxrss_mb"] >= m["import_rss_mb"] > 0
    s = p["splits"]
    assert math.isclose(s["splits_and_subsets_s"], s["patient_split_s"] + s["label_subsets_s"])
    # nested budgets: 250+500+1000+2500 images per seed (5000 and 10000 exceed 2.4k train rows? no:
    # budgets larger than the split raise), so the tiny table uses only what fits
    assert s["subset_rows"] > 0 and 2000 < s["train_rows"] < 3000
    assert s["meets_target"] == (s["splits_and_subsets_s"] < s["target_s_max"] and s["maxrss_mb"] < s["target_mb_max"])
    d = p["dataset"]
    assert d["images"] == 3000 and d["touched_images"] == 20
    # the dataset object holds a few numpy columns, no Python object per image
    assert d["heap_bytes_per_image"] < 100 and d["pickled_bytes_per_image"] < 100


def test_step_durations_and_stats():
    from medssl.bench.pretrain import step_durations, step_stats

    ends = [10.0, 11.0, 11.5, 12.5, 13.0]       # wall time at the end of steps 1..5
    assert step_durations(ends, 1) == [1.0, 0.5, 1.0, 0.5]   # steps 2..5 (step 1 has no start time)
    assert step_durations(ends, 2) == [0.5, 1.0, 0.5]
    stats = step_stats([0.5, 1.0, 0.5], batch=8)
    assert stats["median_step_s"] == 0.5 and stats["images_per_s"] == 16 and stats["steps"] == 3
    with pytest.raises(ValueError):
        step_stats([], batch=8)


def test_bench_all_knows_the_parts_and_their_defaults():
    parts = available_parts()
    assert {"pipeline", "pretrain", "scale"} <= set(parts)
    a = default_args(parts["pipeline"], out="x.json")
    assert (a.n, a.source_size, a.cache_size, a.out_size) == (192, 1024, 256, 224)
    a = default_args(parts["pretrain"])
    assert (a.arch, a.method, a.batch, a.precision) == ("resnet18", "mocov2", 32, "32-true")
    a = default_args(parts["scale"])
    assert a.rows == 223_414 and not a.synthetic
