"""`medssl bench finetune`: the two fine-tuning speed claims, as ratios measured in one run.

1. Probe cells of a study (budgets x seeds) on features encoded once and reused vs encoding the
   images again for every cell (the expected ratio is about the number of cells: encoding
   dominates, the logistic probe over its C grid costs little), and the probe's own fit time.
2. Full fine-tuning throughput (images/s through the real loader + Lightning module) vs the
   compute-only ceiling (the same forward/backward/step on one batch already on the device).
Synthetic uint8 images; nothing is read from disk. Returns a JSON-able dict.
"""

from __future__ import annotations

import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--arch", default="resnet18", help="encoder architecture (default resnet18)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--images", type=int, default=512, help="training images (default 512)")
    parser.add_argument("--cells", type=int, default=6, help="probe cells sharing features (default 6: 3 budgets x 2 seeds)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--classes", type=int, default=5, help="labels (default 5)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _synthetic(n: int, size: int, classes: int, seed: int = 0):
    import pandas as pd

    from medssl.finetune.data import ArrayImages

    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 0.3).astype(float)
    labels[:2] = [[1] * classes, [0] * classes]
    cols = {f"L{j}": labels[:, j] for j in range(classes)}
    man = pd.DataFrame({"path": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)], **cols})
    return man, ArrayImages((rng.random((n, size, size)) * 255).astype(np.uint8)), list(cols)


def linear_probe_speed(*, arch: str, size: int, n: int, cells: int, batch_size: int, classes: int,
                       device: str) -> dict:
    """Seconds for `cells` logistic-probe cells: features encoded once and reused vs encoded per cell."""
    from medssl.finetune.data import make_set
    from medssl.finetune.features import encode
    from medssl.finetune.probe import fit_linear_probe
    from medssl.models.backbones import build_encoder

    man, images, labels = _synthetic(n, size, classes)
    rows = np.arange(n)
    half = n // 2
    train, val = make_set(man, rows[:half], labels, "train"), make_set(man, rows[half:], labels, "val")
    encoder = build_encoder(arch, 1, size)
    encode(encoder, images, rows[:batch_size], batch_size=batch_size, device=device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    feats = encode(encoder, images, rows, batch_size=batch_size, device=device)
    _sync(device)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(cells):
        fit_linear_probe(feats[:half], train, feats[half:], val, labels)
    fit_s = (time.perf_counter() - t0) / cells
    t0 = time.perf_counter()
    for _ in range(cells):
        f = encode(encoder, images, rows, batch_size=batch_size, device=device)
        fit_linear_probe(f[:half], train, f[half:], val, labels)
    _sync(device)
    recomputed = time.perf_counter() - t0
    reused = encode_s + cells * fit_s
    return {"cells": cells, "images": n, "encode_s": round(encode_s, 3), "probe_fit_s": round(fit_s, 3),
            "reused_features_s": round(reused, 3), "encode_every_cell_s": round(recomputed, 3),
            "speedup": round(recomputed / reused, 2)}


def full_finetune_speed(*, arch: str, size: int, n: int, batch_size: int, classes: int, device: str) -> dict:
    """Training images/s of one Lightning epoch (loader + module) vs the compute-only ceiling."""
    import lightning.pytorch as pl
    import torch

    from medssl.finetune.data import ImageDataset, make_set
    from medssl.finetune.module import Classifier, FinetuneModule, masked_bce
    from medssl.models.backbones import build_encoder

    man, images, labels = _synthetic(n, size, classes)
    train = make_set(man, np.arange(n), labels, "train")
    steps = n // batch_size
    module = FinetuneModule(Classifier(build_encoder(arch, 1, size), classes), train, labels, epochs=1)
    loader = torch.utils.data.DataLoader(ImageDataset(images, train), batch_size=batch_size, shuffle=True,
                                         drop_last=True, num_workers=0)
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         limit_val_batches=0, num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    _sync(device)
    pipeline = steps * batch_size / (time.perf_counter() - t0)

    model = Classifier(build_encoder(arch, 1, size), classes).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, size, size, device=device)
    y = torch.from_numpy(train.targets[:batch_size]).to(device)
    m = torch.ones_like(y)

    def step():
        loss = masked_bce(model(x), y, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    ceiling = steps * batch_size / (time.perf_counter() - t0)
    return {"images": steps * batch_size, "pipeline_images_per_s": round(pipeline, 1),
            "compute_ceiling_images_per_s": round(ceiling, 1), "fraction_of_ceiling": round(pipeline / ceiling, 3)}


def run(args) -> dict:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    common = dict(arch=args.arch, size=args.size, n=args.images, batch_size=args.batch_size,
                  classes=args.classes, device=device)
    return {
        "part": "finetune", "device": device, "arch": args.arch, "size": args.size, "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "linear_probe": linear_probe_speed(cells=args.cells, **common),
        "full_finetune": full_finetune_speed(**common),
    }
