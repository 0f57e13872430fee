"""A tiny real data set for the analysis tests: the embedded Kermany subset, patient split, 32 px cache.

Built once per session (about 1 s); `random_run` is one analysis of the study's random init on it,
with the features kept in a store so the other tests reuse them instead of re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

SIZE = 32
OVERRIDES = [f"model.input_size={SIZE}", f"cache.size={SIZE}", "cache.workers=1", "trainer.num_workers=0",
             "finetune.batch_size=256", "finetune.probe_Cs=[0.01,0.1,1.0]", "evaluate.bootstrap=20"]


@dataclass
class Kermany:
    root: Path
    manifest: Path          # the split manifest on disk (its cache is root/cache-32, the default cache dir)
    df: pd.DataFrame
    images: object
    feature_dir: Path

    def cfg(self, *more):
        from medssl.config import load_config

        return load_config(None, OVERRIDES + [f"data.manifest={self.manifest}", *more])


@pytest.fixture(scope="session")
def kermany(tmp_path_factory) -> Kermany:
    from medssl.cache import open_cache
    from medssl.data import embedded_kermany_dir
    from medssl.manifest import build, save
    from medssl.splits import patient_split
    from medssl.ssl.data import ensure_cache

    root = tmp_path_factory.mktemp("kermany")
    df = patient_split(build("kermany", embedded_kermany_dir(), salt="test"), val=0.15, test=0.25, seed=0)
    manifest = save(df, root / "manifest.split.csv")
    df = df.reset_index(drop=True)
    k = Kermany(root, manifest, df, None, root / "features")
    cfg = k.cfg()
    ensure_cache(cfg, df)
    k.images = open_cache(root / f"cache-{SIZE}", df, size=SIZE)
    return k


@pytest.fixture(scope="session")
def random_run(kermany):
    """run_analysis of "random" (PCA embedding) into its own folder; features stored in kermany.feature_dir."""
    from medssl.analyze.run import AnalysisOptions, run_analysis

    out = kermany.root / "analysis-random"
    result = run_analysis(kermany.cfg(), "random", kermany.df, kermany.images, out, feature_dir=kermany.feature_dir,
                          options=AnalysisOptions(fast=True))
    return result
