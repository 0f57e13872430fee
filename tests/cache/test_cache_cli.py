import numpy as np

from medssl.cache import CachedImages
from medssl.cli import build_parser, main


def test_cache_command_builds_reports_and_refuses_stale(png_data, tmp_path, capsys):
    df, root = png_data
    manifest = root / "manifest.csv"          # relative paths resolve against the manifest's folder
    df.to_csv(manifest, index=False)
    out = tmp_path / "cache"
    args = ["cache", str(manifest), "--out", str(out), "--size", "32", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    assert "built" in capsys.readouterr().out
    assert len(CachedImages(out, df)) == 7
    assert main(args) == 0 and "up to date" in capsys.readouterr().out
    assert main(args + ["--dtype", "uint16"]) == 2            # settings changed: refused, no traceback
    err = capsys.readouterr().err
    assert "dtype: cache has 'uint8', requested 'uint16'" in err and "--rebuild" in err
    assert main(args + ["--dtype", "uint16", "--rebuild"]) == 0
    assert CachedImages(out)[0].dtype == np.uint16
    assert main(["cache", "--info", str(out)]) == 0
    assert "7/7 images, 32x32 uint16" in capsys.readouterr().out


def test_cache_skip_prints_failure_count(png_data, tmp_path, capsys):
    df, root = png_data
    df.loc[len(df)] = {"path": "gone.png", "patient_id": "p999", "study_id": "s9", "view": "PA",
                       "modality": "DX", "Cardiomegaly": 0.0}
    df.to_csv(root / "m.csv", index=False)
    assert main(["cache", str(root / "m.csv"), "--out", str(tmp_path / "c"), "--size", "16",
                 "--workers", "1", "--on-error", "skip", "--no-progress"]) == 0
    assert "1 image(s) could not be read" in capsys.readouterr().out
    assert main(["cache", "--info", str(tmp_path / "nothing")]) == 2


def test_help_mentions_examples():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["cache"].format_help()
    assert "--rebuild" in text and "examples:" in text
    assert "io" in sub.choices["bench"].format_help()
