"""The study's feature analysis (`study.analyze: true`): one analysis per init, linked from the report.

After the grid, every init of `study.inits` (its first pretraining run when it has several) is
analysed into `<study>/analysis/<init>/` with the features the study already stored
(`<study>/features`): kNN, retrieval, kernels, embedding, and saliency with the init's best full
fine-tuning cell at the smallest budget (highest val score; occlusion on a logistic probe when the
study has no full cells). An init whose index.md exists is not analysed again (resumable). The
report gets a "Feature analysis" section with links per init (`report_section`, `html_section`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.analyze.run import FILES, AnalysisOptions
from medssl.errors import MedsslError

log = logging.getLogger(__name__)

#: What the study runs per init (tests may swap in a faster one).
STUDY_OPTIONS = AnalysisOptions()
#: Links per init, in report order: (link text, file in the init's analysis folder).
LINKS = (("kNN table", FILES["knn"]), ("retrieval", FILES["retrieval"]), ("first-layer kernels", FILES["kernels"]),
         ("saliency", FILES["saliency"]), ("embedding", FILES["embedding"]))


def folder_name(init: str) -> str:
    """The init's name as one safe path component (the study's own names, e.g. "mocov2")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(init)).strip("._") or "init"


def best_full_checkpoint(results: pd.DataFrame, init: str, out_dir: str | Path) -> str | None:
    """best.pt of the init's full fine-tuning cell at its smallest budget with the highest val score
    (test AUC only where no val score was recorded); None when there is none on disk."""
    from medssl.study.runner import resolve_result_path

    need = {"init", "mode", "n_labeled", "checkpoint"}
    if results is None or results.empty or not need <= set(results.columns):
        return None
    full = results[(results["init"] == init) & (results["mode"] == "full")]
    if full.empty:
        return None
    full = full[full["n_labeled"] == full["n_labeled"].min()]
    score = "val_score" if "val_score" in full.columns and np.isfinite(full["val_score"].astype(float)).any() \
        else "mean_auc"
    for _, row in full.assign(_s=full[score].astype(float).fillna(-np.inf)).sort_values("_s", ascending=False,
                                                                                      kind="stable").iterrows():
        path = resolve_result_path(str(row["checkpoint"]), out_dir)
        if Path(path).is_file():
            return path
    return None


def analyze_study(cfg, df: pd.DataFrame, images, results: pd.DataFrame, out_dir: str | Path, *,
                  feature_dir: str | Path | None = None, options: AnalysisOptions | None = None) -> dict[str, Path]:
    """Analyse every init into out_dir/analysis/<init>/; returns init name -> its index.md (finished ones).
    images: the study's image source (None: the config's cache, opened here)."""
    from medssl.analyze.run import run_analysis
    from medssl.study.runner import init_runs

    out_dir = Path(out_dir)
    done: dict[str, Path] = {}
    if images is None:
        from medssl.cache import open_cache
        from medssl.ssl.data import cache_dir_of

        images = open_cache(cache_dir_of(cfg), df, size=cfg.cache.size, dtype=cfg.cache.dtype,
                            window=cfg.cache.window)
    for name, value in cfg.study.inits.items():
        folder = out_dir / "analysis" / folder_name(name)
        index = folder / FILES["index"]
        if index.is_file():
            done[name] = index
            continue
        encoder = init_runs(value)[0][0]
        classifier = best_full_checkpoint(results, name, out_dir)
        log.info("study analysis: %s into %s (saliency: %s)", name, folder,
                 "best full fine-tuning cell" if classifier else "logistic probe")
        try:
            run_analysis(cfg, encoder, df, images, folder, classifier=classifier, feature_dir=feature_dir,
                         options=options or STUDY_OPTIONS, name=name)
        except MedsslError as e:   # the grid's results stand; the report says what is missing
            log.warning("study analysis of %s failed: %s", name, e)
            continue
        done[name] = index
    return done


def _links(out_dir: Path, index: Path) -> tuple[str, list[tuple[str, str]], float | None]:
    """(index link, [(text, link)], kNN mean test AUC) of one init, links relative to out_dir."""
    folder = Path(index).parent
    rel = lambda p: Path(p).resolve().relative_to(out_dir.resolve()).as_posix()  # noqa: E731
    links = [(text, rel(folder / f)) for text, f in LINKS if (folder / f).is_file()]
    auc = None
    knn = folder / FILES["knn_json"]
    if knn.is_file():
        value = json.loads(knn.read_text()).get("mean_test_auc")
        auc = float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None
    return rel(index), links, auc


INTRO = ("Per init, on all images of the split manifest with frozen features: kNN test AUC on all training "
         "images (k chosen on val), nearest training images of test queries (same patient excluded), the "
         "first-layer kernels beside the random init's, saliency maps, and a 2-D embedding coloured by label "
         "and by site (separation by site = shortcut risk). See README, \"Feature analysis\".")


def report_section(out_dir: str | Path, analysis: dict[str, Path] | None) -> list[str]:
    """report.md lines of the "Feature analysis" section ([] when there is nothing to link)."""
    if not analysis:
        return []
    out_dir = Path(out_dir)
    md = ["## Feature analysis", "", INTRO, ""]
    for name, index in analysis.items():
        first, links, auc = _links(out_dir, index)
        parts = [f"[index]({first})"] + [f"[{text}]({link})" for text, link in links]
        md.append(f"- **{name}**: " + " · ".join(parts)
                  + (f" (kNN mean test AUC {auc:.3f})" if auc is not None else ""))
    return md + [""]


def html_section(out_dir: str | Path, analysis: dict[str, Path] | None) -> str:
    """The same section for report.html, in its style (escaped table, links relative to the study folder)."""
    if not analysis:
        return ""
    from medssl.study.report_html import esc, prose

    out_dir = Path(out_dir)
    rows = []
    for name, index in analysis.items():
        first, links, auc = _links(out_dir, index)
        cells = " · ".join(f'<a href="{esc(link)}">{esc(text)}</a>' for text, link in [("index", first), *links])
        rows.append(f'<tr><td class="key">{esc(name)}</td><td class="key">{cells}</td>'
                    f'<td>{esc("n/a" if auc is None else f"{auc:.3f}")}</td></tr>')
    table = ('<table id="analysis-table"><thead><tr><th class="key">init</th><th class="key">analysis</th>'
             '<th>kNN mean test AUC</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    return f'<section id="analysis"><h2>Feature analysis</h2>{prose(INTRO)}{table}</section>'
