"""`run_analysis`: every analysis tool for one encoder on one split manifest, plus index.md.

Order: features of every train/val/test image (frozen encoder, eval mode; `medssl.finetune.features
.encode`, through a FeatureStore when `feature_dir` is given, e.g. the study's) -> kNN evaluation ->
retrieval -> kernels -> saliency -> embedding -> index.md (written last: its presence marks a
finished analysis). Output names are fixed (`FILES`); nothing in them or in the figures comes from
manifest paths or patient ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medssl import atomic
from medssl.analyze.common import label_texts, pick_queries
from medssl.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

#: The analysis steps, in run order.
STEPS = ("knn", "retrieval", "kernels", "saliency", "embedding")
#: Output file of each figure / table (relative to the output folder).
FILES = {"knn": "knn.md", "knn_json": "knn.json", "retrieval": "retrieval.png", "retrieval_json": "retrieval.json",
         "kernels": "kernels.png", "saliency": "saliency.png", "embedding": "embedding.png",
         "embedding_csv": "embedding.csv", "index": "index.md"}
SPLITS = ("train", "val", "test")


@dataclass
class AnalysisOptions:
    queries: int = 4                     # test images in the retrieval grid
    neighbours: int = 5                  # training neighbours shown per query
    saliency_images: int = 4             # test images in the saliency figure
    saliency_label: str | None = None    # class to explain (default: each image's top-scoring class)
    fast: bool = False                   # embedding by PCA only (no t-SNE)
    site_column: str | None = None       # manifest column of the site panel (default: embedding.SITE_COLUMNS)
    max_points: int = 2000               # images in the embedding (seeded subsample beyond)
    max_kernels: int = 64                # first-layer filters drawn per encoder
    seed: int | None = None              # query choice, subsample, t-SNE (default: cfg.seed)
    steps: Sequence[str] = STEPS


@dataclass
class AnalysisResult:
    out_dir: Path
    files: dict = field(default_factory=dict)          # step -> file name inside out_dir
    knn: dict | None = None
    kernel_tiles: dict = field(default_factory=dict)   # panel title -> tiles drawn
    saliency_methods: list = field(default_factory=list)
    saliency_model: str = ""
    embedding_method: str = ""
    embedding_site_column: str | None = None
    query_rows: np.ndarray | None = None               # manifest positions of the retrieval queries (in memory only)
    neighbour_rows: np.ndarray | None = None           # (Q, k) manifest positions, -1 where none
    saliency_rows: np.ndarray | None = None

    @property
    def index(self) -> Path:
        return self.out_dir / FILES["index"]


def encoder_description(init: str, seed: int) -> str:
    """How index.md names an encoder: the random init's seed, or the file's name and content hash (no folders)."""
    if init == "random":
        return f"random init (seed {seed})"
    from medssl.finetune.features import file_digest

    p = Path(init)
    digest = file_digest(p)[:12] if p.is_file() else "folder"
    return f"`{p.name}` (sha256 {digest})"


def short_name(path: str | Path) -> str:
    """An encoder file as figure titles name it: its folder and file name (runs/moco/encoder.pt -> moco/encoder.pt)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _device(cfg) -> str:
    from medssl.finetune.run import _device as device_of

    return device_of(cfg)


def _unit_images(images, rows) -> list[np.ndarray]:
    from medssl.finetune.data import to_unit_float

    return [to_unit_float(images[int(r)]) for r in rows]


def check_inputs(df: pd.DataFrame) -> None:
    """A split manifest with train, val and test rows, else ManifestError/SplitError saying what to run."""
    from medssl.finetune import data as fd

    if "split" not in df.columns:
        raise ManifestError("the manifest has no 'split' column; analysis needs a split manifest: run "
                            "`medssl split MANIFEST --out MANIFEST_SPLIT` and pass its output to --data")
    for s in SPLITS:
        fd.split_rows(df, s)


