"""Sharded studies: a deterministic share of the grid per process, on as many machines as there are.

`medssl study --shard i/n` runs the cells k of the grid's fixed order (`medssl.study.runner.grid`)
with k mod n == i (0-based), so n shards partition the grid: every cell belongs to exactly one
shard, whatever the machines, and neighbouring (similar-cost) cells go to different shards.
All shards write the same `cells/` folder: one atomic `cells/<key>.json` per finished cell, a
lock file per running cell (`medssl.study.locks`, against a duplicate launch of one shard), and
`shards/<i>-of-<n>.json` saying what the shard ran, found finished, or could not take.

Shards do not prepare anything shared: the budgets table, the decoded cache and the pretraining
of spec inits happen once, before them, in `medssl study --prepare` (one process; pretraining
may itself be a multi-GPU launch). A shard that finds them missing stops with an error naming that
command, instead of n shards building the same cache or pretraining the same encoder at once.
Shards never write results.csv or the report: `medssl study --collect` builds both from the cell
files and lists the cells still missing. The probe features (`<study>/features/`) are shared:
their writes are atomic, so two shards encoding the same split concurrently can only duplicate
work (the last complete file wins), never leave a corrupt file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medssl.errors import ConfigError, MedsslError


class StudyNotPreparedError(MedsslError):
    """A shard found the shared inputs (budgets, cache, pretrained inits) missing."""


class IncompleteStudyError(MedsslError):
    """`--collect` (or a plain study run) found cells without a result file."""


@dataclass(frozen=True)
class Shard:
    index: int   # 0-based
    count: int

    @property
    def label(self) -> str:
        """File-name form, `i-of-n` (shards/<label>.json)."""
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, k: int) -> bool:
        """Whether cell k of the grid's order is this shard's."""
        return k % self.count == self.index


def parse_shard(text: str) -> Shard:
    """`i/n` -> Shard(i, n); a ConfigError that shows the valid range otherwise."""
    m = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"--shard {text!r}: expected INDEX/COUNT, e.g. --shard 0/4 (0-based index)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ConfigError(f"--shard {text}: the shard count must be at least 1")
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text}: the index is 0-based, 0 <= INDEX < {n}: use 0/{n} .. {n - 1}/{n}")
    return Shard(i, n)


def shard_cells(cells: Sequence, shard: Shard) -> list:
    """The cells of `shard`: cell k (grid order) belongs to shard k mod n."""
    return [c for k, c in enumerate(cells) if shard.owns(k)]


def shard_counts(out_dir: str | Path) -> list[int]:
    """Shard counts n seen in `<study>/shards/*-of-<n>.json` (usually one)."""
    found = set()
    for p in (Path(out_dir) / "shards").glob("*-of-*.json"):
        m = re.fullmatch(r"\d+-of-(\d+)\.json", p.name)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def missing_message(out_dir: str | Path, cells: Sequence, missing: Sequence) -> str:
    """'N of M cells have no result file: ...' with every missing key, grouped by owning shard
    when the study was run in shards (so the operator knows which shard to rerun)."""
    out_dir = Path(out_dir)
    order = {c.key: k for k, c in enumerate(cells)}
    head = f"{len(missing)} of {len(cells)} cells have no result file in {out_dir / 'cells'}"
    counts = shard_counts(out_dir)
    if len(counts) == 1:
        n = counts[0]
        by_shard: dict[int, list[str]] = {}
        for c in missing:
            by_shard.setdefault(order[c.key] % n, []).append(c.key)
        parts = [f"shard {i}/{n} ({len(keys)}): {', '.join(keys)}" for i, keys in sorted(by_shard.items())]
        return f"{head}; rerun the shards that own them: " + "; ".join(parts)
    return f"{head}: {', '.join(c.key for c in missing)}"
