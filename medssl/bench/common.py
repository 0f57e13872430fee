"""Timing and reporting helpers shared by the `medssl bench` parts.

Laptop timings are noisy: time each operation several times and report the median; compare a
quantity only with a reference measured in the same run (same machine, same load).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence


def time_calls(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1,
               budget_s: float | None = None) -> dict:
    """Time `fn()` `repeats` times after `warmup` untimed calls; stop early once `budget_s` is spent
    (at least one timed call always runs). Returns median_s, min_s, max_s, runs (seconds)."""
    for _ in range(warmup):
        fn()
    runs: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return summarise(runs)


def time_each(fn: Callable[[object], object], items: Sequence, *, repeats: int = 3, warmup: int = 1,
              budget_s: float | None = None) -> dict:
    """Time `fn(item)` for every item, `repeats` passes (fewer once `budget_s` is spent, never less
    than one); per-call statistics over all samples. `warmup` untimed calls on the first item."""
    for _ in range(warmup):
        fn(items[0])
    runs: list[float] = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        for item in items:
            t = time.perf_counter()
            fn(item)
            runs.append(time.perf_counter() - t)
        if budget_s is not None and time.perf_counter() - start > budget_s:
            break
    return summarise(runs)


def summarise(runs: Sequence[float]) -> dict:
    return {"median_s": statistics.median(runs), "min_s": min(runs), "max_s": max(runs),
            "n_samples": len(runs)}


def per_second(seconds_per_item: float) -> float:
    return 1.0 / seconds_per_item if seconds_per_item > 0 else float("inf")


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def environment() -> dict:
    """Where the numbers come from: machine, core count and library versions."""
    import numpy

    from medssl import __version__

    env = {"medssl": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine(), "processor": platform.processor() or None,
           "cpu_count": cpu_count(), "numpy": numpy.__version__,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name in ("torch", "pydicom", "PIL"):
        try:
            module = __import__(name)
            env[name if name != "PIL" else "pillow"] = getattr(module, "__version__", None)
        except ImportError:
            env[name] = None
    return env


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Write benchmark results as JSON atomically (creates the folder)."""
    from medssl.atomic import write_json

    return write_json(path, results)


def format_table(rows: Sequence[Sequence], headers: Sequence[str]) -> str:
    """A plain-text table; floats get 3 significant digits."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e5 else f"{v:.0f}"
        return "" if v is None else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in text]
    return "\n".join(lines)


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING):
    """Raise the level of the named loggers for the duration of a benchmark, then restore it.

    Benchmarks run inside other processes too (tests, notebooks): they must not leave global
    logging state changed behind them.
    """
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)
