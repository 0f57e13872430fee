"""The model card written next to an exported model: `model_card.json` (data) and `model_card.md` (prose).

What it holds, and where each part comes from (absent sources leave the part null, never guessed):

- architecture, input contract and normalisation: the model itself (`medssl.models.export.LoadedModel`);
- labels, mode, label budget: best.pt, plus the cell's result (`<cell>.json` of a study, or
  `result.json` of `medssl finetune`) for the budget and the numbers of labeled train/val images;
- test AUC with confidence intervals: `metrics.json` beside best.pt (`medssl.evaluate`);
- pretraining data: counts only (images, patients, epochs, samples seen) from `pretrain_summary.json`
  beside the init / encoder file (or one folder up) and the encoder's export JSON;
- medssl version; the SHA-256 of the config text (`--config FILE`, else a `config.yaml` in the model's
  folder or up to two folders above) and of the source weights file.

No identifiers: file names are given without their folders, and nothing per patient or image is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medssl import __version__

CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
PREPROCESSING = ("grayscale image read as medssl.io does (float32, intensities scaled to [0, 1], bright = dense: "
                 "MONOCHROME1 inverted, DICOM windowing applied), fitted into a square keeping its aspect "
                 "(long side resized, zero padding centred: medssl.cache.resize.resize_pad) and resized to "
                 "S x S (bilinear, antialiased)")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def find_config(model_path: Path, explicit: str | Path | None = None) -> Path | None:
    """The config file to hash: `explicit`, else config.yaml in the model's folder or up to two above."""
    if explicit is not None:
        return Path(explicit)
    folder = Path(model_path).resolve().parent
    for d in (folder, folder.parent, folder.parent.parent):
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
    return None


def cell_result(best_pt: Path) -> dict | None:
    """A cell's result row: a study's cells/<key>.json (beside the cell folder), or result.json inside it."""
    folder = Path(best_pt).parent
    return _read_json(folder.parent / f"{folder.name}.json") or _read_json(folder / "result.json")


def pretraining_summary(weights: str | Path | None) -> dict | None:
    """Counts of the pretraining that produced `weights`: pretrain_summary.json beside it (or one folder
    up) merged with its export JSON; None when neither exists (e.g. random or foreign weights)."""
    if not weights or weights == "random":
        return None
    p = Path(weights)
    summary = _read_json(p.parent / "pretrain_summary.json") or _read_json(p.parent.parent / "pretrain_summary.json")
    spec = _read_json(p.with_suffix(".json")) if p.suffix != ".json" else None
    out = {}
    if summary:
        keep = ("method", "pairs", "arch", "input_size", "n_images", "n_patients", "pretrain_splits", "epochs",
                "steps", "samples_seen", "final_loss", "chance_loss", "feat_std")
        out.update({k: summary.get(k) for k in keep if k in summary})
    if spec:
        for k_out, k_in in (("method", "ssl_method"), ("epochs", "epoch"), ("steps", "global_step")):
            if out.get(k_out) is None and spec.get(k_in) is not None:
                out[k_out] = spec[k_in]
    return out or None


def _evaluation(metrics: dict | None) -> dict | None:
    if not metrics:
        return None
    classes = {}
    for lbl, c in (metrics.get("classes") or {}).items():
        classes[lbl] = {k: c.get(k) for k in ("auc", "auc_ci_low", "auc_ci_high", "ap", "n_pos", "n_neg")
                        if k in c}
    boot = metrics.get("bootstrap") or {}
    return {"split": "test", "mean_auc": metrics.get("mean_auc"), "mean_auc_ci_low": metrics.get("mean_auc_ci_low"),
            "mean_auc_ci_high": metrics.get("mean_auc_ci_high"), "ci": boot.get("ci"),
            "bootstrap": boot or None, "tasks_in_mean": metrics.get("tasks_in_mean"),
            "n_images": metrics.get("n_images"), "n_patients": metrics.get("n_patients"), "classes": classes}