def run_analysis(cfg, encoder: str, manifest_df: pd.DataFrame, images, out_dir: str | Path, *,
                 classifier: str | Path | None = None, compare: Sequence[str] = (),
                 feature_dir: str | Path | None = None, options: AnalysisOptions | None = None,
                 name: str | None = None) -> AnalysisResult:
    """Run the analysis steps of `options` for `encoder` ("random" or a weights file) and write them into out_dir.

    manifest_df: the split manifest, row i = images[i]; classifier: a full fine-tuning cell's best.pt
    (Grad-CAM + occlusion), else occlusion on a logistic probe; compare: more encoders for the kernel grid.
    """
    from medssl.finetune import data as fd
    from medssl.finetune.run import build_init_encoder, feature_getter, images_fingerprint

    opts = options or AnalysisOptions()
    unknown = [s for s in opts.steps if s not in STEPS]
    if unknown:
        raise ConfigError(f"unknown analysis step(s) {unknown}; choose from {list(STEPS)}")
    seed = int(cfg.seed if opts.seed is None else opts.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = manifest_df.reset_index(drop=True)
    check_inputs(df)
    labels = fd.label_names(df, cfg.data.labels)
    tasks = list(cfg.evaluate.tasks or []) or None
    ft = cfg.finetune
    sets = {s: fd.make_set(df, fd.split_rows(df, s), labels, s, uncertainty=ft.uncertainty, blank=ft.blank)
            for s in SPLITS}
    device = _device(cfg)
    enc = build_init_encoder(cfg, encoder)
    store = None
    if feature_dir is not None:
        from medssl.finetune.features import FeatureStore, feature_key

        key, desc = feature_key(arch=cfg.model.arch, in_channels=cfg.model.in_channels,
                                input_size=cfg.model.input_size, init=encoder, init_seed=cfg.seed,
                                manifest_paths=df["path"].astype(str).tolist(),
                                images_fingerprint=images_fingerprint(images))
        store = FeatureStore(feature_dir, key, desc)
    get = feature_getter(cfg, enc, images, store, device)
    feats = {s: get(s, sets[s].rows) for s in SPLITS}
    texts = {s: label_texts(sets[s].labels_raw, labels) for s in SPLITS}
    result = AnalysisResult(out_dir=out_dir)
    title = name or ("random" if encoder == "random" else short_name(encoder))

    if "knn" in opts.steps:
        from medssl.analyze.knn import knn_evaluation, write_knn

        result.knn, _ = knn_evaluation(feats["train"], sets["train"], feats["val"], sets["val"], feats["test"],
                                       sets["test"], labels, ks=ft.knn_ks, tasks=tasks)
        write_knn(result.knn, out_dir)
        result.files.update(knn=FILES["knn"], knn_json=FILES["knn_json"])
        log.info("analysis %s: kNN mean test AUC %.4f", title, result.knn["mean_test_auc"])

    q_pos = pick_queries(texts["test"], max(opts.queries, opts.saliency_images), seed)
    if "retrieval" in opts.steps:
        _retrieval(result, opts, sets, feats, texts, labels, images, q_pos[:opts.queries])

    if "kernels" in opts.steps:
        from medssl.analyze.kernels import first_conv, plot_kernels

        panels = [(title, first_conv(enc)[1].weight)]
        if encoder != "random":
            panels.append((f"random init (seed {cfg.seed})", first_conv(build_init_encoder(cfg, "random"))[1].weight))
        for i, other in enumerate(compare, 1):
            weight = first_conv(build_init_encoder(cfg, str(other)))[1].weight
            panels.append((f"compare {i}: {short_name(other)}", weight))
        result.kernel_tiles = plot_kernels(panels, out_dir / FILES["kernels"], max_tiles=opts.max_kernels)
        result.files["kernels"] = FILES["kernels"]

    if "saliency" in opts.steps and opts.saliency_images > 0:
        _saliency(result, cfg, opts, enc, sets, feats, texts, labels, images, q_pos[:opts.saliency_images],
                  classifier, tasks, device)

    if "embedding" in opts.steps:
        _embedding(result, opts, df, sets, feats, texts, seed)

    write_index(result, title=title, encoder=encoder_description(encoder, cfg.seed), cfg=cfg, sets=sets,
                labels=labels, classifier=classifier)
    return result


# ----------------------------------------------------------------------------- steps
def _retrieval(result, opts, sets, feats, texts, labels, images, q_pos):
    from medssl.analyze.retrieval import nearest_neighbours, plot_retrieval, retrieval_records

    test, train = sets["test"], sets["train"]
    mean = feats["train"].mean(axis=0)
    idx, sim, skipped = nearest_neighbours(feats["test"][q_pos], test.patient_ids[q_pos], feats["train"],
                                           train.patient_ids, opts.neighbours, mean=mean)
    q_rows = test.rows[q_pos]
    n_rows = np.where(idx >= 0, train.rows[np.maximum(idx, 0)], -1)
    nbr_images = [[x for x in _unit_images(images, [r for r in row if r >= 0])] for row in n_rows]
    nbr_titles = [[f"{texts['train'][j]}\ncos {sim[i, r]:.3f}" for r, j in enumerate(idx[i]) if j >= 0]
                  for i in range(len(idx))]
    plot_retrieval(_unit_images(images, q_rows), [texts["test"][p] for p in q_pos], nbr_images, nbr_titles,
                   result.out_dir / FILES["retrieval"],
                   title="test queries (framed) and their nearest training images by cosine similarity; "
                         "same-patient images excluded")
    records = retrieval_records(test.labels_raw[q_pos], train.labels_raw, idx, sim, skipped, labels)
    agree = [n["same_labels"] for r in records for n in r["neighbours"]]
    atomic.write_json(result.out_dir / FILES["retrieval_json"], {
        "similarity": "cosine on features centred with the training mean", "gallery": "train split",
        "same_patient_excluded": True, "label_agreement": float(np.mean(agree)) if agree else None,
        "queries": records})
    result.files.update(retrieval=FILES["retrieval"], retrieval_json=FILES["retrieval_json"])
    result.query_rows, result.neighbour_rows = q_rows, n_rows


def _saliency(result, cfg, opts, enc, sets, feats, texts, labels, images, q_pos, classifier, tasks, device):
    import torch

    from medssl.analyze.saliency import (ProbeClassifier, choose_cam_block, gradcam, load_classifier, occlusion,
                                         plot_saliency, positive_unit)
    from medssl.finetune.data import image_batch

    test = sets["test"]
    rows = test.rows[q_pos]
    if classifier is not None:
        model, model_labels = load_classifier(classifier)
        what = "fine-tuned classifier"
    else:
        from medssl.finetune.probe import fit_linear_probe

        probe = fit_linear_probe(feats["train"], sets["train"], feats["val"], sets["val"], labels, tasks=tasks,
                                 Cs=cfg.finetune.probe_Cs, class_weights=cfg.finetune.class_weights)
        model, model_labels = ProbeClassifier(enc, probe.head(), cfg.model.input_size), list(labels)
        what = "frozen encoder + logistic probe"
    model = model.to(device).eval()
    x = image_batch(images, rows).to(device)
    with torch.no_grad():
        logits = model(x)
    if opts.saliency_label is not None:
        if opts.saliency_label not in model_labels:
            raise ConfigError(f"--saliency-label {opts.saliency_label!r} is not a label of the model: {model_labels}")
        target = np.full(len(rows), model_labels.index(opts.saliency_label))
    else:
        target = logits.argmax(dim=1).cpu().numpy()
    probs = torch.sigmoid(logits).cpu().numpy()
    maps = {}
    if classifier is not None:
        block = choose_cam_block(model, tuple(x.shape[-2:]))
        if block is not None:
            name, layer, size = block
            maps[f"Grad-CAM ({name}, {size[0]}x{size[1]})"] = gradcam(model, x, target, layer)
    maps["occlusion"] = positive_unit(occlusion(model, x, target))
    titles = [f"true: {texts['test'][p]}\nexplained: {model_labels[t]} p={probs[i, t]:.2f}"
              for i, (p, t) in enumerate(zip(q_pos, target))]
    plot_saliency(_unit_images(images, rows), titles, maps, result.out_dir / FILES["saliency"],
                  title=f"saliency of the {what} (red = evidence for the explained class)")
    result.saliency_methods = [m.split(" (")[0] for m in maps]
    result.saliency_rows = rows
    result.files["saliency"] = FILES["saliency"]
    result.saliency_model = what


def _embedding(result, opts, df, sets, feats, texts, seed):
    from medssl.analyze.embedding import embed_2d, plot_embedding, site_column

    x = np.concatenate([feats[s] for s in SPLITS])
    lab = np.asarray([t for s in SPLITS for t in texts[s]], dtype=object)
    rows = np.concatenate([sets[s].rows for s in SPLITS])
    split = np.asarray([s for s in SPLITS for _ in range(len(sets[s]))], dtype=object)
    if len(x) > opts.max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), opts.max_points, replace=False))
        x, lab, rows, split = x[keep], lab[keep], rows[keep], split[keep]
    col = site_column(df, opts.site_column)
    site = df[col].astype(str).to_numpy()[rows] if col else None
    coords, method = embed_2d(x, seed=seed, fast=opts.fast)
    plot_embedding(coords, list(lab), None if site is None else list(site), result.out_dir / FILES["embedding"],
                   method=method, site_name=col)
    table = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "split": split, "labels": lab})
    if site is not None:
        table["site"] = site
    atomic.write_table(result.out_dir / FILES["embedding_csv"], table)
    result.embedding_method = method
    result.embedding_site_column = col
    result.files.update(embedding=FILES["embedding"], embedding_csv=FILES["embedding_csv"])


