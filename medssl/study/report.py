"""The label-efficiency report: tidy table -> two figures -> one Markdown page.

Input is the study's `results.csv`: one row per cell with columns `init, mode, budget, seed,
n_labeled, mean_auc, mean_auc_ci_low, mean_auc_ci_high` and `auc_<label>` per class.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pandas as pd

from medssl import atomic

BASELINE_INIT = "random"


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (init, mode, budget): mean AUC, its across-seed std, and the mean CI bounds."""
    g = results.groupby(["init", "mode", "budget"], sort=False)
    out = g.agg(
        n_labeled=("n_labeled", "median"),
        seeds=("seed", "nunique"),
        mean_auc=("mean_auc", "mean"),
        seed_std=("mean_auc", "std"),
        ci_low=("mean_auc_ci_low", "mean"),
        ci_high=("mean_auc_ci_high", "mean"),
    ).reset_index()
    out["n_labeled"] = out["n_labeled"].astype(int)
    return out.sort_values(["mode", "init", "n_labeled"]).reset_index(drop=True)


def class_columns(results: pd.DataFrame) -> list[str]:
    return [c for c in results.columns if c.startswith("auc_")]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_label_efficiency(results: pd.DataFrame, path: str | Path) -> Path:
    """Mean AUC vs number of labeled images (log x), one line per init x mode, band = mean 95% CI."""
    plt = _figure()
    summary = summarise(results)
    modes = list(dict.fromkeys(summary["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        sub = summary[summary["mode"] == mode]
        for init, rows in sub.groupby("init", sort=False):
            rows = rows.sort_values("n_labeled")
            line, = ax.plot(rows["n_labeled"], rows["mean_auc"], marker="o", label=init)
            ax.fill_between(rows["n_labeled"], rows["ci_low"], rows["ci_high"], alpha=0.2, color=line.get_color())
        ax.set_xscale("log")
        ticks = sorted(sub["n_labeled"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])   # the budgets themselves, not 2x10^2-style labels
        ax.minorticks_off()
        ax.set_xlabel("labeled training images")
        ax.set_title("linear probe (frozen encoder)" if mode == "linear" else f"{mode} fine-tuning")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("mean AUC (test), band: 95% CI")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


def class_gains(results: pd.DataFrame) -> pd.DataFrame:
    """Per class: AUC of each non-baseline init minus the random-init AUC, same mode/budget/seed, averaged."""
    cols = class_columns(results)
    key = ["mode", "budget", "seed"]
    base = results[results["init"] == BASELINE_INIT].set_index(key)[cols]
    rows = []
    for init, sub in results[results["init"] != BASELINE_INIT].groupby("init", sort=False):
        diff = sub.set_index(key)[cols] - base.reindex(sub.set_index(key).index)
        for c in cols:
            rows.append({"init": init, "label": c[len("auc_"):], "gain": float(np.nanmean(diff[c].to_numpy()))
                         if np.isfinite(diff[c].to_numpy()).any() else float("nan")})
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


def headline_table(results: pd.DataFrame) -> str:
    """Markdown: rows init x mode, columns budgets, cells 'mean AUC [CI low, CI high]' averaged over seeds."""
    s = summarise(results)
    budgets = (s[["budget", "n_labeled"]].drop_duplicates("budget").sort_values("n_labeled"))
    header = "| init | mode | " + " | ".join(f"{b} ({n})" for b, n in zip(budgets["budget"], budgets["n_labeled"])) + " |"
    lines = [header, "|" + "---|" * (2 + len(budgets))]
    for (init, mode), rows in s.groupby(["init", "mode"], sort=False):
        cells = []
        for b in budgets["budget"]:
            r = rows[rows["budget"] == b]
            if r.empty:
                cells.append("")
            else:
                r = r.iloc[0]
                cells.append(f"{_fmt(r.mean_auc)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]")
        lines.append(f"| {init} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(results: pd.DataFrame) -> str:
    cols = class_columns(results)
    s = results.groupby(["init", "mode", "budget"], sort=False)[cols + ["n_labeled"]].mean().reset_index()
    s = s.sort_values(["mode", "init", "n_labeled"])
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


def write_report(out_dir: str | Path, results: pd.DataFrame, *, prevalence: dict[str, float],
                 config_text: str, data_notes: str = "", title: str = "medssl label-efficiency study") -> Path:
    """Write label_efficiency.png, class_gains.png and report.md into out_dir; return the report path."""
    out_dir = Path(out_dir)
    plot_label_efficiency(results, out_dir / "label_efficiency.png")
    plot_class_gains(results, prevalence, out_dir / "class_gains.png")
    versions = software_versions()
    n_cells = len(results)
    md = [
        f"# {title}",
        "",
        f"{n_cells} cells: inits {sorted(results['init'].unique())}, modes {sorted(results['mode'].unique())}, "
        f"budgets {list(dict.fromkeys(results.sort_values('n_labeled')['budget']))}, "
        f"seeds {sorted(results['seed'].unique().tolist())}.",
        "Every number is a test-split ROC-AUC; checkpoints were selected on the validation split only. "
        "CIs are 95% bootstrap intervals resampled by patient, averaged over seeds.",
        "",
        "## Mean AUC by init and number of labeled images",
        "",
        headline_table(results),
        "",
        "![label efficiency](label_efficiency.png)",
        "",
        "## Per-class AUC",
        "",
        per_class_table(results),
        "",
        "![per-class gain](class_gains.png)",
        "",
    ]
    if data_notes:
        md += ["## What this data can and cannot show", "", data_notes.strip(), ""]
    md += ["## Configuration", "", "```yaml", config_text.strip(), "```", "",
           "## Software", "", "| package | version |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in versions.items()]
    path = out_dir / "report.md"
    atomic.write_text(path, "\n".join(md) + "\n")
    return path
