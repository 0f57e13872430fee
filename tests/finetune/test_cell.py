"""End-to-end cells on 32 px images: artefacts, selection on val only, determinism, feature reuse."""

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.finetune.data import ArrayImages
from medssl.finetune.run import augment_from_config, finetune_cell
from medssl.models.backbones import build_encoder
from medssl.models.weights import load_encoder_weights

from .conftest import RecordingImages, budgets_for, tiny_config


def _cell(tmp_path, tiny_data, name, *, mode="linear", images=None, manifest=None, cfg=None, **kw):
    man, imgs = tiny_data
    man = man if manifest is None else manifest
    cfg = cfg or tiny_config(**({} if mode in ("linear", "knn") else {"finetune.epochs": 2,
                                                                       "finetune.lr_grid": "[0.001]"}))
    kw.setdefault("budget", 40)
    kw.setdefault("seed", 0)
    return finetune_cell(cfg, manifest_df=man, images=images or ArrayImages(imgs), budgets_df=budgets_for(man),
                         mode=mode, out_dir=tmp_path / name, feature_dir=tmp_path / "features", **kw)


def _flip_test_labels(man):
    flipped = man.copy()
    test = flipped["split"] == "test"
    for c in ("A", "B"):
        flipped.loc[test, c] = flipped.loc[test, c].map({1.0: 0.0, 0.0: 1.0, -1.0: -1.0})
    return flipped


def test_linear_cell_learns_and_writes_its_artefacts(tmp_path, tiny_data):
    man, _ = tiny_data
    r = _cell(tmp_path, tiny_data, "lin")
    assert r["n_labeled"] == 40 and r["val_score_name"] == "val_mean_auc"
    assert r["mean_auc"] > 0.9 and r["mean_auc_ci_low"] <= r["mean_auc"] <= r["mean_auc_ci_high"]
    preds = pd.read_csv(r["predictions"], dtype={"patient_id": str})
    test = man[man["split"] == "test"]
    assert preds["path"].tolist() == test["path"].tolist()
    assert preds["patient_id"].tolist() == test["patient_id"].tolist()   # manifest's pseudonymised ids only
    assert ((preds[["prob_A", "prob_B"]] >= 0) & (preds[["prob_A", "prob_B"]] <= 1)).all().all()
    np.testing.assert_array_equal(preds["target_B"].to_numpy(), test["B"].to_numpy())  # raw, -1 kept
    for f in ("best.pt", "history.json", "val_predictions.csv", "metrics.json", "roc.png"):
        assert (tmp_path / "lin" / f).is_file()
    ckpt = torch.load(r["checkpoint"], weights_only=True)
    assert ckpt["mode"] == "linear" and ckpt["labels"] == ["A", "B"] and ckpt["head"]["linear.weight"].shape == (2, 512)


def test_selection_never_looks_at_the_test_split(tmp_path, tiny_data):
    """Flipping every test label cannot change the selected epoch, its val score or the test probabilities;
    and no test image is read before training and selection are over."""
    man, imgs = tiny_data
    test_rows = set(np.flatnonzero(man["split"].to_numpy() == "test"))
    for mode in ("linear", "full"):
        rec = RecordingImages(imgs)
        a = _cell(tmp_path, tiny_data, f"{mode}-a", mode=mode, images=rec)
        b = _cell(tmp_path, tiny_data, f"{mode}-b", mode=mode, manifest=_flip_test_labels(man))
        assert (a["best_epoch"], a["val_score"]) == (b["best_epoch"], b["val_score"])
        pa, pb = (pd.read_csv(r["predictions"]) for r in (a, b))
        np.testing.assert_array_equal(pa["prob_A"], pb["prob_A"])
        assert a["mean_auc"] + b["mean_auc"] == pytest.approx(1.0)  # flipped labels mirror the AUC
        first_test = next(i for i, r in enumerate(rec.log) if r in test_rows)
        assert not test_rows & set(rec.log[:first_test])
        assert all(r in test_rows for r in rec.log[first_test:])   # nothing trains or validates after it


def test_cells_are_deterministic_per_seed(tmp_path, tiny_data):
    """Same seed -> identical predictions (full mode: see the test above, whose paired runs must match
    exactly); another seed -> another labeled subset order and head init -> other predictions."""
    probs = lambda r: pd.read_csv(r["predictions"])[["prob_A", "prob_B"]].to_numpy()  # noqa: E731
    a, b = (_cell(tmp_path, tiny_data, f"lin{i}", seed=0) for i in range(2))
    np.testing.assert_array_equal(probs(a), probs(b))
    man, _ = tiny_data
    other = finetune_cell(tiny_config(), manifest_df=man,
                          images=ArrayImages(tiny_data[1]), budgets_df=budgets_for(man, seed=1), budget=40, seed=1,
                          out_dir=tmp_path / "seed1", feature_dir=tmp_path / "features")
    assert not np.array_equal(probs(a), probs(other))


