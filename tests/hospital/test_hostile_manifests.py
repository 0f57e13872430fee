"""Hostile manifests against every command that reads one: a clear error naming the manifest and the
problem, exit code 2, no traceback, and no output written. (medssl.manifest.validate itself is
tested in tests/manifest; this checks that each command actually goes through it.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medssl.cli import main


def _spoil(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    df = df.copy()
    if kind == "missing_column":
        return df.drop(columns=["patient_id"])
    if kind == "text_column":  # an extra column that is neither a label nor meta_*
        return df.assign(notes="seen by Dr. X")
    if kind == "duplicate_rows":
        return pd.concat([df, df.iloc[:2]], ignore_index=True)
    if kind == "path_outside_root":
        df.loc[3, "path"] = "../../../etc/passwd"
        return df
    if kind == "absolute_path":
        df.loc[3, "path"] = "/etc/passwd"
        return df
    if kind == "patient_in_two_splits":
        train = df.index[df["split"] == "train"]
        patient = df.loc[train[0], "patient_id"]
        rows = df.index[df["patient_id"] == patient]
        assert len(rows) >= 2
        df.loc[rows[-1], "split"] = "test"
        return df
    if kind == "label_outside_set":
        df.loc[5, "Cardiomegaly"] = 2.0
        return df
    raise ValueError(kind)


#: What each message must say about the problem (besides the manifest's path).
PROBLEM = {
    "missing_column": "patient_id",
    "text_column": "notes",
    "duplicate_rows": "duplicate",
    "path_outside_root": "data root",
    "absolute_path": "absolute",
    "patient_in_two_splits": "split",
    "label_outside_set": "Cardiomegaly",
}


@pytest.fixture(scope="module")
def hostile(pipeline, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    base = pd.read_csv(pipeline["split"], dtype={"patient_id": str, "study_id": str})
    out = {}
    for kind in PROBLEM:
        path = folder / f"{kind}.csv"
        _spoil(base, kind).to_csv(path, index=False)
        out[kind] = path
    return out


def _commands(manifest: Path, tmp: Path, pipeline) -> dict[str, list[str]]:
    common = [str(a) for a in pipeline["common"]]
    cfg = str(pipeline["pretrain"] / "config.yaml")
    return {
        "manifest validate": ["manifest", "validate", str(manifest)],
        "split": ["split", str(manifest), "--out", str(tmp / "split.csv")],
        "cache": ["cache", str(manifest), "--out", str(tmp / "cache"), "--workers", "1"],
        "pretrain": ["pretrain", "-c", cfg, "--set", f"data.manifest={manifest}", "--set",
                     f"cache.dir={tmp / 'cache'}", "--set", f"trainer.output_dir={tmp / 'pretrain'}"],
        "finetune": ["finetune", *common, "--manifest", str(manifest), "--init", "random", "--mode", "linear",
                     "--out", str(tmp / "finetune")],
        "study": ["study", *common, "--set", f"data.manifest={manifest}", "--set",
                  f"study.output_dir={tmp / 'study'}", "--set", "study.budgets=[4]", "--set", "study.seeds=[0]"],
    }


@pytest.mark.parametrize("kind", list(PROBLEM))
def test_every_manifest_reader_refuses_it_clearly(kind, hostile, pipeline, tmp_path, capsys):
    manifest = hostile[kind]
    for name, argv in _commands(manifest, tmp_path, pipeline).items():
        code = main(argv)  # an unexpected exception would propagate and fail the test
        err = capsys.readouterr().err
        line = err.strip().splitlines()[-1] if err.strip() else ""
        assert code == 2, f"{name} on {kind}: exit {code}\n{err[-2000:]}"
        assert line.startswith(f"medssl {name.split()[0]}: error:"), f"{name}: {line}"
        assert str(manifest) in line, f"{name} on {kind} does not name the manifest: {line}"
        assert PROBLEM[kind].lower() in line.lower(), f"{name} on {kind} does not say what is wrong: {line}"
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert not [p for p in written if not p.endswith(".lock")], written
