"""The label-efficiency report: study statistics -> figures -> one Markdown page.

Inputs: the study's per-cell `results` (one row per cell: init, mode, budget, seed, n_labeled,
mean_auc, auc_<label> ...), its `summary` (per init x mode x budget: mean over label subsets with
a CI that includes subset variance) and `paired` (per init x mode x budget: paired bootstrap of
init minus random init), both from `medssl.study.stats.study_statistics`.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medssl import atomic

BASELINE_INIT = "random"
MODE_TITLES = {"linear": "logistic probe (frozen encoder)", "knn": "kNN probe (frozen encoder)",
               "full": "full fine-tuning"}
MODE_ORDER = {"linear": 0, "knn": 1, "full": 2}


def class_columns(results: pd.DataFrame) -> list[str]:
    return [c for c in results.columns if c.startswith("auc_")]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _modes(table: pd.DataFrame) -> list[str]:
    return sorted(dict.fromkeys(table["mode"]), key=lambda m: MODE_ORDER.get(m, 9))


def _budget_ticks(ax, values) -> None:
    ticks = sorted(set(int(v) for v in values))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks])   # the budgets themselves, not 2x10^2-style labels
    ax.minorticks_off()


def plot_label_efficiency(summary: pd.DataFrame, paired: pd.DataFrame, path: str | Path) -> Path:
    """Top: mean test AUC vs labeled images (log x) per mode, band = 95% CI incl. subset variance.
    Bottom: paired difference of each pretrained init minus random init, band = its 95% CI."""
    plt = _figure()
    modes = _modes(summary)
    rows = 2 if len(paired) else 1
    fig, axes = plt.subplots(rows, len(modes), figsize=(5.2 * len(modes), 3.8 * rows), squeeze=False,
                             sharex="col")
    for c, mode in enumerate(modes):
        ax = axes[0][c]
        sub = summary[summary["mode"] == mode]
        for init, g in sub.groupby("init", sort=False):
            g = g.sort_values("n_labeled")
            line, = ax.plot(g["n_labeled"], g["mean_auc"], marker="o", label=init)
            ax.fill_between(g["n_labeled"], g["ci_low"], g["ci_high"], alpha=0.2, color=line.get_color())
        _budget_ticks(ax, sub["n_labeled"])
        ax.set_title(MODE_TITLES.get(mode, mode))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        if rows == 2:
            ax = axes[1][c]
            sub_p = paired[paired["mode"] == mode]
            colours = {init: line.get_color() for init, line in zip(
                sub["init"].drop_duplicates(), axes[0][c].get_lines())}
            for init, g in sub_p.groupby("init", sort=False):
                g = g.sort_values("n_labeled")
                line, = ax.plot(g["n_labeled"], g["diff"], marker="o", label=f"{init} - random",
                                color=colours.get(init))
                ax.fill_between(g["n_labeled"], g["ci_low"], g["ci_high"], alpha=0.2, color=line.get_color())
            ax.axhline(0.0, color="black", lw=0.8)
            _budget_ticks(ax, sub["n_labeled"])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_xlabel("labeled training images")
        else:
            ax.set_xlabel("labeled training images")
    axes[0][0].set_ylabel("mean test AUC, band: 95% CI")
    if rows == 2:
        axes[1][0].set_ylabel("paired AUC difference vs random")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def class_gains(results: pd.DataFrame) -> pd.DataFrame:
    """Per class: AUC of each non-baseline init minus the random-init AUC, same mode/budget/seed, averaged."""
    cols = class_columns(results)
    key = ["mode", "budget", "seed"]
    base = results[results["init"] == BASELINE_INIT].groupby(key)[cols].mean()
    rows = []
    for init, sub in results[results["init"] != BASELINE_INIT].groupby("init", sort=False):
        mine = sub.groupby(key)[cols].mean()
        diff = mine - base.reindex(mine.index)
        for c in cols:
            v = diff[c].to_numpy()
            rows.append({"init": init, "label": c[len("auc_"):],
                         "gain": float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")})
    return pd.DataFrame(rows, columns=["init", "label", "gain"])


def plot_class_gains(results: pd.DataFrame, prevalence: dict[str, float], path: str | Path) -> Path:
    """Bars: per-class AUC gain over random init (mean over modes, budgets, seeds); beside them, class prevalence."""
    plt = _figure()
    gains = class_gains(results)
    labels = [c[len("auc_"):] for c in class_columns(results)]
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(11, 0.5 * len(labels) + 2.5), sharey=True,
                                  gridspec_kw={"width_ratios": [3, 1]})
    y = np.arange(len(labels))
    inits = list(dict.fromkeys(gains["init"])) if len(gains) else []
    height = 0.8 / max(len(inits), 1)
    for i, init in enumerate(inits):
        g = gains[gains["init"] == init].set_index("label").reindex(labels)["gain"]
        ax.barh(y + i * height - 0.4 + height / 2, g.to_numpy(), height=height, label=init)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"AUC gain over {BASELINE_INIT} init")
    if inits:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no pretrained init in this study", transform=ax.transAxes, ha="center")
    axp.barh(y, [prevalence.get(lbl, np.nan) for lbl in labels], color="grey")
    axp.set_xlabel("prevalence (test)")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _signed(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.3f}"


def _p(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _budget_columns(table: pd.DataFrame) -> pd.DataFrame:
    return table[["budget", "n_labeled"]].drop_duplicates("budget").sort_values("n_labeled")


def _grid_table(table: pd.DataFrame, cell, row_keys=("init", "mode")) -> str:
    budgets = _budget_columns(table)
    header = "| " + " | ".join(row_keys) + " | " + " | ".join(
        f"{b} ({n})" if str(b) != str(n) else str(b) for b, n in zip(budgets["budget"], budgets["n_labeled"])) + " |"
    lines = [header, "|" + "---|" * (len(row_keys) + len(budgets))]
    order = table.assign(_m=table["mode"].map(lambda m: MODE_ORDER.get(m, 9))).sort_values("_m", kind="stable")
    for keys, rows in order.groupby(list(row_keys), sort=False):
        cells = []
        for b in budgets["budget"]:
            r = rows[rows["budget"] == b]
            cells.append("" if r.empty else cell(r.iloc[0]))
        lines.append("| " + " | ".join(map(str, keys)) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(summary: pd.DataFrame) -> str:
    """Markdown: rows init x mode, columns budgets, cells 'mean AUC [95% CI]' (mean over label subsets)."""
    return _grid_table(summary, lambda r: f"{_fmt(r.mean_auc)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]")


def paired_table(paired: pd.DataFrame) -> str:
    """Markdown: rows init x mode, columns budgets, cells 'difference vs random [95% CI], p'."""
    if paired.empty:
        return "(no pretrained init in this study)"
    return _grid_table(paired, lambda r: f"{_signed(r['diff'])} [{_signed(r.ci_low)}, {_signed(r.ci_high)}], "
                                         f"p {_p(r.p_value)}")


def labels_table(summary: pd.DataFrame) -> str:
    """Markdown: per budget, labeled training images + labelled val images = labels a site must provide."""
    if "n_val_labeled" not in summary.columns:
        return ""
    s = summary.sort_values("n_labeled").drop_duplicates("budget")
    lines = ["| budget | training labels | validation labels | total labels |", "|---|---|---|---|"]
    for _, r in s.iterrows():
        lines.append(f"| {r['budget']} | {int(r['n_labeled'])} | {int(r['n_val_labeled'])} | "
                     f"{int(r['n_labels_total'])} |")
    return "\n".join(lines)


def per_class_table(results: pd.DataFrame) -> str:
    cols = class_columns(results)
    s = results.groupby(["init", "mode", "budget"], sort=False)[cols + ["n_labeled"]].mean().reset_index()
    s = s.assign(_m=s["mode"].map(lambda m: MODE_ORDER.get(m, 9))).sort_values(["_m", "init", "n_labeled"])
    lines = ["| init | mode | budget | " + " | ".join(c[len("auc_"):] for c in cols) + " |",
             "|" + "---|" * (3 + len(cols))]
    for _, r in s.iterrows():
        lines.append(f"| {r['init']} | {r['mode']} | {r['budget']} | " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("medssl", "torch", "monai", "lightning", "pydicom", "nibabel", "numpy", "pandas", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def statistics_text(summary: pd.DataFrame, ci: float = 0.95) -> str:
    reps = sorted(set(int(r) for r in summary["replicates"])) if len(summary) else []
    text = (f"Every number is a test-split ROC-AUC (mean over the evaluation tasks); hyperparameters and epochs "
            f"were selected on the labelled validation subset only. Intervals are {round(ci * 100)}% CIs of the "
            "mean over label subsets: patient-bootstrap variance of that mean plus the variance between label "
            "subsets (and pretraining runs) divided by their number. Differences vs random init are paired: the "
            "same test patients in every resample and the same label subset per seed; p is two-sided.")
    if reps == [1]:
        text += (" **This study has one label subset per budget, so subset variance is not measured: the CIs "
                 "cover test sampling only.** Add seeds (`study.seeds`) for a CI of the label-efficiency claim.")
    return text


def write_report(out_dir: str | Path, results: pd.DataFrame, *, summary: pd.DataFrame, paired: pd.DataFrame,
                 prevalence: dict[str, float], config_text: str, data_notes: str = "",
                 warnings: Sequence[str] = (), search_text: str = "", ci: float = 0.95,
                 title: str = "medssl label-efficiency study", analysis: dict[str, Path] | None = None) -> Path:
    """Write label_efficiency.png, class_gains.png, report.md and report.html (the same report as one
    self-contained page, `medssl.study.report_html`) into out_dir; return the report.md path.
    analysis: init name -> its feature-analysis index.md (`medssl.analyze.study`), linked in a
    "Feature analysis" section."""
    out_dir = Path(out_dir)
    plot_label_efficiency(summary, paired, out_dir / "label_efficiency.png")
    plot_class_gains(results, prevalence, out_dir / "class_gains.png")
    versions = software_versions()
    budgets = list(dict.fromkeys(results.sort_values("n_labeled")["budget"]))
    md = [
        f"# {title}",
        "",
        f"{len(results)} cells: inits {sorted(results['init'].unique())}, modes "
        f"{_modes(results)}, budgets {budgets}, label-subset seeds {sorted(results['seed'].unique().tolist())}.",
        "",
    ]
    if warnings:
        md += ["## Warnings", ""] + [f"- **{w}**" for w in warnings] + [""]
    md += [
        statistics_text(summary, ci),
        "",
        "## Mean test AUC by init and number of labeled images",
        "",
        headline_table(summary),
        "",
        "## Pretrained init minus random init (paired)",
        "",
        paired_table(paired),
        "",
        "![label efficiency](label_efficiency.png)",
        "",
    ]
    labels = labels_table(summary)
    if labels:
        md += ["## Labels used", "", "Each cell selects on a labelled validation subset; a site must provide both:",
               "", labels, ""]
    if search_text:
        md += ["## Hyperparameter selection (the same for every init)", "", search_text.strip(), ""]
    md += ["## Per-class AUC", "", per_class_table(results), "", "![per-class gain](class_gains.png)", ""]
    if data_notes:
        md += ["## What this data can and cannot show", "", data_notes.strip(), ""]
    if analysis:
        from medssl.analyze.study import report_section

        md += report_section(out_dir, analysis)
    md += ["## Configuration", "", "```yaml", config_text.strip(), "```", "",
           "## Software", "", "| package | version |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in versions.items()]
    path = out_dir / "report.md"
    atomic.write_text(path, "\n".join(md) + "\n")
    from medssl.study.report_html import write_html_report

    # the same sections from the same tables, as one self-contained page (figures embedded)
    write_html_report(out_dir, results, summary=summary, paired=paired, config_text=config_text, versions=versions,
                      data_notes=data_notes, warnings=warnings, search_text=search_text, ci=ci, title=title,
                      analysis=analysis)
    return path
