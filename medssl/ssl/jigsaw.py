"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles"): cut the image into 3 x 3 tiles, shuffle them by one of a FIXED set of
permutations, and classify which permutation it was.

- Permutation set: `permutation_set(n)` (`ssl.jigsaw_permutations`, default 100) is chosen once,
  deterministically: the first permutation is drawn from numpy's default_rng(PERMUTATION_SEED), then
  each next one is the permutation of {0..8} with the largest minimum Hamming distance to those
  chosen so far (ties: the lexicographically first), the paper's "maximal" criterion. Far-apart
  permutations make the classes distinguishable; the same seed always gives the same set, and the
  set is also stored in the module's state dict (buffer `perms`), so a resumed run and its
  checkpoint agree on what class k means.
- Tiles: the (S, S) view is split into 3 x 3 cells of c = S // 3 pixels; each tile is a random
  t x t crop inside its cell, t = round(c * ssl.jigsaw_tile_frac) (0.85, the paper's 64 of 75):
  the random gap between tiles removes edge continuity, a shortcut that solves the puzzle from the
  borders alone. Each tile is standardised on its own (mean 0, std 1 after the encoder's
  normalisation) so global exposure gradients are no shortcut either: the order must come from
  anatomy (apices above the hila above the diaphragm, the heart border, the ribs' slant).
- Network: the encoder, SHARED over the 9 tiles (a ViT, whose input size is fixed, gets tiles
  resized to model.input_size: 9x the compute of one image), then an MLP over the 9 concatenated
  tile features (9 * feature_dim -> ssl.proj_hidden -> n permutations), cross-entropy.

Convention: for permutation index y with perms[y] = (q_0 .. q_8), shuffled position i holds the
tile of cell q_i (cells numbered row-major). Only view_a is used (`medssl.ssl.pretext`).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import MLPHead
from medssl.ssl.losses import feature_std
from medssl.ssl.pretext import PretextMethod

GRID = 3
N_TILES = GRID * GRID
PERMUTATION_SEED = 0


@functools.lru_cache(maxsize=8)
def _permutation_set(n: int, seed: int) -> tuple:
    every = np.array(list(itertools.permutations(range(N_TILES))), dtype=np.int8)   # 9! x 9, lexicographic
    chosen = [int(np.random.default_rng(seed).integers(len(every)))]
    min_dist = (every != every[chosen[0]]).sum(axis=1)
    for _ in range(n - 1):
        j = int(min_dist.argmax())            # first maximum: deterministic tie-break
        chosen.append(j)
        min_dist = np.minimum(min_dist, (every != every[j]).sum(axis=1))
    return tuple(tuple(int(v) for v in every[j]) for j in chosen)


def permutation_set(n: int = 100, seed: int = PERMUTATION_SEED) -> Tensor:
    """(n, 9) int64: the fixed maximal-Hamming permutation set (same n and seed -> same set, always)."""
    return torch.tensor(_permutation_set(int(n), int(seed)), dtype=torch.long)


def make_tiles(x: Tensor, tile: int, offsets: Tensor | None = None) -> Tensor:
    """(B, C, H, W) -> (B, 9, C, tile, tile): tile of cell k = (r, c) (k = 3r + c) cropped at
    (r * cell + offsets[b, k, 0], c * cell + offsets[b, k, 1]), cell = min(H, W) // 3.

    offsets (B, 9, 2) int64 in [0, cell - tile]; None: centred (deterministic).
    """
    b, ch = x.shape[:2]
    cell = min(x.shape[-2:]) // GRID
    if not 1 <= tile <= cell:
        raise ValueError(f"tile {tile} must be in [1, cell {cell}]")
    if offsets is None:
        offsets = torch.full((b, N_TILES, 2), (cell - tile) // 2, dtype=torch.long, device=x.device)
    ar = torch.arange(tile, device=x.device)
    out = []
    for k in range(N_TILES):
        r, c = divmod(k, GRID)
        rows = r * cell + offsets[:, k, 0:1] + ar                         # (B, tile)
        cols = c * cell + offsets[:, k, 1:2] + ar
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(ch, device=x.device)[None, :, None, None]
        out.append(x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]])   # (B, C, tile, tile)
    return torch.stack(out, dim=1)


def shuffle_tiles(tiles: Tensor, perms: Tensor, labels: Tensor) -> Tensor:
    """tiles (B, 9, ...) -> shuffled (B, 9, ...): position i of sample b holds tile perms[labels[b], i]."""
    order = perms[labels]                                                   # (B, 9)
    idx = order.view(*order.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return torch.gather(tiles, 1, idx)


def standardise_tiles(tiles: Tensor, mean: float = 0.5, std: float = 0.25) -> Tensor:
    """Per-tile mean 0, std 1, expressed in [0, 1]-image units (x' = mean + std * z) so the encoder's
    own (x - mean) / std normalisation yields exactly z."""
    dims = tuple(range(2, tiles.dim()))
    mu = tiles.mean(dim=dims, keepdim=True)
    sd = tiles.std(dim=dims, keepdim=True, correction=0)
    return mean + std * (tiles - mu) / (sd + 1e-3)   # eps: a flat tile (air, padding) stays flat


class Jigsaw(PretextMethod):
    """forward(view_a, view_b, patient=None) -> (CE over the permutation set, logs feat_std, acc)."""

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("perms", permutation_set(cfg.jigsaw_permutations))
        self.tile_frac = float(cfg.jigsaw_tile_frac)
        self.head = MLPHead(N_TILES * encoder.feature_dim, cfg.proj_hidden, len(self.perms))
        spec = getattr(encoder, "spec", None)
        self.norm_mean = float(getattr(spec, "mean", 0.5))
        self.norm_std = float(getattr(spec, "std", 0.25))

    def puzzle(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B,1,S,S) -> (shuffled raw tiles (B, 9, 1, t, t), labels (B,)); random labels and tile offsets
        from the global torch RNG when training, centred tiles in eval."""
        cell = min(x.shape[-2:]) // GRID
        tile = max(1, min(cell, round(cell * self.tile_frac)))
        b = x.shape[0]
        offsets = None
        if self.training:
            offsets = torch.randint(0, cell - tile + 1, (b, N_TILES, 2), device=x.device)
        if labels is None:
            labels = torch.randint(0, len(self.perms), (b,), device=x.device)
        return shuffle_tiles(make_tiles(x, tile, offsets), self.perms, labels), labels

    def classify(self, tiles: Tensor) -> tuple[Tensor, Tensor]:
        """Shuffled raw tiles (B, 9, C, t, t) -> (logits (B, n permutations) float32, tile features (9B, D))."""
        b, _, ch, t, _ = tiles.shape
        flat = standardise_tiles(tiles, self.norm_mean, self.norm_std).reshape(b * N_TILES, ch, t, t)
        size = getattr(self.encoder, "fixed_input_size", None)
        if size is not None and t != size:
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False)
        feats = self.encoder(flat)                                            # (9B, D)
        return self.head(feats.reshape(b, -1)).float(), feats

    def forward(self, view_a: Tensor, view_b: Tensor | None = None, patient: Tensor | None = None):
        tiles, labels = self.puzzle(view_a)
        logits, feats = self.classify(tiles)
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            logs = {"feat_std": feature_std(feats), "acc": (logits.argmax(dim=1) == labels).float().mean()}
        return loss, logs
