"""One fine-tuning cell: init x mode x budget x seed -> selected weights, predictions, test metrics.

`finetune_cell` is what `medssl finetune` and the study runner call. The order is fixed and is
what keeps the test split honest:
  1. build the labeled TRAIN subset and the labelled VAL subset (`study.val_labels`: by default no
     more val images than training labels, whole patients, nested per seed) - the only data the
     fitting functions get,
  2. fit and select on val: the probes ("linear": L2 logistic regression, "knn": cosine kNN, see
     `medssl.finetune.probe`) choose C / k per label; "full" fine-tuning trains one run per learning
     rate of `finetune.lr_grid` (the same number of trials for every init; encoder lr multiplier 1.0
     for a random init, `finetune.encoder_lr_mult` for pretrained ones) and keeps the (trial, epoch)
     with the best val score (mean val AUC),
  3. only then build the TEST set and predict it with the selected weights, and evaluate.

Randomness: the encoder of a "random" init is drawn from `cfg.seed` (one random network per study,
so its features are shared by all cells), everything else (head init, batch order, augmentation,
labeled subset) from the cell's `seed`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from medssl import atomic
from medssl.config import Config
from medssl.errors import CheckpointError, ConfigError
from medssl.finetune import MODES, PROBE_MODES  # noqa: F401  (MODES re-exported)
from medssl.finetune import data as fd
from medssl.finetune.labels import pos_weight as class_pos_weight

log = logging.getLogger(__name__)



def _device(cfg: Config) -> str:
    acc = str(cfg.trainer.accelerator)
    if acc in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def init_model_spec(cfg: Config, init: str):
    """The architecture an init's weights need: the `export-backbone` JSON beside them when it names one
    (a study may compare a ViT's MAE encoder with ResNet inits), else cfg.model."""
    import json

    spec_path = Path(str(init)).with_suffix(".json") if init != "random" else None
    if spec_path is not None and spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, ValueError):
            spec = {}
        if isinstance(spec, dict) and spec.get("arch"):
            model = {k: getattr(cfg.model, k) for k in ("arch", "in_channels", "input_size", "patch_size", "vit_depth")}
            model.update({k: spec[k] for k in model if spec.get(k) is not None})
            return model
    return cfg.model


def build_init_encoder(cfg: Config, init: str):
    """The encoder of `init`: "random" (weights drawn from cfg.seed) or a checkpoint / export / state dict."""
    from medssl.models.backbones import encoder_from_config
    from medssl.models.weights import load_encoder_weights

    state = torch.random.get_rng_state()
    torch.manual_seed(int(cfg.seed))
    try:
        encoder = encoder_from_config(init_model_spec(cfg, init))
    finally:
        torch.random.set_rng_state(state)
    if init != "random":
        if not Path(init).exists():   # a file, or a MONAI bundle folder (medssl.models.weights)
            raise CheckpointError(f"{init}: init checkpoint does not exist; pass --init random or a checkpoint path")
        load_encoder_weights(init, encoder)
    return encoder


def _eval_tasks(cfg: Config, labels: list[str]) -> list[str] | None:
    if not cfg.evaluate.tasks:
        return None
    missing = [t for t in cfg.evaluate.tasks if t not in labels]
    if missing:
        raise ConfigError(f"evaluate.tasks: {missing} are not among the trained labels {labels}")
    return list(cfg.evaluate.tasks)


def augment_from_config(cfg: Config) -> Callable:
    """The modality-safe training augmentation of cfg.augment as a callable (x, generator, boxes) -> x.

    The fine-tuning policy (`medssl.augment.policy_from_config(cfg, "finetune")`: augment.finetune_policy,
    default the modality's "<modality>-default", which has no intensity jitter), applied batch-wise on
    the training device to full fine-tuning batches only; probes on cached features use none. Unsafe
    transforms raise UnsafeAugmentationError unless augment.force_unsafe is set.
    """
    from medssl.augment import policy_from_config

    pol = policy_from_config(cfg, "finetune")
    return lambda x, generator, boxes=None: pol.batch(x, generator, boxes=boxes)