def card_data(model, *, files: dict, parity: dict, config: str | Path | None = None) -> dict:
    """The model card as a JSON-safe dict (see the module docstring)."""
    from medssl.ssl.checkpoint import monai_constructor

    classifier = model.kind == "classifier"
    source = Path(model.source)
    cfg_path = find_config(source, config)
    ckpt = model.checkpoint or {}
    result = cell_result(source) if classifier else None
    metrics = _read_json(source.parent / "metrics.json") if classifier else None
    budget = None
    if classifier:
        budget = {"budget": (result or {}).get("budget"), "seed": ckpt.get("seed", (result or {}).get("seed")),
                  "n_labeled": (result or {}).get("n_labeled"), "n_val_labeled": (result or {}).get("n_val_labeled"),
                  "n_labels_total": (result or {}).get("n_labels_total")}
    net = getattr(model.module, "net", None)
    vit = {}
    if hasattr(net, "patch_embedding"):   # a ViT: its patch grid and depth are part of its constructor
        vit = {"patch_size": int(net.patch_embedding.patch_embeddings.kernel_size[0]), "vit_depth": len(net.blocks)}
    try:
        monai = monai_constructor(model.arch, model.in_channels, input_size=model.input_size, **vit)
    except Exception:  # an architecture without a recorded constructor: the card still describes the rest
        monai = None
    init_name = None if model.init is None else ("random" if model.init == "random" else Path(model.init).name)
    s = model.input_size
    return {
        "model_card_version": 1,
        "kind": model.kind,
        "architecture": {"arch": model.arch, "in_channels": model.in_channels, "feature_dim": model.feature_dim,
                         "monai": monai},
        "input": {"name": "image", "shape": ["batch", 1, s, s], "dtype": "float32", "range": [0.0, 1.0],
                  "input_size": s, "preprocessing": PREPROCESSING},
        "normalisation": {"inside_model": True, "mean": model.mean, "std": model.std,
                          "formula": "(x - mean) / std"
                          + (", then the grey channel repeated x3" if model.in_channels == 3 else "")},
        "output": ({"name": "probabilities", "shape": ["batch", len(model.labels)], "activation": "sigmoid",
                    "labels": list(model.labels)} if classifier else
                   {"name": "features", "shape": ["batch", model.feature_dim], "activation": None, "labels": None}),
        "training": ({"mode": model.mode, "init": init_name, "init_format": model.init_format,
                      "selected": _maybe_json(ckpt.get("selected")), "best_epoch": ckpt.get("best_epoch"),
                      "label_budget": budget} if classifier else
                     {"weights": init_name, "weights_format": model.init_format}),
        "evaluation": _evaluation(metrics),
        "pretraining": pretraining_summary(model.init),
        "medssl_version": __version__,
        "config": ({"file": cfg_path.name, "sha256": sha256_file(cfg_path)} if cfg_path and cfg_path.is_file()
                   else None),
        "source": {"file": source.name, "sha256": sha256_file(source)},
        "files": {fmt: Path(p).name for fmt, p in files.items()},
        "export_check": {fmt: {"max_abs_diff": d, "inputs": "uniform random, batches of 1 and 3"}
                         for fmt, d in parity.items()},
    }