def test_linear_features_are_encoded_once_and_reused(tmp_path, tiny_data):
    _, imgs = tiny_data
    first = RecordingImages(imgs)
    _cell(tmp_path, tiny_data, "b40", images=first, budget=40)
    assert len(first.log) == 40 + 24 + 24   # budget rows, val, test: once each
    again = RecordingImages(imgs)
    _cell(tmp_path, tiny_data, "b20", images=again, budget=20)   # nested budget, other seed of the head
    assert again.log == []
    assert len(list((tmp_path / "features").iterdir())) == 1


def test_pretrained_init_is_loaded_and_changes_features(tmp_path, tiny_data):
    torch.manual_seed(123)
    enc = build_encoder("resnet18")
    torch.save({"state_dict": {f"encoder.net.{k}": v for k, v in enc.net.state_dict().items()}}, tmp_path / "p.ckpt")
    r = _cell(tmp_path, tiny_data, "pre", init=str(tmp_path / "p.ckpt"))
    _cell(tmp_path, tiny_data, "rnd")
    assert len(list((tmp_path / "features").iterdir())) == 2   # one store per init
    val_probs = lambda res: pd.read_csv(tmp_path / res / "val_predictions.csv")[["prob_A", "prob_B"]]  # noqa: E731
    assert not np.allclose(val_probs("pre").to_numpy(), val_probs("rnd").to_numpy())
    assert torch.load(r["checkpoint"], weights_only=True)["init"] == str(tmp_path / "p.ckpt")


def test_full_cell_augments_training_batches_and_checkpoint_loads_into_a_plain_encoder(tmp_path, tiny_data):
    cfg = tiny_config(**{"finetune.class_weights": "true", "finetune.epochs": 2, "finetune.lr_grid": "[0.001]"})
    policy = augment_from_config(cfg)   # the modality-safe x-ray policy, 32 px views
    seen = []

    class Letterboxed(ArrayImages):
        """Images padded left and right: content in columns 8..23 (what a cache stores for a tall image)."""
        def content_box(self, i):
            return (0, 8, 32, 16)

    def augment(x, generator, boxes):
        seen.append(tuple(x.shape))
        assert boxes.tolist() == [[0, 8, 32, 16]] * len(x)   # each image's content box reaches the policy
        out = policy(x, generator, boxes)
        assert out.shape == x.shape and out.dtype == torch.float32 and not torch.equal(out, x)
        return out

    _, imgs = tiny_data
    r = _cell(tmp_path, tiny_data, "full", mode="full", cfg=cfg, augment=augment, images=Letterboxed(imgs))
    assert seen == [(16, 1, 32, 32)] * (2 * 2)   # 2 epochs x 2 full training batches; never val or test
    assert -1 <= r["best_epoch"] < 2 and np.isfinite(r["mean_auc"])   # -1: the probe start (LP-FT) won
    enc = build_encoder("resnet18")
    load_encoder_weights(r["checkpoint"], enc)
    saved = torch.load(r["checkpoint"], weights_only=True)["encoder"]
    for k, v in enc.net.state_dict().items():
        torch.testing.assert_close(v, saved[k])


def test_finetune_augmentation_crops_inside_the_content_box():
    """A letterboxed image (content = 1 in columns 8..23, padding 0): crops drawn inside the content box
    are nearly all content; the same policy without boxes sees half padding."""
    policy = augment_from_config(tiny_config())
    x = torch.zeros(64, 1, 32, 32)
    x[..., 8:24] = 1.0
    boxes = torch.tensor([[0, 8, 32, 16]] * 64)
    inside = policy(x, torch.Generator().manual_seed(0), boxes).mean().item()
    anywhere = policy(x, torch.Generator().manual_seed(0)).mean().item()
    assert inside > 0.85 and anywhere < 0.65, (inside, anywhere)


def test_full_fine_tuning_tries_each_learning_rate_and_keeps_the_best_on_val(tmp_path, tiny_data):
    """Every init gets one run per finetune.lr_grid value (the same trial budget); a random init trains its
    encoder at the full lr, a pretrained one at lr x finetune.encoder_lr_mult; the kept run is the best on val."""
    import json

    from medssl.finetune.run import full_trials

    cfg = tiny_config(**{"finetune.epochs": 2, "finetune.lr_grid": "[0.0001, 0.01]", "finetune.encoder_lr_mult": 0.1})
    assert full_trials(cfg, "random") == [{"lr": 1e-4, "encoder_lr_mult": 1.0}, {"lr": 1e-2, "encoder_lr_mult": 1.0}]
    assert [t["encoder_lr_mult"] for t in full_trials(cfg, "pre.pt")] == [0.1, 0.1]
    r = _cell(tmp_path, tiny_data, "search", mode="full", cfg=cfg)
    history = json.loads((tmp_path / "search" / "history.json").read_text())
    trials = history["history"]
    assert [t["lr"] for t in trials] == [1e-4, 1e-2]
    assert all([e["epoch"] for e in t["epochs"]] == [-1, 0, 1] for t in trials)   # -1: the probe start
    best = max(trials, key=lambda t: t["val_score"])
    assert json.loads(r["selected"])["lr"] == best["lr"] and r["val_score"] == best["val_score"]
    assert history["selected"]["epoch"] == best["best_epoch"] == r["best_epoch"]


