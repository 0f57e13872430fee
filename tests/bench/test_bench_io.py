import json
import math

from medssl.cli import main
from medssl.commands.bench import available_parts, default_args

DECODE_KEYS = {"dicom_uncompressed", "dicom_jpeg2000", "dicom_rle", "png_8bit", "png_16bit", "nifti_slice"}


def test_bench_io_tiny_writes_json_with_in_run_ratios(tmp_path, capsys):
    out = tmp_path / "io.json"
    code = main(["bench", "io", "--n", "2", "--size", "64", "--cache-size", "32", "--repeats", "2",
                 "--workers", "2", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["environment"]["cpu_count"] >= 1
    io = results["parts"]["io"]
    assert io["settings"]["n"] == 2 and io["settings"]["size"] == 64
    assert DECODE_KEYS <= set(io["decode"])
    for key, d in io["decode"].items():
        assert d["images_per_s_per_core"] > 0 and d["n_samples"] >= 2 and d["mb_per_file"] > 0, key
        assert math.isclose(d["images_per_s_per_core"], 1 / d["median_s"])
    b = io["cache_build"]
    assert math.isclose(b["ratio_build_vs_bare"],
                        b["build_s_per_image_1_worker"] / b["bare_decode_resize_s_per_image"])
    assert math.isclose(b["ratio_build_vs_reader"],
                        b["build_s_per_image_1_worker"] / b["reader_decode_resize_s_per_image"])
    assert b["meets_target"] == (b["ratio_build_vs_bare"] <= b["target_ratio_build_vs_bare_max"])
    assert b["workers"] == 2 and b["build_images_per_s_all_workers"] > 0
    c = io["cached_read"]
    assert math.isclose(c["ratio"], c["cached_images_per_s"] / c["decode_each_time_images_per_s"])
    assert c["ratio"] > 1                       # even at 64 px, a memmap slice beats decoding a file
    table = capsys.readouterr().out
    assert "cached read -> tensor" in table and "decode dicom_jpeg2000" in table


def test_bench_all_runs_parts_with_their_defaults():
    parts = available_parts()
    assert "io" in parts
    args = default_args(parts["io"], out="x.json")
    assert (args.n, args.size, args.cache_size, args.out) == (4, 2048, 256, "x.json")