def _maybe_json(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def card_markdown(card: dict) -> str:
    """model_card.md: the same facts as model_card.json, readable."""
    a, i, n, o = card["architecture"], card["input"], card["normalisation"], card["output"]
    title = "classifier" if card["kind"] == "classifier" else "encoder"
    md = [f"# Model card: medssl {a['arch']} {title}", "",
          "## Model", "",
          f"- architecture: MONAI {a['arch']}, {a['in_channels']} input channel(s), {a['feature_dim']} features",
          "- files: " + ", ".join(f"`{f}` ({fmt})" for fmt, f in card["files"].items()),
          f"- input `{i['name']}`: float32 (batch, 1, {i['input_size']}, {i['input_size']}), values in [0, 1]",
          f"- normalisation inside the model: {n['formula']} with mean {n['mean']:g}, std {n['std']:g}",
          f"- output `{o['name']}`: " + (f"sigmoid probabilities (batch, {len(o['labels'])}), one per label"
                                          if o["labels"] else f"features (batch, {a['feature_dim']})"),
          "", "Preprocessing the model expects: " + i["preprocessing"] + ".", ""]
    if o["labels"]:
        md += ["Labels (output order): " + ", ".join(f"`{x}`" for x in o["labels"]), ""]
    t = card["training"]
    md += ["## Training", ""]
    if card["kind"] == "classifier":
        b = t.get("label_budget") or {}
        fmt = f" ({t['init_format']})" if t.get("init_format") else ""
        named = f"budget {b['budget']}, " if b.get("budget") is not None else ""
        md += [f"- mode: {t['mode']}; init: {t['init']}{fmt}",
               f"- label budget: {named}seed {_fmt(b.get('seed'))}: {_fmt(b.get('n_labeled'))} labeled "
               f"training images, {_fmt(b.get('n_val_labeled'))} labelled validation images",
               f"- selected on validation: {json.dumps(t.get('selected'))}", ""]
    else:
        md += [f"- weights: {t.get('weights')} ({t.get('weights_format')})", ""]
    e = card["evaluation"]
    md += ["## Evaluation (test split)", ""]
    if e:
        ci = e.get("ci")
        md += [f"Mean AUC {_fmt(e['mean_auc'])} [{_fmt(e['mean_auc_ci_low'])}, {_fmt(e['mean_auc_ci_high'])}] "
               f"({_fmt(ci, 2) if ci else '?'} CI, patient bootstrap) over {e.get('tasks_in_mean')}; "
               f"{_fmt(e.get('n_images'))} images of {_fmt(e.get('n_patients'))} patients.", "",
               "| label | AUC | CI low | CI high | positives | negatives |", "|---|---|---|---|---|---|"]
        md += [f"| {lbl} | {_fmt(c.get('auc'))} | {_fmt(c.get('auc_ci_low'))} | {_fmt(c.get('auc_ci_high'))} | "
               f"{_fmt(c.get('n_pos'))} | {_fmt(c.get('n_neg'))} |" for lbl, c in e["classes"].items()]
        md += [""]
    else:
        md += ["No metrics.json beside the model: not evaluated here.", ""]
    p = card["pretraining"]
    md += ["## Pretraining data (counts only)", ""]
    md += ([f"- {k}: {v}" for k, v in p.items()] if p else ["No pretraining summary found (random, foreign or "
                                                             "unrecorded weights)."]) + [""]
    cfg = card["config"]
    md += ["## Provenance", "",
           f"- medssl {card['medssl_version']}",
           f"- config: {cfg['file']} sha256 {cfg['sha256']}" if cfg else "- config: none found (pass --config)",
           f"- source: {card['source']['file']} sha256 {card['source']['sha256']}"]
    md += [f"- {fmt} export checked against PyTorch: max abs diff "
           + ("not measured" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.2e}") + f" ({c['inputs']})"
           for fmt, c in card["export_check"].items()]
    return "\n".join(md) + "\n"


def write_model_card(model, out_dir: str | Path, *, files: dict, parity: dict,
                     config: str | Path | None = None) -> tuple[Path, Path]:
    """Write model_card.json and model_card.md into out_dir (atomically); returns (md, json)."""
    from medssl import atomic
    from medssl.evaluate import json_safe

    card = card_data(model, files=files, parity=parity, config=config)
    out_dir = Path(out_dir)
    js = atomic.write_json(out_dir / CARD_JSON, json_safe(card))
    md = atomic.write_text(out_dir / CARD_MD, card_markdown(card))
    return md, js