def test_validation_labels_are_limited_to_the_budget_by_whole_patients(tmp_path, tiny_data):
    man, _ = tiny_data
    r = _cell(tmp_path, tiny_data, "b20", budget=20)
    val = pd.read_csv(tmp_path / "b20" / "val_predictions.csv", dtype={"patient_id": str})
    assert r["n_val_labeled"] == len(val) <= 20 and r["n_labels_total"] == 20 + len(val)
    all_val = man[man["split"] == "val"]
    assert len(val) >= 20 - 2        # 2 images per patient: the longest prefix of whole patients
    per_patient = all_val.groupby("patient_id").size()
    assert (val.groupby("patient_id").size() == per_patient.loc[val["patient_id"].unique()]).all()
    cfg = tiny_config(**{"study.val_labels": "all"})
    r_all = _cell(tmp_path, tiny_data, "b20all", budget=20, cfg=cfg)
    assert r_all["n_val_labeled"] == len(all_val)


def test_small_budgets_get_enough_epochs_for_the_minimum_optimizer_steps():
    from medssl.finetune.run import finetune_epochs

    cfg = tiny_config(**{"finetune.epochs": 8, "finetune.min_steps": 100, "finetune.batch_size": 64})
    assert finetune_epochs(cfg, 50) == 100      # one (partial) batch per epoch
    assert finetune_epochs(cfg, 250) == 34      # 3 full batches per epoch (drop_last): ceil(100 / 3)
    assert finetune_epochs(cfg, 5000) == 8      # plenty of steps already
    assert finetune_epochs(tiny_config(**{"finetune.epochs": 8}), 50) == 8   # min_steps 0: epochs as given


def test_long_small_budget_trials_validate_at_most_twelve_times_including_the_last_epoch(tmp_path, tiny_data):
    import json

    cfg = tiny_config(**{"finetune.epochs": 2, "finetune.min_steps": 30, "finetune.lr_grid": "[0.001]"})
    _cell(tmp_path, tiny_data, "long", mode="full", cfg=cfg, budget=20)   # 20 > batch 16: 1 step per epoch
    (trial,) = json.loads((tmp_path / "long" / "history.json").read_text())["history"]
    validated = [e["epoch"] for e in trial["epochs"] if e["epoch"] >= 0]   # -1: the probe start
    assert validated == list(range(2, 30, 3))          # every 3rd of 30 epochs: 10 passes, the last included


def test_full_fine_tuning_starts_from_the_fitted_probe_and_can_only_improve_on_it_on_val(tmp_path, tiny_data):
    """LP-FT: the head starts as the cell's logistic probe (same features, same val subset); the untouched
    start is candidate epoch -1 with exactly the linear cell's val score, so selection never ends below it."""
    import json

    cfg = tiny_config(**{"finetune.epochs": 2, "finetune.lr_grid": "[0.001]"})
    lin = _cell(tmp_path, tiny_data, "lin", cfg=cfg)
    full = _cell(tmp_path, tiny_data, "full", mode="full", cfg=cfg)
    (trial,) = json.loads((tmp_path / "full" / "history.json").read_text())["history"]
    start = trial["epochs"][0]
    assert start["epoch"] == -1 and start["val_mean_auc"] == pytest.approx(lin["val_score"])
    assert full["val_score"] >= lin["val_score"]
    plain = _cell(tmp_path, tiny_data, "plain", mode="full",
                  cfg=tiny_config(**{"finetune.epochs": 2, "finetune.lr_grid": "[0.001]", "finetune.head_init": "random"}))
    (trial,) = json.loads((tmp_path / "plain" / "history.json").read_text())["history"]
    assert [e["epoch"] for e in trial["epochs"]] == [0, 1] and plain["best_epoch"] >= 0


def test_an_init_of_another_architecture_is_built_from_its_exported_spec(tmp_path, tiny_data):
    """A study with ResNet inits can also hold a ViT encoder (e.g. MAE): its export-backbone JSON names the
    architecture, and the cell builds and records that one, not the study's model.arch."""
    import json

    from medssl.models.backbones import build_encoder

    vit = build_encoder("vit_tiny", 1, 32, patch_size=8, vit_depth=2)
    torch.save(vit.net.state_dict(), tmp_path / "vit.pt")
    (tmp_path / "vit.json").write_text(json.dumps({"arch": "vit_tiny", "in_channels": 1, "input_size": 32,
                                                   "patch_size": 8, "vit_depth": 2}))
    r = _cell(tmp_path, tiny_data, "vitcell", init=str(tmp_path / "vit.pt"))
    ckpt = torch.load(r["checkpoint"], weights_only=True)
    assert (ckpt["arch"], ckpt["patch_size"], ckpt["vit_depth"]) == ("vit_tiny", 8, 2)
    assert np.isfinite(r["mean_auc"])