def images_fingerprint(images) -> str | None:
    """What identifies an image source's pixels for the feature cache: its `fingerprint`, or a
    cache's settings + manifest hash (`CachedImages.meta`); None for in-memory sources."""
    fp = getattr(images, "fingerprint", None)
    if fp is not None:
        return str(fp)
    meta = getattr(images, "meta", None)
    if isinstance(meta, dict):
        import hashlib
        import json

        keep = {k: meta.get(k) for k in ("settings", "manifest_hash", "version")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()
    return None


# ----------------------------------------------------------------------------- fitting (train + val only)
def labeled_val_rows(cfg: Config, manifest_df: pd.DataFrame, labels, n_train_labeled: int, seed: int) -> np.ndarray:
    """Manifest positions of the labelled val subset for a cell with `n_train_labeled` training labels."""
    from medssl.splits import val_label_count, val_label_subset

    val = fd.split_rows(manifest_df, "val")
    n = val_label_count(cfg.study.val_labels, n_train_labeled, len(val))
    if n >= len(val):
        return val
    keep = set(val_label_subset(manifest_df, n, seed, labels=labels))
    return val[np.isin(manifest_df["path"].astype(str).to_numpy()[val], list(keep))]


def feature_getter(cfg: Config, encoder, images, store, device) -> Callable[[str, np.ndarray], np.ndarray]:
    """(split, rows) -> frozen features, from the feature store when there is one."""
    from medssl.finetune.features import encode

    def features(split: str, rows: np.ndarray) -> np.ndarray:
        compute = lambda r: encode(encoder, images, r, batch_size=cfg.finetune.batch_size,  # noqa: E731
                                   input_size=cfg.model.input_size, device=device)
        return store.get(split, rows, compute) if store is not None else compute(rows)
    return features


def _fit_probe(cfg, mode, features, train: fd.LabeledSet, val: fd.LabeledSet, labels, tasks):
    """Logistic ("linear") or kNN probe on frozen features; returns a medssl.finetune.probe.ProbeFit."""
    from medssl.finetune.probe import fit_knn_probe, fit_linear_probe

    ft = cfg.finetune
    xt, xv = features("train", train.rows), features("val", val.rows)
    if mode == "linear":
        return fit_linear_probe(xt, train, xv, val, labels, tasks=tasks, Cs=ft.probe_Cs, class_weights=ft.class_weights)
    return fit_knn_probe(xt, train, xv, val, labels, tasks=tasks, ks=ft.knn_ks)


def full_trials(cfg: Config, init: str) -> list[dict]:
    """The hyperparameter trials of full fine-tuning for `init`: one per finetune.lr_grid value.

    Every init gets the same number of trials. The encoder's lr multiplier is 1.0 for a random init
    (a lower encoder lr only slows a network that has nothing to preserve) and finetune.encoder_lr_mult
    for a pretrained one.
    """
    ft = cfg.finetune
    mult = 1.0 if init == "random" else float(ft.encoder_lr_mult)
    return [{"lr": float(lr), "encoder_lr_mult": mult} for lr in (ft.lr_grid or [ft.lr])]


def _loader(images, labeled: fd.LabeledSet, cfg: Config, *, shuffle: bool, seed: int):
    from torch.utils.data import DataLoader

    bs = cfg.finetune.batch_size
    workers = int(cfg.trainer.num_workers)
    return DataLoader(fd.ImageDataset(images, labeled), batch_size=bs, shuffle=shuffle,
                      drop_last=shuffle and len(labeled) > bs,  # no size-1 last batch for BatchNorm
                      generator=torch.Generator().manual_seed(int(seed)) if shuffle else None,
                      num_workers=workers, persistent_workers=workers > 0)


def finetune_epochs(cfg: Config, n_train: int) -> int:
    """Epochs of one full fine-tuning trial: finetune.epochs, or more so that the trial takes at least
    finetune.min_steps optimizer steps (50 labels at batch 64 are one step per epoch: 8 epochs would
    be 8 steps, an untrained network and an unfair random-init baseline)."""
    ft = cfg.finetune
    bs = int(ft.batch_size)
    steps_per_epoch = max(1, n_train // bs if n_train > bs else 1)   # drop_last when more than a batch
    return max(int(ft.epochs), -(-int(ft.min_steps) // steps_per_epoch))


def _fit_full(cfg, encoder, images, train: fd.LabeledSet, val: fd.LabeledSet, labels, tasks, seed, augment,
              *, lr: float, encoder_lr_mult: float, head_init=None):
    """End-to-end fine-tuning with Lightning at one learning rate; returns the FinetuneModule (best epoch inside).

    head_init: optional (ProbeFit, its val score) - the head starts as that fitted logistic probe and the
    untouched start (epoch -1) is the first candidate for selection (LP-FT, Kumar et al. 2022).
    """
    import lightning.pytorch as pl

    from medssl.finetune.module import Classifier, FinetuneModule

    ft = cfg.finetune
    epochs = finetune_epochs(cfg, len(train))
    # at most ~12 validation passes per trial: a small budget's many short epochs would otherwise
    # spend more time validating than training; epochs rounded up so the last one is validated
    every = -(-epochs // 12)
    epochs = -(-epochs // every) * every
    pl.seed_everything(int(seed), workers=True, verbose=False)
    model = Classifier(encoder, len(labels), cfg.model.input_size)
    if head_init is not None:
        probe_head_into(model.head, head_init[0])
    module = FinetuneModule(model, val, labels, lr=lr, encoder_lr_mult=encoder_lr_mult,
                            weight_decay=ft.weight_decay, epochs=epochs, tasks=tasks,
                            pos_weight=class_pos_weight(train.targets, train.mask) if ft.class_weights else None,
                            augment=augment, seed=seed, freeze_bn_stats=head_init is not None)
    if head_init is not None:
        module.set_initial_candidate(head_init[0].val_score, head_init[0].score_name)
    model.train()   # FinetuneModule sets the modes per epoch (BN statistics frozen with the probe start)
    trainer = pl.Trainer(max_epochs=epochs, accelerator=cfg.trainer.accelerator, devices=1,
                         check_val_every_n_epoch=every,
                         precision=cfg.trainer.precision, deterministic=cfg.trainer.deterministic,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=cfg.trainer.progress_bar, num_sanity_val_steps=0,
                         log_every_n_steps=cfg.trainer.log_every_n_steps)
    trainer.fit(module, _loader(images, train, cfg, shuffle=True, seed=seed),
                _loader(images, val, cfg, shuffle=False, seed=seed))
    return module


def probe_head_into(head: torch.nn.Linear, probe) -> None:
    """Copy a fitted logistic probe (on standardised features) into a plain linear head on raw features:
    W' = W / std, b' = b - W' . mean, so head(features) gives the probe's logits."""
    w = np.asarray(probe.state["weight"], np.float64) / np.asarray(probe.state["std"], np.float64)
    b = np.asarray(probe.state["bias"], np.float64) - w @ np.asarray(probe.state["mean"], np.float64)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))


def _fit_full_search(cfg, init, images, train, val, labels, tasks, seed, augment, features=None):
    """One full fine-tuning run per trial of `full_trials`, each from a fresh copy of the init encoder;
    returns (best module, the chosen trial, per-trial history). Ties keep the earlier trial.

    With finetune.head_init "probe" (LP-FT, Kumar et al. 2022) every trial starts from the init with its
    head set to the logistic probe fitted on the init's frozen features (`features`: the cell's feature
    getter, the same features and fit as the study's `linear` cells), BatchNorm statistics kept as
    they are while the weights train (FinetuneModule.freeze_bn_stats), so the start is exactly that
    probe (candidate epoch -1) and full fine-tuning can only improve on it on val."""
    head_init = None
    if cfg.finetune.head_init == "probe":
        probe = _fit_probe(cfg, "linear", features, train, val, labels, tasks)
        head_init = (probe, probe.val_score)
        log.info("full fine-tuning starts from the logistic probe (%s %.4f)", probe.score_name, probe.val_score)
    best, best_trial, trials = None, None, []
    for trial in full_trials(cfg, init):
        module = _fit_full(cfg, build_init_encoder(cfg, init), images, train, val, labels, tasks, seed, augment,
                           **trial, head_init=head_init)
        trials.append({**trial, "best_epoch": module.best_epoch, "val_score": module.best_score,
                       "epochs": module.history})
        log.info("full fine-tuning lr %.2g (encoder x%.2g): best epoch %d, %s %.4f", trial["lr"],
                 trial["encoder_lr_mult"], module.best_epoch, module.score_name, module.best_score)
        if best is None or module.best_score > best.best_score:
            best, best_trial = module, trial
    return best, best_trial, trials


@torch.inference_mode()
def predict_images(model: torch.nn.Module, images, labeled: fd.LabeledSet, *, batch_size: int = 64,
                   device: str = "cpu") -> np.ndarray:
    """Sigmoid probabilities (N, C) float64 of a Classifier over a LabeledSet, in eval mode."""
    model = model.to(device).eval()
    out = []
    for s in range(0, len(labeled), batch_size):
        rows = labeled.rows[s:s + batch_size]
        x = fd.image_batch(images, rows).to(device)
        out.append(torch.sigmoid(model(x)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(labeled.targets[0]) if len(labeled) else 0))


# ----------------------------------------------------------------------------- the cell
def finetune_cell(cfg: Config, *, manifest_df: pd.DataFrame, images, budgets_df: pd.DataFrame | None = None,
                  init: str = "random", mode: str = "linear", budget=None, seed: int = 0,
                  out_dir: str | Path, feature_dir: str | Path | None = None,
                  augment: Callable | None = None) -> dict:
    """Train and evaluate one cell; write its artefacts into out_dir; return a flat result dict.

    manifest_df: the split manifest (`split` column; patient ids already pseudonymised), row i
      matching images[i]. images: image source (see medssl.finetune.data). budgets_df: the budgets
      table (`path, budget, seed`); budget None trains on every train row.
    init: "random" or a weights file; mode: "linear" (logistic probe) or "knn" on frozen features
      cached under feature_dir (default cfg.finetune.feature_dir or out_dir/features), or "full".
    augment: callable (x, generator, boxes) -> x for full fine-tuning batches (None: no augmentation).
    Writes: best.pt (selected weights), history.json, val_predictions.csv, predictions.csv (test),
      metrics.json and roc.png. Returns n_labeled, n_val_labeled, n_labels_total, best_epoch
      (-1 for probes), selected (the chosen hyperparameters), val_score(+_name), mean_auc with CI,
      auc_<label> for every label, and the artefact paths.
    """
    if mode not in MODES:
        raise ConfigError(f"finetune.mode: {mode!r} is not allowed; choose one of {list(MODES)}")
    import json

    from medssl.evaluate import write_evaluation
    from medssl.evaluate.metrics import predictions_frame

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    manifest_df = manifest_df.reset_index(drop=True)
    labels = fd.label_names(manifest_df, cfg.data.labels)
    tasks = _eval_tasks(cfg, labels)
    ft = cfg.finetune
    device = _device(cfg)
    make = lambda rows, name: fd.make_set(manifest_df, rows, labels, name,  # noqa: E731
                                          uncertainty=ft.uncertainty, blank=ft.blank)

    # 1. train + labelled val only
    train = make(fd.labeled_train_rows(manifest_df, budgets_df, budget, seed), "train")
    val = make(labeled_val_rows(cfg, manifest_df, labels, len(train), seed), "val")
    log.info("cell init=%s mode=%s budget=%s seed=%d: %d labeled train images, %d labelled val images",
             init, mode, budget, seed, len(train), len(val))

    # 2. fit and select on val
    features = None
    if mode in PROBE_MODES or ft.head_init == "probe":
        from medssl.finetune.features import FeatureStore, feature_key

        store = None
        if ft.precompute_features:   # the study's probe cells and full cells share one store per init
            key, desc = feature_key(arch=cfg.model.arch, in_channels=cfg.model.in_channels,
                                    input_size=cfg.model.input_size, init=init, init_seed=cfg.seed,
                                    manifest_paths=manifest_df["path"].astype(str).tolist(),
                                    images_fingerprint=images_fingerprint(images))
            store = FeatureStore(feature_dir or ft.feature_dir or out_dir / "features", key, desc)
        features = feature_getter(cfg, build_init_encoder(cfg, init), images, store, device)
    if mode in PROBE_MODES:
        probe = _fit_probe(cfg, mode, features, train, val, labels, tasks)
        best_epoch, score, score_name, selected = -1, probe.val_score, probe.score_name, probe.selected
        history = probe.history
        if mode == "linear":
            checkpoint = {"head": probe.head().state_dict()}
        else:
            checkpoint = {"knn": {k: torch.as_tensor(np.asarray(v)) for k, v in probe.state.items()}}
        # init_seed: a random init's encoder is rebuilt from it (medssl export of a probe on a random encoder)
        checkpoint.update(init=str(init), init_seed=int(cfg.seed), selected=json.dumps(selected))
        val_probs = probe.predict(features("val", val.rows))
        predict = lambda s: probe.predict(features("test", s.rows))  # noqa: E731
    else:
        module, trial, trials = _fit_full_search(cfg, init, images, train, val, labels, tasks, seed, augment,
                                                 features)
        best_epoch, score, score_name = module.best_epoch, module.best_score, module.score_name
        selected, history = {**trial, "epoch": module.best_epoch}, trials
        model = module.best_model()
        checkpoint = {"encoder": model.encoder.net.state_dict(), "head": model.head.state_dict(), "init": str(init),
                      "selected": json.dumps(selected)}
        val_probs = predict_images(model, images, val, batch_size=ft.batch_size, device=device)
        predict = lambda s: predict_images(model, images, s, batch_size=ft.batch_size, device=device)  # noqa: E731
    spec = init_model_spec(cfg, init)   # the encoder's own architecture (an init may bring another one)
    get = spec.get if isinstance(spec, dict) else (lambda k: getattr(spec, k))
    checkpoint.update(arch=get("arch"), in_channels=get("in_channels"), input_size=get("input_size"),
                      labels=labels, mode=mode, best_epoch=best_epoch, seed=seed)
    if str(get("arch")).startswith("vit_"):   # the ViT's shape needs these to be rebuilt (medssl.models.export)
        checkpoint.update(patch_size=get("patch_size"), vit_depth=get("vit_depth"))
    ckpt_path = out_dir / "best.pt"
    with atomic.atomic_path(ckpt_path) as tmp:
        torch.save(checkpoint, tmp)
    atomic.write_json(out_dir / "history.json", {"selection": score_name, "selected": selected,
                                                 "best_epoch": best_epoch, "history": history})
    atomic.write_table(out_dir / "val_predictions.csv",
                       predictions_frame(val.paths, val.patient_ids, labels, val_probs, val.labels_raw))

    # 3. only now: the test split, predicted with the selected weights
    test = make(fd.split_rows(manifest_df, "test"), "test")
    test_df = predictions_frame(test.paths, test.patient_ids, labels, predict(test), test.labels_raw)
    pred_path = atomic.write_table(out_dir / "predictions.csv", test_df)
    ev = cfg.evaluate
    metrics = write_evaluation(test_df, out_dir, tasks=tasks, n_bootstrap=ev.bootstrap, ci=ev.ci, seed=ev.seed)
    result = {
        "n_labeled": len(train), "n_val_labeled": len(val), "n_labels_total": len(train) + len(val),
        "best_epoch": int(best_epoch), "selected": json.dumps(selected), "val_score": float(score),
        "val_score_name": score_name,
        "mean_auc": metrics["mean_auc"], "mean_auc_ci_low": metrics["mean_auc_ci_low"],
        "mean_auc_ci_high": metrics["mean_auc_ci_high"],
        **{f"auc_{lbl}": metrics["classes"][lbl]["auc"] for lbl in labels},
        "checkpoint": str(ckpt_path), "predictions": str(pred_path), "metrics": str(out_dir / "metrics.json"),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("cell done: selected %s (%s %.4f), test mean AUC %.4f [%.4f, %.4f]", result["selected"], score_name,
             score, result["mean_auc"], result["mean_auc_ci_low"], result["mean_auc_ci_high"])
    return result
