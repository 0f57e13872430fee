"""The resumable study grid: inits x modes x budgets x seeds, one fine-tuning cell each.

Each finished cell writes `cells/<key>.json` atomically; a rerun after a crash skips every cell
whose JSON exists, so no finished cell is recomputed. `results.csv` is rebuilt from the cell files.

File paths in both (`init_path`, `checkpoint`, `predictions`, `metrics`) are portable: relative to the
study folder when inside it, else relative to the working directory when inside that, else absolute;
`resolve_result_path` reads them back. So a results table neither leaks the user's directory layout
nor breaks when the study folder is moved.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from medssl import atomic
from medssl.evaluate import json_safe
from medssl.splits import budget_label
from medssl.study.report import write_report

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["init", "mode", "budget", "seed", "n_labeled", "mean_auc", "mean_auc_ci_low", "mean_auc_ci_high"]
#: Result columns that hold a file path (written portable, see the module doc).
PATH_COLUMNS = ("init_path", "checkpoint", "predictions", "metrics")
RANDOM_INIT = "random"


def portable_path(path: str | os.PathLike, out_dir: str | Path, *, use_cwd: bool = True) -> str:
    """`path` relative to out_dir when inside it, else (use_cwd) to the working directory when inside
    that, else absolute; "random" (no pretrained init) stays as is. Forward slashes on every platform."""
    if str(path) == RANDOM_INIT:
        return RANDOM_INIT
    full = Path(os.path.abspath(path))  # abspath, not resolve(): keep the user's (symlinked) names
    bases = [Path(os.path.abspath(out_dir))] + ([Path.cwd()] if use_cwd else [])
    for base in bases:
        if full.is_relative_to(base):
            return full.relative_to(base).as_posix()
    return full.as_posix()


def resolve_result_path(value: str, out_dir: str | Path) -> str:
    """A path from results.csv / cells/<key>.json as an openable path ("random" stays as is).

    Relative paths are tried inside the study folder first, then against the working directory.
    """
    if value == RANDOM_INIT or Path(value).is_absolute():
        return value
    inside = Path(out_dir) / value
    return str(inside) if inside.exists() else value


def portable_row(row: dict, out_dir: str | Path, *, read_back: bool = False) -> dict:
    """The row with its PATH_COLUMNS values made portable; relative ones are read against the working
    directory. read_back (a row from a cell file): only absolute paths inside out_dir, as written by
    older versions, are rewritten; the rest was made portable when the file was written."""
    def convert(value):
        if read_back:
            return portable_path(value, out_dir, use_cwd=False) if os.path.isabs(value) else value
        return portable_path(value, out_dir)

    return {k: convert(v) if k in PATH_COLUMNS and isinstance(v, str) else v for k, v in row.items()}


@dataclass(frozen=True)
class Cell:
    init: str            # name in the study config ("random", "mocov2", ...)
    init_path: str       # "random" or a checkpoint / state-dict path
    mode: str            # "linear" | "knn" | "full"
    budget: int | float  # labeled images (int) or fraction of the training images (float)
    seed: int
    pretrain_seed: int | None = None   # index of the init's pretraining run when it has several

    @property
    def key(self) -> str:
        key = f"{self.init}__{self.mode}__{budget_label(self.budget)}__seed{self.seed}".replace("%", "pct")
        return key if self.pretrain_seed is None else f"{key}__pre{self.pretrain_seed}"


def pretrain_spec(value) -> dict | None:
    """The pretraining spec of a `study.inits` value, or None for a path / list of paths.

    A spec is a mapping {"pretrain": {dotted.key: value, ...}, "seeds": [0, 1]} (both optional): the
    study pretrains the init itself from the study config plus these overrides, once per pretraining
    seed (default study.pretrain_seeds), into study.output_dir/pretrain/<name>[-seed<s>].
    """
    if not isinstance(value, dict):
        return None
    unknown = set(value) - {"pretrain", "seeds"}
    if unknown:
        from medssl.errors import ConfigError

        raise ConfigError(f"study.inits: a pretraining spec has keys 'pretrain' (config overrides) and 'seeds'; "
                          f"unknown: {sorted(unknown)}")
    return value


def pretrain_inits(cfg, *, log_to=print) -> dict:
    """`study.inits` with every pretraining spec replaced by its encoder path(s), pretraining what is
    missing (resumable: a finished run is reused, an interrupted one continues from last.ckpt)."""
    from medssl.config import with_overrides
    from medssl.ssl.train import AUTO, run_pretrain

    resolved = {}
    for name, value in cfg.study.inits.items():
        spec = pretrain_spec(value)
        if spec is None:
            resolved[name] = value
            continue
        seeds = [int(x) for x in spec.get("seeds", cfg.study.pretrain_seeds)]
        paths = []
        for i, seed in enumerate(seeds):
            folder = Path(cfg.study.output_dir) / "pretrain" / (name if i == 0 else f"{name}-seed{seed}")
            encoder = folder / "encoder.pt"
            if not encoder.is_file():
                # strings as given (YAML scalars), anything else as JSON, which is YAML too
                overrides = [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                             for k, v in (spec.get("pretrain") or {}).items()]
                run_cfg = with_overrides(cfg, overrides + [f"trainer.seed={seed}", f"trainer.output_dir={folder}"])
                log_to(f"medssl study: pretraining {name} (seed {seed}: {run_cfg.ssl.method}, {run_cfg.ssl.pairs} "
                       f"pairs) into {folder}")
                from medssl.manifest import load
                from medssl.ssl.data import ensure_cache

                ensure_cache(run_cfg, load(run_cfg.data.manifest, data_root=run_cfg.data.data_root))
                encoder = run_pretrain(run_cfg, resume=AUTO).encoder
            paths.append(str(encoder))
        resolved[name] = paths if len(paths) > 1 else paths[0]
    return resolved


def init_runs(path) -> list[tuple[str, int | None]]:
    """(path, pretraining run index) of one `study.inits` value: a path, or a list of paths (one per
    pretraining seed, so init variance is measured); a single path has index None."""
    if isinstance(path, (list, tuple)):
        if not path:
            from medssl.errors import ConfigError

            raise ConfigError("study.inits: an init given as a list needs at least one path")
        return [(str(p), i) for i, p in enumerate(path)] if len(path) > 1 else [(str(path[0]), None)]
    return [(str(path), None)]


def grid(inits: dict, modes: list[str], budgets: list, seeds: list[int]) -> Iterator[Cell]:
    """Cells in run order: cheap ones first (probes before full fine-tuning, small budgets first)."""
    order = {"linear": 0, "knn": 1, "full": 2}
    for mode in sorted(modes, key=lambda m: order.get(m, 3)):
        for budget in budgets:
            for seed in seeds:
                for name, path in inits.items():
                    for run_path, pretrain_seed in init_runs(path):
                        yield Cell(name, run_path, mode, budget, seed, pretrain_seed)


CellFn = Callable[[Cell, Path], dict]


def run_grid(cells: list[Cell], out_dir: str | Path, cell_fn: CellFn) -> pd.DataFrame:
    """Run every cell that has no result file yet; return the tidy results table (also written to results.csv).

    `cell_fn(cell, cell_dir)` trains and evaluates one cell and returns a flat dict with at least
    n_labeled, mean_auc, mean_auc_ci_low, mean_auc_ci_high and auc_<label> per class.
    """
    out_dir = Path(out_dir)
    cell_dir = out_dir / "cells"
    done, ran = 0, 0
    for i, cell in enumerate(cells, 1):
        result_path = cell_dir / f"{cell.key}.json"
        if result_path.is_file():
            done += 1
            continue
        t0 = time.perf_counter()
        log.info("cell %d/%d: %s", i, len(cells), cell.key)
        metrics = cell_fn(cell, cell_dir / cell.key)
        row = {"init": cell.init, "init_path": cell.init_path, "mode": cell.mode,
               "budget": budget_label(cell.budget), "seed": cell.seed, "key": cell.key,
               **({} if cell.pretrain_seed is None else {"pretrain_seed": cell.pretrain_seed}),
               **metrics, "seconds": round(time.perf_counter() - t0, 2)}
        atomic.write_json(result_path, json_safe(portable_row(row, out_dir)))
        ran += 1
    log.info("study: %d cells run, %d already finished", ran, done)
    results = collect(out_dir, cells)
    atomic.write_table(out_dir / "results.csv", results)
    return results


def collect(out_dir: str | Path, cells: list[Cell]) -> pd.DataFrame:
    """The results table from the cell files of `cells` (missing cells are left out).

    Paths are made portable here too, so cell files written by older versions (absolute paths) give
    the same table.
    """
    rows = []
    for cell in cells:
        p = Path(out_dir) / "cells" / f"{cell.key}.json"
        if p.is_file():
            row = portable_row(json.loads(p.read_text()), out_dir, read_back=True)
            row.setdefault("key", cell.key)   # cell files of older versions
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    auc_cols = sorted(c for c in df.columns if c.startswith("auc_"))
    rest = [c for c in df.columns if c not in RESULT_COLUMNS and c not in auc_cols]
    return df[[c for c in RESULT_COLUMNS if c in df.columns] + auc_cols + rest]


# ----------------------------------------------------------------------------- the study from a config
DEFAULT_DATA_NOTES = ""


def budgets_path_of(cfg) -> Path:
    """data.budgets, or the table `medssl split` writes beside the manifest (`<stem>.budgets.csv`)."""
    from medssl.commands.split import budgets_path

    return Path(cfg.data.budgets) if cfg.data.budgets else budgets_path(cfg.data.manifest)


def ensure_budgets(cfg, manifest_df: pd.DataFrame) -> pd.DataFrame:
    """The budgets table covering every (budget, seed) of the study; missing ones are drawn and saved.

    Drawing is deterministic per seed and nested, so adding a budget later never changes the rows of
    existing ones for the same seed.
    """
    from medssl.splits import budget_rows, label_subsets, load_budgets

    path = budgets_path_of(cfg)
    table = load_budgets(path) if path.is_file() else None
    wanted = [(b, s) for b in cfg.study.budgets for s in cfg.study.seeds]
    if table is not None:
        missing = []
        for b, s in wanted:
            try:
                if budget_rows(table, b, s).empty:
                    missing.append((b, s))
            except Exception:  # a table without that budget/seed raises in budget_rows
                missing.append((b, s))
        if not missing:
            return table
        if cfg.data.budgets:   # the user's own (e.g. imported, published) table: never overwrite it
            from medssl.errors import SplitError

            raise SplitError(f"data.budgets {path} has no rows for (budget, seed) {missing[:6]} of the study; "
                             "add them to that table (medssl import-budgets / medssl split --budgets) or change "
                             "study.budgets / study.seeds")
    table = label_subsets(manifest_df, cfg.study.budgets, cfg.study.seeds, labels=cfg.data.labels)
    atomic.write_table(path, table)
    log.info("study: labeled subsets written to %s", path)
    return table


def test_prevalence(manifest_df: pd.DataFrame, labels: list[str]) -> dict[str, float]:
    """Fraction positive among the test rows with a definite (0/1) label, per class."""
    test = manifest_df[manifest_df["split"] == "test"]
    out = {}
    for c in labels:
        v = test[c].to_numpy(dtype=float)
        v = v[(v == 0) | (v == 1)]
        out[c] = float(v.mean()) if v.size else float("nan")
    return out


def search_description(cfg) -> str:
    """What the report says about hyperparameter selection (the same trials for every init)."""
    ft = cfg.finetune
    lrs = ", ".join(f"{lr:g}" for lr in (ft.lr_grid or [ft.lr]))
    return "\n".join([
        f"- logistic probe (`linear`): L2 logistic regression per label on standardised frozen features, C chosen "
        f"on val from {{{', '.join(f'{c:g}' for c in ft.probe_Cs)}}}.",
        f"- kNN probe (`knn`): cosine similarity-weighted vote, k chosen on val from {{{', '.join(map(str, ft.knn_ks))}}}.",
        f"- full fine-tuning (`full`): AdamW, cosine schedule, {ft.epochs} epochs per trial, one trial per learning "
        f"rate in {{{lrs}}} ({len(ft.lr_grid or [ft.lr])} trials for every init); encoder lr multiplier 1.0 for the "
        f"random init, {ft.encoder_lr_mult:g} for pretrained inits; the (trial, epoch) with the best val mean AUC is kept.",
        f"- labelled validation subset per cell: `study.val_labels = {cfg.study.val_labels}` "
        "(budget: whole val patients, no more images than the training budget, nested per seed).",
    ])


def add_statistics(cfg, results: pd.DataFrame, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Paired statistics of a finished grid: (results with per-cell diff columns, summary, paired);
    summary.csv and paired.csv are written beside results.csv, which is rewritten with the new columns."""
    from medssl.study.stats import study_statistics

    ev = cfg.evaluate
    summary, paired, per_cell = study_statistics(results, out_dir, tasks=ev.tasks or None, n_bootstrap=ev.bootstrap,
                                                 ci=ev.ci, seed=ev.seed)
    results = results.drop(columns=[c for c in per_cell.columns if c in results.columns and c != "row"])
    if len(per_cell):
        results = results.join(per_cell.set_index("row"))
    atomic.write_table(out_dir / "results.csv", results)
    atomic.write_table(out_dir / "summary.csv", summary)
    atomic.write_table(out_dir / "paired.csv", paired)
    return results, summary, paired