# ----------------------------------------------------------------------------- index.md
READING = {
    "retrieval": "Each row: a test image (framed) and its most similar training images (cosine similarity of "
                 "frozen features), images of the query's own patient excluded. Neighbours sharing the query's "
                 "labels mean the features group findings; neighbours that only share brightness, size or "
                 "text markers mean they group acquisition. `retrieval.json` has the label agreement.",
    "kernels": "The first convolution's filters (mid-grey 0, each filter scaled to its own range). A random init "
               "is salt and pepper; a trained encoder shows smooth edge / blob / gradient detectors. Filters that "
               "still look like the random init's learned little in the first layer.",
    "saliency": "Red = the pixels the explained score depends on. Grad-CAM (fine-tuned CNN classifier): "
                "gradient-weighted activations of the last conv block, coarse (one value per feature-map cell). "
                "Occlusion: how much the score drops when a grey patch covers a region. Evidence on the lungs is "
                "plausible; on corners, borders, text markers or devices it is a shortcut.",
    "embedding": "The same images twice: coloured by label and by site/source. Clusters by label are what a "
                 "probe can use; points that separate by site (scanner, hospital, distributor folder) more than "
                 "by label mean the features encode the source - a shortcut risk when sites differ in prevalence.",
}


def write_index(result: AnalysisResult, *, title: str, encoder: str, cfg, sets, labels, classifier) -> Path:
    from medssl.analyze.knn import knn_table

    f = result.files
    md = [f"# Feature analysis: {title}", "",
          f"Encoder: {encoder}; {cfg.model.arch}, input {cfg.model.input_size} px. Data: "
          f"{len(sets['train'])} train / {len(sets['val'])} val / {len(sets['test'])} test images; labels "
          f"{', '.join(labels)}.", ""]
    if result.knn is not None:
        md += ["## kNN evaluation", "",
               f"Cosine kNN probe (the study's `knn` mode) on all {result.knn['n_train']} training images, k per "
               f"label chosen on val, test AUC ([{f['knn_json']}]({f['knn_json']})):", "", knn_table(result.knn), ""]
    sections = [("retrieval", "Nearest-neighbour retrieval"), ("kernels", "First-layer kernels"),
                ("saliency", "Saliency"), ("embedding", "2-D embedding")]
    for step, heading in sections:
        if step not in f:
            continue
        md += [f"## {heading}", "", f"![{heading}]({f[step]})", "", READING[step]]
        if step == "kernels":
            md += ["", "Panels: " + "; ".join(f"{t} ({n} filters)" for t, n in result.kernel_tiles.items()) + "."]
        if step == "saliency":
            md += ["", f"Model: {result.saliency_model}"
                   + (" (`--classifier`)" if classifier is not None else " (no `--classifier` given)")
                   + f"; maps: {', '.join(result.saliency_methods)}."]
        if step == "embedding":
            md += ["", f"Method: {result.embedding_method}; site column: "
                   f"{result.embedding_site_column or 'none'}; coordinates in "
                   f"[{f['embedding_csv']}]({f['embedding_csv']})."]
        md.append("")
    md += ["## Files", ""] + [f"- [{v}]({v})" for k, v in f.items()] + [""]
    f["index"] = FILES["index"]
    return atomic.write_text(result.out_dir / FILES["index"], "\n".join(md))
