"""A tiny learnable multi-label data set: 32 px images whose bright halves encode the labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medssl.config import load_config


def make_dataset(n_patients: int = 60, size: int = 32, seed: int = 0):
    """(manifest, images uint8 (N, S, S)): 2 images per patient; label A = bright top half, B = bright left half.

    60% of patients train, 20% val, 20% test; ~15% of B labels are uncertain (-1)."""
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), 2)
    n = pid.size
    split = np.where(pid < n_patients * 0.6, "train", np.where(pid < n_patients * 0.8, "val", "test"))
    a = (rng.random(n) < 0.4).astype(float)
    b = (rng.random(n) < 0.5).astype(float)
    b[rng.random(n) < 0.15] = -1
    images = (rng.random((n, size, size)) * 60).astype(np.uint8)
    images[a == 1, : size // 2, :] += 150
    images[b == 1, :, : size // 2] += 100
    manifest = pd.DataFrame({
        "path": [f"img{i:03d}.png" for i in range(n)], "patient_id": [f"anon{p:03d}" for p in pid],
        "study_id": [f"s{i}" for i in range(n)], "view": "PA", "modality": "CR", "split": split, "A": a, "B": b,
    })
    return manifest, images


def budgets_for(manifest: pd.DataFrame, sizes=(20, 40), seed: int = 0) -> pd.DataFrame:
    """Nested budgets: the first k training paths in a seeded order."""
    train = manifest.loc[manifest["split"] == "train", "path"].to_numpy()
    order = np.random.default_rng(seed).permutation(train)
    return pd.concat([pd.DataFrame({"path": order[:k], "budget": str(k), "seed": seed}) for k in sizes],
                     ignore_index=True)


def tiny_config(**overrides):
    sets = {"model.input_size": 32, "finetune.batch_size": 16, "trainer.num_workers": 0,
            "trainer.progress_bar": "false", "evaluate.bootstrap": 100, "finetune.epochs": 3}
    sets.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="session")
def tiny_data():
    return make_dataset()


class RecordingImages:
    """Image source that logs every manifest row it serves (to check when the test split is touched)."""

    def __init__(self, images):
        self.images = images
        self.log: list[int] = []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.log.append(int(i))
        return self.images[i]