def study_warnings(cfg, summary: pd.DataFrame) -> list[str]:
    """Chance-level results and pretraining runs that did not learn (see medssl.study.checks)."""
    from medssl.study.checks import chance_warnings, pretraining_warnings, read_pretrain_summary

    out = chance_warnings(summary)
    for name, path in cfg.study.inits.items():
        for run_path, _ in init_runs(path):
            if run_path == RANDOM_INIT:
                continue
            s = read_pretrain_summary(run_path)
            if s is not None:
                out += pretraining_warnings(name, s, cfg.ssl.collapse_threshold)
    return out


def run_study(cfg, *, data_notes: str = DEFAULT_DATA_NOTES) -> tuple[pd.DataFrame, Path]:
    """Run the grid of `cfg.study` on `cfg.data.manifest` (resumable) and write the report.

    Returns the results table and the report path. Cells already finished under
    `study.output_dir/cells/` are not rerun.
    """
    from medssl.config import dump_config
    from medssl.finetune import data as fd
    from medssl.finetune.run import augment_from_config, finetune_cell
    from medssl.manifest import load
    from medssl.ssl.data import cache_dir_of, ensure_cache

    out_dir = Path(cfg.study.output_dir)
    df = load(cfg.data.manifest, data_root=cfg.data.data_root).reset_index(drop=True)
    if "split" not in df.columns:
        from medssl.errors import ManifestError

        raise ManifestError(f"{cfg.data.manifest}: no split column; run `medssl split` first")
    budgets_df = ensure_budgets(cfg, df)
    ensure_cache(cfg, df)
    from medssl.cache import open_cache

    images = open_cache(cache_dir_of(cfg), df, size=cfg.cache.size, dtype=cfg.cache.dtype, window=cfg.cache.window)
    augment = augment_from_config(cfg) if "full" in cfg.study.modes else None
    feature_dir = out_dir / "features"

    def cell_fn(cell: Cell, cell_dir: Path) -> dict:
        return finetune_cell(cfg, manifest_df=df, images=images, budgets_df=budgets_df, init=cell.init_path,
                             mode=cell.mode, budget=cell.budget, seed=cell.seed, out_dir=cell_dir,
                             feature_dir=feature_dir, augment=augment if cell.mode == "full" else None)

    import dataclasses

    cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, inits=pretrain_inits(cfg)))
    for name, path in cfg.study.inits.items():
        for run_path, _ in init_runs(path):
            if run_path != RANDOM_INIT and not Path(run_path).exists():
                from medssl.errors import CheckpointError

                raise CheckpointError(f"study.inits.{name}: {run_path} does not exist (pretrain first, or remove it)")
    cells = list(grid(cfg.study.inits, cfg.study.modes, cfg.study.budgets, cfg.study.seeds))
    atomic.write_text(out_dir / "config.yaml", dump_config(cfg))   # what the cells ran with (model cards hash it)
    results = run_grid(cells, out_dir, cell_fn)
    results, summary, paired = add_statistics(cfg, results, out_dir)
    warnings = study_warnings(cfg, summary)
    for w in warnings:
        log.warning("%s", w)
    labels = fd.label_names(df, cfg.data.labels)
    report = write_report(out_dir, results, summary=summary, paired=paired, prevalence=test_prevalence(df, labels),
                          config_text=dump_config(cfg), data_notes=data_notes, warnings=warnings,
                          search_text=search_description(cfg), ci=cfg.evaluate.ci)
    return results, report
