"""Tiny real-image pretraining fixtures: embedded Kermany PNGs -> manifest with splits -> cache.

Built once per test process (module-level memo) under a pytest tmp dir; 48 px cache, 32 px views,
distinct patients in train so every batch of 8 is patient-disjoint.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.config import load_config

_MEMO: dict = {}
CACHE_SIZE = 48


def kermany_rows(n_train: int, n_val: int) -> tuple[pd.DataFrame, Path]:
    """(manifest rows, image root): first image of each of n_train + n_val distinct patients."""
    from medssl.data import embedded_kermany_dir

    root = embedded_kermany_dir()
    labels = pd.read_csv(root / "labels.csv")
    first = labels.drop_duplicates("patient_id_loose").sort_values("image").reset_index(drop=True)
    # alternate classes so the val split has both labels
    pos, neg = first[first.label_pneumonia == 1], first[first.label_pneumonia == 0]
    n = n_train + n_val
    picked = pd.concat([pos.iloc[: n // 2], neg.iloc[: n - n // 2]]).sort_values("image").reset_index(drop=True)
    rng = np.random.default_rng(0)
    split = np.array(["train"] * n_train + ["val"] * n_val)
    rng.shuffle(split)
    return pd.DataFrame({
        "path": picked["image"], "patient_id": [f"p{i:03d}" for i in range(n)],
        "study_id": [f"s{i:03d}" for i in range(n)], "view": "FRONTAL", "modality": "DX",
        "split": split, "Pneumonia": picked["label_pneumonia"].astype(float),
    }), root


def tiny_dataset(tmp_root: Path, n_train: int = 32, n_val: int = 16) -> dict:
    """{"manifest": csv path, "cache": dir, "df": DataFrame}; memoised per process."""
    key = (n_train, n_val)
    if key in _MEMO and Path(_MEMO[key]["manifest"]).is_file():
        return _MEMO[key]
    from medssl.cache import build_cache
    from medssl.manifest.table import save

    df, image_root = kermany_rows(n_train, n_val)
    base = Path(tmp_root) / f"data_{n_train}_{n_val}"
    base.mkdir(parents=True, exist_ok=True)
    df.attrs["data_root"] = str(image_root)
    manifest = base / "manifest.csv"
    save(df, manifest)
    cache = base / f"cache-{CACHE_SIZE}"
    build_cache(df, cache, data_root=image_root, size=CACHE_SIZE, workers=1, progress=False)
    _MEMO[key] = {"manifest": manifest, "cache": cache, "df": df}
    return _MEMO[key]


def tiny_config(data: dict, output_dir: Path, *overrides: str):
    """A CPU config for a few fast steps; extra `key=value` overrides win."""
    base = [
        f"data.manifest={data['manifest']}", f"cache.dir={data['cache']}", f"cache.size={CACHE_SIZE}",
        "model.arch=resnet18", "model.input_size=32",
        "ssl.proj_hidden=64", "ssl.proj_dim=32", "ssl.pred_hidden=64", "ssl.queue_size=32",
        "ssl.monitor_every_n_epochs=0", "ssl.momentum=0.99",
        "optim.lr=0.05", "optim.warmup_epochs=0", "optim.schedule=cosine",
        "trainer.batch_size=8", "trainer.num_workers=0", "trainer.progress_bar=false",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true",
        "trainer.log_every_n_steps=1", "trainer.checkpoint_every_n_steps=2",
        f"trainer.output_dir={output_dir}", "trainer.max_epochs=2",
    ]
    return load_config(None, base + list(overrides))


def step_losses(output_dir: Path, column: str = "train_loss_step") -> dict[int, float]:
    """Per-step values from every CSV log version of a run (a later version wins for a step)."""
    out: dict[int, float] = {}
    files = sorted(glob.glob(os.path.join(output_dir, "logs", "csv", "version_*", "metrics.csv")),
                   key=lambda p: int(Path(p).parent.name.split("_")[1]))
    for f in files:
        df = pd.read_csv(f)
        if column not in df.columns:
            continue
        for step, value in df[["step", column]].dropna().itertuples(index=False):
            out[int(step)] = float(value)
    return out
