"""Positive pairs for contrastive pretraining, sampled per epoch with patients kept apart.

Modes:
- "instance": the positive of an image is another augmentation of itself -> (p, p).
- "micle" (Azizi et al. 2021, "Big Self-Supervised Models Advance Medical Image
  Classification"): the positive is a DIFFERENT image of the same patient (scope="patient": any
  of the patient's studies; scope="study": the same study only), e.g. two views of one study.
  A patient (or study) with a single eligible image falls back to (p, p), which is then an
  instance pair.

One epoch (`anchors`): "image" (default, as in Azizi et al.): every eligible image is the anchor
of one pair, its positive drawn uniformly from the other eligible images of its group, so an
epoch has as many pairs as images and matches instance mode. "patient": one pair per patient
(a random anchor image), a patient-balanced epoch in which patients with many images do not
dominate.

`views` restricts BOTH members of every pair (e.g. ["PA", "AP"] keeps frontal images only;
matched case-insensitively against the manifest's `view` column); other rows never appear.

Indices are row POSITIONS in the given DataFrame (iloc), int64. Patient codes are dense
(0..n_patients-1 over eligible rows, fixed for the sampler's lifetime), so the SSL method can mask
negatives of the anchor's own patient: for MoCo, store the patient code of each key in the queue
next to the key and exclude queue entries with the anchor's code from the negatives;
`queue_warning` says when that matters. `batches` never puts two pairs of one patient in a batch,
so in-batch negatives are always other patients.

Everything is deterministic in (seed, epoch) and vectorised: 224k rows / 64k patients take a
few tens of milliseconds per epoch. Pure numpy/pandas: no torch here.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from medssl.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

MODES = ("instance", "micle")
SCOPES = ("patient", "study")
ANCHORS = ("image", "patient")


def _dense_codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=False)[0].astype(np.int64)


class PairSampler:
    """Positive pairs per epoch from a manifest with `path, patient_id` (+ `study_id`, `view`)."""

    def __init__(self, df: pd.DataFrame, *, mode: str = "instance", scope: str = "patient",
                 views: Sequence[str] | None = None, seed: int = 0, anchors: str = "image"):
        if mode not in MODES:
            raise ConfigError(f"ssl.pairs: {mode!r} is not a pair mode; choose one of {list(MODES)}")
        if scope not in SCOPES:
            raise ConfigError(f"ssl.pair_scope: {scope!r} is not allowed; choose one of {list(SCOPES)}")
        if anchors not in ANCHORS:
            raise ConfigError(f"pair anchors: {anchors!r} is not allowed; choose one of {list(ANCHORS)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"pair seed must be a non-negative integer, got {seed!r}")
        if isinstance(views, str):
            views = [views]
        needed = ["path", "patient_id"] + (["study_id"] if mode == "micle" and scope == "study" else []) \
            + (["view"] if views else [])
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise ManifestError(f"pair sampling needs manifest column(s) {missing}; the manifest has "
                                f"{list(df.columns)[:12]}... (build it with `medssl manifest`)")
        self.mode, self.scope, self.anchors, self.seed = mode, scope, anchors, int(seed)
        self.views = [str(v) for v in views] if views else None
        self.epoch = 0

        eligible = np.ones(len(df), dtype=bool)
        if self.views:
            wanted = {v.strip().upper() for v in self.views}
            eligible = df["view"].astype("string").str.strip().str.upper().isin(wanted).fillna(False).to_numpy(bool)
        rows = np.flatnonzero(eligible).astype(np.int64)
        if len(rows) == 0:
            where = f" with view in {self.views}" if self.views else ""
            raise ManifestError(f"no manifest rows{where} to sample pairs from "
                                f"(views present: {sorted(map(str, df['view'].dropna().unique()))[:10]})"
                                if self.views else "the manifest is empty: no rows to sample pairs from")
        patients = df["patient_id"].iloc[rows]
        if patients.isna().any():
            raise ManifestError(f"{int(patients.isna().sum())} manifest rows have no patient_id; pairs and "
                                "patient-level batching need one per row (fix the manifest)")
        self.rows = rows                                         # eligible df positions
        self.patient = _dense_codes(patients)                    # per eligible row
        self.n_patients = int(self.patient.max()) + 1
        if mode == "micle" and scope == "study":
            studies = _dense_codes(df["study_id"].iloc[rows].astype("string").fillna("<missing>"))
            group = _dense_codes(pd.Series(self.patient * (int(studies.max()) + 1) + studies))
        else:
            group = self.patient
        # eligible rows sorted by group; each row knows its group's start, size and its rank in it
        order = np.argsort(group, kind="stable")
        g_sorted = group[order]
        sizes = np.bincount(g_sorted)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._order = order                                      # sorted slot -> eligible index
        self._start = starts[g_sorted]
        self._size = sizes[g_sorted]
        self._rank = np.arange(len(order)) - self._start
        self._paths = df["path"].to_numpy()

    # -- epoch bookkeeping
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used by iteration (and by `pair_indices`/`batches` without an epoch)."""
        self.epoch = int(epoch)

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), stream])

    def __len__(self) -> int:
        """Pairs per epoch: eligible images (anchors="image" or instance mode) or patients."""
        if self.mode == "micle" and self.anchors == "patient":
            return self.n_patients
        return len(self.rows)

    # -- pairs
    def pair_indices(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(idx_a, idx_b, patient_code): int64 arrays, one entry per pair, in a shuffled order.

        idx_* are row positions in the DataFrame; patient_code is the dense code of the pair's patient.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = self._rng(epoch, 0)
        n = len(self._order)
        if self.mode == "instance":
            slots = np.arange(n)
            pos_slots = slots
        else:
            if self.anchors == "patient":
                # one random anchor per patient: sort slots by (patient, random key), keep each first
                pat = self.patient[self._order]
                key = np.lexsort((rng.random(n), pat))
                first = np.ones(n, dtype=bool)
                first[1:] = pat[key][1:] != pat[key][:-1]
                slots = key[first]
            else:
                slots = np.arange(n)
            size, rank, start = self._size[slots], self._rank[slots], self._start[slots]
            # uniform over the OTHER members of the group: draw from size-1 and skip the anchor
            r = np.floor(rng.random(len(slots)) * np.maximum(size - 1, 1)).astype(np.int64)
            r = np.where(size > 1, r + (r >= rank), rank)
            pos_slots = start + r
        perm = rng.permutation(len(slots))
        a = self._order[slots[perm]]
        b = self._order[pos_slots[perm]]
        return self.rows[a], self.rows[b], self.patient[a]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(path_a, path_b) for every pair of the current epoch (see `set_epoch`)."""
        a, b, _ = self.pair_indices(self.epoch)
        paths = self._paths
        for i, j in zip(a.tolist(), b.tolist()):
            yield paths[i], paths[j]

    # -- patient-disjoint batches
    def batches(self, batch_size: int, epoch: int | None = None, drop_last: bool = True
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (idx_a, idx_b, patient_code) int64 arrays per batch; no patient twice in a batch.

        Patients, not images, are spread over batches: pairs are laid out patient by patient in a
        random patient order and dealt round-robin into the epoch's batches, so a patient's pairs
        land in distinct batches. That needs each patient to have at most n_batches pairs; extra
        pairs of such a patient (only with very few patients or huge batches) are dropped for the
        epoch and logged. drop_last=True: every batch has exactly batch_size pairs (the remainder
        is dropped; patient order is reshuffled each epoch). drop_last=False: keeps every pair in
        ceil(pairs / batch_size) batches of at most batch_size (the shortfall is spread over them).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self.n_patients:
            raise ConfigError(
                f"a batch of {batch_size} pairs needs {batch_size} different patients but the data has "
                f"{self.n_patients}; lower trainer.batch_size (same-patient pairs in a batch would be "
                "false negatives)")
        epoch = self.epoch if epoch is None else epoch
        a, b, p = self.pair_indices(epoch)
        rng = self._rng(epoch, 1)
        # rank of each pair within its patient (pairs are already shuffled)
        by_patient = np.argsort(p, kind="stable")
        counts = np.bincount(p, minlength=self.n_patients)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(len(p), dtype=np.int64)
        rank[by_patient] = np.arange(len(p)) - first[p[by_patient]]

        def n_batches(total: int) -> int:
            return total // batch_size if drop_last else math.ceil(total / batch_size)

        nb = n_batches(len(p))
        while True:      # cap pairs per patient at nb; the cap can lower nb: iterate to a fixed point
            new_nb = n_batches(int(np.minimum(counts, nb).sum()))
            if new_nb == nb:
                break
            nb = new_nb
        if nb == 0:
            return
        keep = rank < nb
        if not keep.all():
            log.info("epoch %d: %d pairs of patients with more than %d pairs left out so that no batch "
                     "holds a patient twice", epoch, int((~keep).sum()), nb)
        a, b, p, rank = a[keep], b[keep], p[keep], rank[keep]
        # patient-contiguous sequence in a random patient order; then deal round-robin into nb batches
        patient_order = rng.permutation(self.n_patients)
        place = np.empty(self.n_patients, dtype=np.int64)
        place[patient_order] = np.arange(self.n_patients)
        seq = np.lexsort((rank, place[p]))
        total = nb * batch_size
        if drop_last:
            seq = seq[:total]
        else:
            seq = np.concatenate([seq, np.full(total - len(seq), -1, dtype=np.int64)])
        grid = seq.reshape(batch_size, nb).T                     # row j = batch j: seq[j], seq[j+nb], ...
        grid = np.take_along_axis(grid, np.argsort(rng.random(grid.shape), axis=1), axis=1)
        for j in rng.permutation(nb):
            sel = grid[j]
            if not drop_last:
                sel = sel[sel >= 0]
            yield a[sel], b[sel], p[sel]


def queue_warning(queue_size: int, n_patients: int, fraction: float = 0.1, *, masked: bool = False) -> str | None:
    """A warning when a MoCo queue is large relative to the number of patients, else None.

    With Q keys drawn from P patients, the queue holds a key of the anchor's own patient with
    probability about 1 - (1 - 1/P)^Q; those keys are false negatives unless masked by patient code
    (`masked=True`: medssl's MoCo does this with ssl.mask_same_patient, so it warns only once the
    queue outgrows the patients, and only notes that fewer distinct negatives remain).
    """
    if n_patients <= 0:
        return f"MoCo queue of {queue_size} keys over a data set with no patients: check the train split"
    # Masked same-patient keys cost only a few negatives per anchor; worth a word once the queue
    # outgrows the patients (then every anchor's own patient is in it, with keys from older epochs).
    if queue_size <= (n_patients if masked else fraction * n_patients):
        return None
    p_same = 1.0 - (1.0 - 1.0 / n_patients) ** queue_size
    head = (f"MoCo queue holds {queue_size} keys but the data has only {n_patients} patients "
            f"(more than {fraction:.0%} of them): a queue contains a key of the anchor's own patient with "
            f"probability ~{p_same:.0%}")
    if masked:
        return (head + "; those keys are masked out of the negatives (ssl.mask_same_patient), so each anchor "
                "sees fewer distinct negatives than the queue size suggests.")
    return (head + ", a false negative. Mask queue entries by patient code (ssl.mask_same_patient: true) "
            f"or use ssl.queue_size <= {max(1, int(fraction * n_patients))}.")
