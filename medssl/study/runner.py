"""The resumable study grid: inits x modes x budgets x seeds, one fine-tuning cell each.

Each finished cell writes `cells/<key>.json` atomically; a rerun after a crash skips every cell
whose JSON exists, so no finished cell is recomputed. `results.csv` is rebuilt from the cell files.
A cell being run is locked (`cells/<key>.lock`, `medssl.study.locks`), so processes sharing the
folder (the shards of `medssl study --shard i/n`, `medssl.study.shards`, or a duplicate launch)
never train the same cell twice.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from medssl import atomic
from medssl.evaluate import json_safe
from medssl.study import locks
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


def spec_runs(cfg) -> Iterator[tuple[str, dict | None, list[tuple[int, Path]]]]:
    """(name, spec, [(pretraining seed, run folder)]) per `study.inits` entry; spec None (and no
    runs) for a path. Run folders: study.output_dir/pretrain/<name> for the first seed, else
    <name>-seed<s>; the encoder is `<folder>/encoder.pt`."""
    for name, value in cfg.study.inits.items():
        spec = pretrain_spec(value)
        if spec is None:
            yield name, None, []
            continue
        seeds = [int(x) for x in spec.get("seeds", cfg.study.pretrain_seeds)]
        yield name, spec, [(seed, Path(cfg.study.output_dir) / "pretrain" / (name if i == 0 else f"{name}-seed{seed}"))
                           for i, seed in enumerate(seeds)]


def planned_inits(cfg) -> dict:
    """`study.inits` with every pretraining spec replaced by the encoder path(s) `pretrain_inits`
    gives it, without pretraining anything (the paths may not exist yet)."""
    resolved = {}
    for name, spec, runs in spec_runs(cfg):
        if spec is None:
            resolved[name] = cfg.study.inits[name]
            continue
        paths = [str(folder / "encoder.pt") for _, folder in runs]
        resolved[name] = paths if len(paths) > 1 else paths[0]
    return resolved


def pretrain_inits(cfg, *, log_to=print) -> dict:
    """`study.inits` with every pretraining spec replaced by its encoder path(s), pretraining what is
    missing (resumable: a finished run is reused, an interrupted one continues from last.ckpt)."""
    from medssl.config import with_overrides
    from medssl.ssl.train import AUTO, run_pretrain

    resolved = {}
    for name, spec, runs in spec_runs(cfg):
        if spec is None:
            resolved[name] = cfg.study.inits[name]
            continue
        paths = []
        for seed, folder in runs:
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


@dataclass
class CellRun:
    """What `run_cells` did: keys it ran and found finished, and the locks it could not take
    (`LockResult.describe()` dicts): held by a live (or recent) process, probably stale (another
    host, older than the timeout: reported, never broken), or taken over from a dead process."""
    ran: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    held: list[dict] = field(default_factory=list)
    stale: list[dict] = field(default_factory=list)
    taken_over: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ran": self.ran, "already_done": self.done, "held": self.held, "stale_locks": self.stale,
                "taken_over": self.taken_over}


def run_cells(cells: list[Cell], out_dir: str | Path, cell_fn: CellFn, *,
              lock_timeout_s: float = locks.DEFAULT_TIMEOUT_S, shard: str | None = None) -> CellRun:
    """Run every cell of `cells` that has no result file and whose lock this process gets.

    `cell_fn(cell, cell_dir)` trains and evaluates one cell and returns a flat dict with at least
    n_labeled, mean_auc, mean_auc_ci_low, mean_auc_ci_high and auc_<label> per class; the row is
    written atomically to cells/<key>.json. A cell locked by another process is skipped and listed.
    """
    out_dir = Path(out_dir)
    cell_dir = out_dir / "cells"
    run = CellRun()
    for i, cell in enumerate(cells, 1):
        result_path = cell_dir / f"{cell.key}.json"
        if result_path.is_file():
            run.done.append(cell.key)
            continue
        lock = locks.acquire(cell_dir / f"{cell.key}.lock", timeout_s=lock_timeout_s, shard=shard)
        if not lock.acquired:
            info = lock.describe()
            if lock.stale:
                log.warning("cell %s: locked by host %s pid %s since %s (%.1f h, longer than the lock timeout); "
                            "skipped. If that process is gone, delete %s and rerun", cell.key, info["host"],
                            info["pid"], info["since"], info["age_h"] or 0.0, lock.path)
                run.stale.append(info)
            else:
                log.info("cell %s: being run by host %s pid %s (lock %s); skipped", cell.key, info["host"],
                         info["pid"], lock.path)
                run.held.append(info)
            continue
        try:
            if result_path.is_file():   # finished by its previous holder between our check and the lock
                run.done.append(cell.key)
                continue
            if lock.took_over:
                run.taken_over.append({"key": cell.key, "host": lock.took_over.get("host"),
                                       "pid": lock.took_over.get("pid")})
            t0 = time.perf_counter()
            log.info("cell %d/%d: %s", i, len(cells), cell.key)
            metrics = cell_fn(cell, cell_dir / cell.key)
            row = {"init": cell.init, "init_path": cell.init_path, "mode": cell.mode,
                   "budget": budget_label(cell.budget), "seed": cell.seed, "key": cell.key,
                   **({} if cell.pretrain_seed is None else {"pretrain_seed": cell.pretrain_seed}),
                   **metrics, "seconds": round(time.perf_counter() - t0, 2)}
            atomic.write_json(result_path, json_safe(portable_row(row, out_dir)))
            run.ran.append(cell.key)
        finally:
            lock.release()   # also on failure: the cell is not finished, the next run retries it
    log.info("study: %d cells run, %d already finished, %d held by other processes", len(run.ran), len(run.done),
             len(run.held) + len(run.stale))
    return run


def run_grid(cells: list[Cell], out_dir: str | Path, cell_fn: CellFn, *,
             lock_timeout_s: float = locks.DEFAULT_TIMEOUT_S) -> pd.DataFrame:
    """Run every cell that has no result file yet (`run_cells`); return the tidy results table of the
    finished cells (also written to results.csv). Cells locked by other processes are left out."""
    out_dir = Path(out_dir)
    run_cells(cells, out_dir, cell_fn, lock_timeout_s=lock_timeout_s)
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


def missing_budgets(cfg, table: pd.DataFrame) -> list:
    """(budget, seed) pairs of the study that the budgets table has no rows for."""
    from medssl.splits import budget_rows

    missing = []
    for b in cfg.study.budgets:
        for s in cfg.study.seeds:
            try:
                if budget_rows(table, b, s).empty:
                    missing.append((b, s))
            except Exception:  # a table without that budget/seed raises in budget_rows
                missing.append((b, s))
    return missing


def ensure_budgets(cfg, manifest_df: pd.DataFrame) -> pd.DataFrame:
    """The budgets table covering every (budget, seed) of the study; missing ones are drawn and saved.

    Drawing is deterministic per seed and nested, so adding a budget later never changes the rows of
    existing ones for the same seed.
    """
    from medssl.splits import label_subsets, load_budgets

    path = budgets_path_of(cfg)
    table = load_budgets(path) if path.is_file() else None
    if table is not None:
        missing = missing_budgets(cfg, table)
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
        f"- full fine-tuning (`full`): AdamW, cosine schedule, {ft.epochs} epochs per trial"
        + (f" (more at small budgets: at least {ft.min_steps} optimizer steps)" if ft.min_steps else "")
        + ", one trial per learning "
        f"rate in {{{lrs}}} ({len(ft.lr_grid or [ft.lr])} trials for every init); encoder lr multiplier 1 for the "
        f"random init, {ft.encoder_lr_mult:g} for pretrained inits; "
        + ("every trial starts its head from the init's fitted logistic probe (LP-FT; BatchNorm statistics kept "
           "frozen), so the untouched start, epoch -1, is exactly the `linear` cell; " if ft.head_init == "probe" else "")
        + "the (trial, epoch) with the best val mean AUC is kept.",
        f"- labelled validation subset per cell: `study.val_labels = {cfg.study.val_labels}` "
        "(budget: whole val patients, no more images than the training budget, nested per seed).",
    ])


def full_start_note(results: pd.DataFrame) -> str:
    """How often full fine-tuning kept its probe start (selected epoch -1), per init: said in the report,
    because then "full" measured the probe, not end-to-end training."""
    full = results[results["mode"] == "full"] if "mode" in results.columns else results.iloc[0:0]
    if full.empty or "best_epoch" not in full.columns:
        return ""
    parts = [f"{init} {int((g['best_epoch'] == -1).sum())}/{len(g)}" for init, g in full.groupby("init", sort=False)]
    return ("- full fine-tuning cells whose best val score was the untouched probe start (epoch -1), per init: "
            + ", ".join(parts) + ".")


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


def _study_manifest(cfg) -> pd.DataFrame:
    from medssl.manifest import load

    df = load(cfg.data.manifest, data_root=cfg.data.data_root).reset_index(drop=True)
    if "split" not in df.columns:
        from medssl.errors import ManifestError

        raise ManifestError(f"{cfg.data.manifest}: no split column; run `medssl split` first")
    return df


def _with_inits(cfg, inits: dict, *, check: bool = True):
    """cfg with study.inits replaced (encoder paths instead of pretraining specs), checked to exist
    unless not `check` (collecting reads cell files only: the encoders may be gone)."""
    import dataclasses

    cfg = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, inits=inits))
    for name, path in cfg.study.inits.items() if check else ():
        for run_path, _ in init_runs(path):
            if run_path != RANDOM_INIT and not Path(run_path).exists():
                from medssl.errors import CheckpointError

                raise CheckpointError(f"study.inits.{name}: {run_path} does not exist (pretrain first, or remove it)")
    return cfg


def study_cells(cfg) -> list[Cell]:
    """The grid of a config whose inits are resolved (no pretraining specs left), in run order."""
    return list(grid(cfg.study.inits, cfg.study.modes, cfg.study.budgets, cfg.study.seeds))


def _cell_fn(cfg, df: pd.DataFrame, budgets_df: pd.DataFrame) -> CellFn:
    from medssl.cache import open_cache
    from medssl.finetune.run import augment_from_config, finetune_cell
    from medssl.ssl.data import cache_dir_of

    images = open_cache(cache_dir_of(cfg), df, size=cfg.cache.size, dtype=cfg.cache.dtype, window=cfg.cache.window)
    augment = augment_from_config(cfg) if "full" in cfg.study.modes else None
    feature_dir = Path(cfg.study.output_dir) / "features"   # shared by all shards: see medssl.study.shards

    def cell_fn(cell: Cell, cell_dir: Path) -> dict:
        return finetune_cell(cfg, manifest_df=df, images=images, budgets_df=budgets_df, init=cell.init_path,
                             mode=cell.mode, budget=cell.budget, seed=cell.seed, out_dir=cell_dir,
                             feature_dir=feature_dir, augment=augment if cell.mode == "full" else None)
    return cell_fn


def _write_config(cfg) -> None:
    from medssl.config import dump_config

    # what the cells ran with (model cards hash it); every shard writes the same text, atomically
    atomic.write_text(Path(cfg.study.output_dir) / "config.yaml", dump_config(cfg))


def _finish(cfg, df: pd.DataFrame, results: pd.DataFrame, *, data_notes: str = "",
            extra_warnings: list[str] = ()) -> tuple[pd.DataFrame, Path]:
    """Statistics (results.csv, summary.csv, paired.csv) and the report of the finished cells."""
    from medssl.config import dump_config
    from medssl.finetune import data as fd

    out_dir = Path(cfg.study.output_dir)
    atomic.write_table(out_dir / "results.csv", results)
    results, summary, paired = add_statistics(cfg, results, out_dir)
    warnings = list(extra_warnings) + study_warnings(cfg, summary)
    for w in warnings:
        log.warning("%s", w)
    labels = fd.label_names(df, cfg.data.labels)
    analysis = None
    if cfg.study.analyze:   # feature analysis per init into <study>/analysis/<init>/ (medssl.analyze.study)
        from medssl.analyze.study import analyze_study

        analysis = analyze_study(cfg, df, None, results, out_dir, feature_dir=out_dir / "features")
    report = write_report(out_dir, results, summary=summary, paired=paired, prevalence=test_prevalence(df, labels),
                          config_text=dump_config(cfg), data_notes=data_notes, warnings=warnings,
                          search_text=search_description(cfg) + "\n" + full_start_note(results), ci=cfg.evaluate.ci, analysis=analysis)
    return results, report


def run_study(cfg, *, data_notes: str = DEFAULT_DATA_NOTES,
              lock_timeout_s: float = locks.DEFAULT_TIMEOUT_S) -> tuple[pd.DataFrame, Path]:
    """Run the grid of `cfg.study` on `cfg.data.manifest` (resumable) and write the report.

    Returns the results table and the report path. Cells already finished under
    `study.output_dir/cells/` are not rerun. Cells locked by another process (a shard sharing the
    folder) are skipped; the study then raises IncompleteStudyError naming them, after running the
    rest (`medssl study --collect` writes the report once they are finished).
    """
    from medssl.ssl.data import ensure_cache
    from medssl.study.shards import IncompleteStudyError, missing_message

    out_dir = Path(cfg.study.output_dir)
    df = _study_manifest(cfg)
    budgets_df = ensure_budgets(cfg, df)
    ensure_cache(cfg, df)
    cfg = _with_inits(cfg, pretrain_inits(cfg))
    cells = study_cells(cfg)
    cell_fn = _cell_fn(cfg, df, budgets_df)
    _write_config(cfg)
    results = run_grid(cells, out_dir, cell_fn, lock_timeout_s=lock_timeout_s)
    missing = [c for c in cells if not (out_dir / "cells" / f"{c.key}.json").is_file()]
    if missing:
        raise IncompleteStudyError(missing_message(out_dir, cells, missing) + "; they are locked by other processes "
                                   "(cells/<key>.lock); when those finish, run `medssl study --collect`")
    return _finish(cfg, df, results, data_notes=data_notes)


def prepare_study(cfg, *, log_to=print) -> dict:
    """The one-time inputs every shard reads, built by ONE process before the shards start: the
    budgets table, the decoded cache and the pretraining of spec inits (resumable); writes
    config.yaml. Returns study.inits with the specs resolved to encoder paths."""
    from medssl.ssl.data import ensure_cache

    df = _study_manifest(cfg)
    ensure_budgets(cfg, df)
    ensure_cache(cfg, df)
    cfg = _with_inits(cfg, pretrain_inits(cfg, log_to=log_to))
    _write_config(cfg)
    return cfg.study.inits


def _require_prepared(cfg, shard) -> pd.DataFrame:
    """The budgets table, after checking that `prepare_study` has run; StudyNotPreparedError naming
    everything missing otherwise (n shards must not build the cache or pretrain an init at once)."""
    from medssl.splits import load_budgets
    from medssl.ssl.data import cache_dir_of
    from medssl.study.shards import StudyNotPreparedError

    problems = []
    cache = cache_dir_of(cfg)
    if not (cache / "meta.json").is_file():
        problems.append(f"no decoded cache at {cache}")
    path = budgets_path_of(cfg)
    table = load_budgets(path) if path.is_file() else None
    if table is None:
        problems.append(f"no budgets table at {path}")
    elif missing := missing_budgets(cfg, table):
        problems.append(f"the budgets table {path} has no rows for (budget, seed) {missing[:6]}")
    for name, spec, runs in spec_runs(cfg):
        problems += [f"init {name} (pretraining seed {seed}) is not pretrained yet: no {folder / 'encoder.pt'}"
                     for seed, folder in runs if not (folder / "encoder.pt").is_file()]
    if problems:
        raise StudyNotPreparedError(
            f"study shard {shard}: " + "; ".join(problems) + ". Shards only read these shared inputs: build them "
            "once with `medssl study --prepare` (same --config and --set), then start the shards")
    return table


def run_shard(cfg, shard, *, lock_timeout_s: float = locks.DEFAULT_TIMEOUT_S) -> dict:
    """Run the cells of `shard` (`medssl.study.shards.Shard`: cell k of the grid is shard k mod n's).

    Needs `prepare_study` to have run (else StudyNotPreparedError). Writes cells/<key>.json per
    cell and `shards/<i>-of-<n>.json` (status running, then finished or failed: its cells, what it
    ran, found finished, found locked); never results.csv or the report (`collect_study`). Returns
    that record. Locks of another host older than lock_timeout_s are reported: the cells are
    skipped and a MedsslError names the lock files after the rest has run.
    """
    import hashlib
    import socket

    from medssl.errors import MedsslError
    from medssl.study.shards import shard_cells

    out_dir = Path(cfg.study.output_dir)
    df = _study_manifest(cfg)
    budgets_df = _require_prepared(cfg, shard)
    cfg = _with_inits(cfg, planned_inits(cfg))
    cells = study_cells(cfg)
    mine = shard_cells(cells, shard)
    stamp = lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z")  # noqa: E731
    record = {"shard": str(shard), "n_cells_grid": len(cells), "cells": [c.key for c in mine],
              "grid_sha256": hashlib.sha256("\n".join(c.key for c in cells).encode()).hexdigest(),
              "host": socket.gethostname(), "pid": os.getpid(), "started": stamp(), "status": "running"}
    report_path = out_dir / "shards" / f"{shard.label}.json"
    atomic.write_json(report_path, record)
    log.info("study shard %s: %d of %d cells", shard, len(mine), len(cells))
    _write_config(cfg)
    try:
        run = run_cells(mine, out_dir, _cell_fn(cfg, df, budgets_df), lock_timeout_s=lock_timeout_s,
                        shard=str(shard))
    except BaseException as e:
        atomic.write_json(report_path, {**record, "status": "failed", "finished": stamp(),
                                        "error": f"{type(e).__name__}: {e}"})
        raise
    record.update(run.as_dict(), status="finished", finished=stamp(),
                  complete=not (run.held or run.stale))
    atomic.write_json(report_path, record)
    if run.stale:
        raise MedsslError(
            f"study shard {shard}: {len(run.stale)} cells are locked by another host for longer than the lock "
            f"timeout ({lock_timeout_s / 3600:g} h) and were not run: "
            + ", ".join(f"{d['lock']} (host {d['host']}, pid {d['pid']}, since {d['since']})" for d in run.stale)
            + ". If those processes are gone, delete the lock files and rerun this shard")
    return record


def collect_study(cfg, *, data_notes: str = DEFAULT_DATA_NOTES,
                  allow_incomplete: bool = False) -> tuple[pd.DataFrame, Path, list[str]]:
    """results.csv, summary/paired statistics and the report from the cell files; trains nothing.

    Returns (results, report path, keys of the missing cells). Missing cells raise
    IncompleteStudyError listing them (grouped by the shard that owns them) unless allow_incomplete:
    then the report covers the finished cells and says at the top which are missing.
    """
    from medssl.study.shards import IncompleteStudyError, missing_message

    out_dir = Path(cfg.study.output_dir)
    df = _study_manifest(cfg)
    cfg = _with_inits(cfg, planned_inits(cfg), check=False)
    cells = study_cells(cfg)
    missing = [c for c in cells if not (out_dir / "cells" / f"{c.key}.json").is_file()]
    message = missing_message(out_dir, cells, missing) if missing else ""
    if missing and not allow_incomplete:
        raise IncompleteStudyError(message + " (--allow-incomplete writes the report of the finished ones)")
    results = collect(out_dir, cells)
    if results.empty:
        raise IncompleteStudyError(f"no finished cell in {out_dir / 'cells'}: nothing to collect")
    keys = [c.key for c in missing]
    note = (f"Incomplete study: {len(missing)} of {len(cells)} cells have no result yet "
            f"({', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}); every number covers the finished cells only.")
    results, report = _finish(cfg, df, results, data_notes=data_notes, extra_warnings=[note] if missing else [])
    return results, report, [c.key for c in missing]
