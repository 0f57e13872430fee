import pandas as pd
import pytest

from medssl.atomic import atomic_path, write_json, write_table
from medssl.errors import OutputError


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp left behind


def test_write_table_csv_and_parquet_roundtrip(tmp_path):
    df = pd.DataFrame({"path": ["a.png", "b.png"], "x": [1.0, float("nan")]})
    for name in ("t.csv", "t.csv.gz", "t.parquet"):
        write_table(tmp_path / name, df)
        back = pd.read_parquet(tmp_path / name) if name.endswith("parquet") else pd.read_csv(tmp_path / name)
        pd.testing.assert_frame_equal(back, df)


def test_unwritable_output_is_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(OutputError, match="not_a_dir"):
        write_json(blocker / "x.json", {})


def test_gzip_csv_is_really_compressed(tmp_path):
    df = pd.DataFrame({"path": [f"img{i}.png" for i in range(100)]})
    write_table(tmp_path / "t.csv.gz", df)
    assert (tmp_path / "t.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
