"""`medssl demo`: the whole pipeline end to end, in minutes on a CPU.

Default data: the embedded real subset of the Kermany pediatric chest X-rays. `--data MANIFEST`
points the same steps at any manifest in medssl's schema; `--phantom N` at N synthetic DICOM
patients (the DICOM path). Each step skips work already done, so a rerun resumes.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl demo                                   # embedded Kermany subset -> medssl-demo/study/report.md
  medssl demo --out /tmp/demo --seeds 0,1,2 --budgets 50,100,250
  medssl demo --data /data/kermany_full/manifest.csv --out runs/kermany-full
  medssl demo --phantom 60 --out /tmp/phantom-demo  # synthetic DICOM chest phantoms through the DICOM reader

Steps: manifest (pseudonymised) -> patient split + nested label budgets -> decoded cache ->
pretrain MoCo v2 on MICLe pairs and SimCLR on instance pairs -> fine-tune random and pretrained
encoders (linear probe and full) at each budget and seed -> evaluate (AUC, patient bootstrap CIs)
-> report (results.csv, label_efficiency.png, class_gains.png, report.md)."""

KERMANY_NOTES = """\
The embedded data are a real subset of the Kermany pediatric chest X-ray set (Guangzhou Women and
Children's Medical Center, ages 1-5; CC BY 4.0, doi:10.17632/rscbjbr9sj.2): {n_images} images of
{n_patients} patients, one finding (pneumonia, with a bacterial/viral subtype).
- Small, single-centre, pediatric: AUCs here say nothing about adult CheXpert-style findings, and
  confidence intervals are wide. Differences between inits at one budget are often within noise;
  read the paired comparison and the seed spread before concluding anything.
- The distributor squashed every image to 224x224 (aspect ratio not kept) and re-encoded it as
  JPEG; the embedded copy is further reduced to 128x128 grayscale.
- Patient ids come from file names (the community convention, not documented by the data
  authors); every image of one file-name id (personN, IM-XXXX) is one patient, whatever its
  subtype or distributor folder, so no child can straddle the splits.
- The distributor's train/test folders share such patient ids, so medssl ignores them and splits
  by patient itself (kept as `source_split` in the manifest).
- The demo pretrains for ~20k two-view samples at 64 px on the ~980 non-test images (train + val,
  labels unread): a CPU-sized run on a tiny archive. It shows whether pretraining on this archive
  helps at these budgets - read the paired differences - not what pretraining on a hospital's
  hundreds of thousands of studies buys."""

GENERIC_NOTES = """\
{n_images} images of {n_patients} patients; labels: {labels}. Splits are by patient. With few test
patients the bootstrap confidence intervals are wide; a short CPU pretraining schedule shows the
pipeline end to end, not what pretraining on a large archive buys."""

#: Label budgets of the seed study, plus smaller ones for small data sets.
BUDGET_LADDER = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def register(subparsers) -> None:
    from medssl.commands.common import add_config_args

    p = subparsers.add_parser(
        "demo", help="run the whole pipeline end to end on the embedded data (or --data / --phantom)",
        description="Manifest -> split -> cache -> pretrain (MoCo v2 + MICLe, SimCLR) -> fine-tune -> "
                    "evaluate -> label-efficiency report, sized to finish in minutes on a laptop CPU.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="MANIFEST", help="a manifest in medssl's schema (paths relative to it)")
    src.add_argument("--phantom", type=int, metavar="N", help="generate N synthetic DICOM patients and use them")
    p.add_argument("--out", default="medssl-demo", help="output folder (default: medssl-demo)")
    p.add_argument("--budgets", help="comma-separated label budgets (counts or fractions); default: scaled to the data")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds for the labeled subsets (default: 0,1,2)")
    p.add_argument("--size", type=int, default=128, help="cache image size in pixels (default: 128)")
    p.add_argument("--input-size", type=int, default=64, help="network input size in pixels (default: 64)")
    p.add_argument("--arch", default="resnet18", help="encoder architecture (default: resnet18)")
    p.add_argument("--pretrain-epochs", default="auto",
                   help="pretraining epochs per method; auto (default): enough for trainer.min_samples "
                        f"({DEMO_MIN_SAMPLES:,}) two-view samples")
    p.add_argument("--time-budget", type=float, metavar="MIN",
                   help="minutes per pretraining run: epochs set from a measured step time (overrides auto)")
    p.add_argument("--pretrain-seeds", default="0",
                   help="comma-separated seeds; each method is pretrained once per seed, so the report measures "
                        "init variance (default: 0)")
    p.add_argument("--finetune-epochs", type=int, default=DEMO_FINETUNE_EPOCHS,
                   help=f"full fine-tuning epochs per learning-rate trial (default: {DEMO_FINETUNE_EPOCHS})")
    p.add_argument("--methods", default=DEMO_METHODS,
                   help=f"pretraining runs, each METHOD[-micle] (default: {DEMO_METHODS})")
    p.add_argument("--modes", default="linear,knn,full",
                   help="fine-tuning modes: linear (logistic probe), knn, full (default: all three)")
    p.add_argument("--keep-ids", action="store_true", help="do not pseudonymise patient ids (not recommended)")
    add_config_args(p, config_help="optional YAML applied before the demo's own settings (--set values win over both)")
    p.set_defaults(func=run)


def demo_budgets(n_train: int) -> list[int]:
    """Three budgets from the ladder that fit in the training set (<= 80% of it, to keep them distinct)."""
    fitting = [b for b in BUDGET_LADDER if b <= 0.8 * n_train]
    if len(fitting) < 3:
        base = max(n_train // 8, 2)
        return sorted({base, max(2 * base, base + 1), max(min(4 * base, n_train), base + 2)})
    return fitting[-3:]


#: Per-method pretraining settings of the demo (batch 64, 64 px, ~20k two-view samples).
#: MoCo v2 at its reference lr 0.03 (He et al.; 0.06 drives it towards collapse on this data), a
#: faster key-encoder EMA than ImageNet's 0.999 because the run is a few hundred steps; SimCLR and
#: BYOL at 0.06 with SGD + cosine; the EMA of BYOL's target ramps from 0.99 to 1.
METHOD_SETTINGS = {
    "mocov2": ["optim.lr=0.03", "ssl.momentum=0.99"],
    "simclr": ["optim.lr=0.06"],
    "byol": ["optim.lr=0.06", "ssl.momentum=0.99"],
}
DEMO_BATCH = 64
DEMO_MIN_SAMPLES = 20_000
DEMO_FINETUNE_EPOCHS = 3
DEMO_FINETUNE_MIN_STEPS = 9
#: SimCLR on MICLe pairs: on the embedded data it was the one method whose features beat the random-init
#: baseline (kNN +0.057 [0.016, 0.098] at 100 labels; 20k samples, 64 px); MoCo v2 on MICLe pairs collapsed
#: there (feat_std 0.011, loss 5.51 vs chance 5.55) and BYOL tied random. Add others with --methods.
DEMO_METHODS = "simclr-micle"


def method_settings(method: str) -> list[str]:
    return list(METHOD_SETTINGS.get(method, []))


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def run(args) -> int:
    import json
    import logging
    import time
    from pathlib import Path

    from medssl.config import load_config

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = logging.getLogger("medssl.demo")

    manifest_path, notes = _manifest(args, out)
    split_path, n_train = _split(manifest_path, out)
    budgets = _parse_budgets(args.budgets) if args.budgets else demo_budgets(n_train)
    seeds = _csv_ints(args.seeds)
    log.info("demo: %d training images; budgets %s; seeds %s", n_train, budgets, seeds)

    pretrain_seeds = _csv_ints(args.pretrain_seeds)
    base = [
        f"data.manifest={split_path}",
        f"cache.dir={out / f'cache-{args.size}'}",
        f"cache.size={args.size}",
        f"model.arch={args.arch}",
        f"model.input_size={args.input_size}",
        f"finetune.epochs={args.finetune_epochs}",
        f"study.output_dir={out / 'study'}",
        f"study.budgets={budgets}",
        f"study.seeds={seeds}",
        f"study.modes=[{args.modes}]",
    ]
    # Pretraining uses every image outside the test split (train + val; labels are never read):
    # the unlabelled archive of the demo, as a hospital's would be larger than its labelled set.
    demo_defaults = [
        f"trainer.batch_size={DEMO_BATCH}", "trainer.num_workers=0", "trainer.devices=1", "trainer.log_every_n_steps=5",
        "trainer.progress_bar=false", "ssl.proj_hidden=512", "optim.warmup_epochs=1",
        f"trainer.min_samples={DEMO_MIN_SAMPLES}", "data.pretrain_splits=[train, val]",
        "finetune.batch_size=64", "finetune.lr_grid=[0.00003, 0.0001]", f"finetune.min_steps={DEMO_FINETUNE_MIN_STEPS}",
        "evaluate.bootstrap=500",
    ]
    epochs = [f"trainer.max_epochs={args.pretrain_epochs}"]
    if args.time_budget:
        epochs.append(f"trainer.time_budget_min={args.time_budget}")
    inits: dict = {"random": "random"}
    for run_name in [m for m in args.methods.split(",") if m]:
        method, _, pairs = run_name.partition("-")
        # the user's --set values come last so they win over the method's demo settings
        settings = [f"ssl.method={method}", f"ssl.pairs={pairs or 'instance'}", *method_settings(method),
                    *args.overrides]
        inits[run_name] = {"pretrain": dict(item.split("=", 1) for item in settings)}
    cfg = load_config(args.config, demo_defaults + base + epochs + [
        f"study.inits={json.dumps(inits)}", f"study.pretrain_seeds={pretrain_seeds}"] + list(args.overrides))
    from medssl.study import run_study

    results, report = run_study(cfg, data_notes=notes)
    _print_headline(report)
    print(f"\nmedssl demo: done in {time.perf_counter() - t0:.0f} s")
    print(f"medssl demo: report   {report}")
    print(f"medssl demo: results  {report.parent / 'results.csv'}")
    print(f"medssl demo: plots    {report.parent / 'label_efficiency.png'}, {report.parent / 'class_gains.png'}")
    return 0


def _parse_budgets(text: str) -> list:
    from medssl.splits import parse_budgets

    return parse_budgets(text)


def _manifest(args, out):
    """Write out/manifest.csv from the chosen source; return its path and the report's data notes."""
    from pathlib import Path

    from medssl.manifest import build, load, save

    path = out / "manifest.csv"
    if args.data:
        df = load(args.data)
        already = df["patient_id"].astype(str).str.startswith("pid-").all()
        if not args.keep_ids and not already:  # a manifest built by medssl is pseudonymised already
            from medssl.manifest.pseudonym import pseudonymise, resolve_salt

            df = pseudonymise(df, resolve_salt())
    elif args.phantom:
        df = _phantom_manifest(args, out)
    else:
        from medssl.data import embedded_kermany_dir

        df = build("kermany", embedded_kermany_dir(), keep_ids=args.keep_ids)
    save(df, path)
    from medssl.manifest.schema import label_columns

    facts = dict(n_images=len(df), n_patients=df["patient_id"].nunique(), labels=", ".join(label_columns(df.columns)))
    notes = (GENERIC_NOTES if (args.data or args.phantom) else KERMANY_NOTES).format(**facts)
    print(f"medssl demo: manifest {path} ({facts['n_images']} images, {facts['n_patients']} patients)")
    return Path(path), notes


def _phantom_manifest(args, out):
    import pandas as pd

    from medssl.atomic import write_table
    from medssl.data.phantom import write_phantoms
    from medssl.manifest import build

    root = out / "phantom"
    truth = write_phantoms(root, n_patients=args.phantom, size=max(args.size * 2, 128), seed=0)
    findings = [c for c in ("Cardiomegaly", "Pleural Effusion", "Consolidation") if c in truth.columns]
    labels = out / "phantom_labels.csv"
    write_table(labels, pd.DataFrame({"path": truth["path"], **{c: truth[c] for c in findings}}))
    return build("dicom-dir", root, labels=labels, keep_ids=args.keep_ids)


def _split(manifest_path, out):
    from medssl.manifest import load, save
    from medssl.splits import patient_split

    split_path = out / "manifest.split.csv"
    if not split_path.is_file():
        df = patient_split(load(manifest_path), val=0.15, test=0.25, seed=0)
        save(df, split_path)
    df = load(split_path)
    counts = df.groupby("split")["patient_id"].agg(["size", "nunique"])
    print("medssl demo: split by patient  " + ", ".join(
        f"{s}: {int(r['size'])} images / {int(r['nunique'])} patients" for s, r in counts.iterrows()))
    return split_path, int((df["split"] == "train").sum())


def _print_headline(report):
    """Print the study's summary and paired tables (from summary.csv / paired.csv beside the report)."""
    import pandas as pd

    from medssl.study.report import headline_table, paired_table

    summary = pd.read_csv(report.parent / "summary.csv", dtype={"budget": str})
    paired = pd.read_csv(report.parent / "paired.csv", dtype={"budget": str})
    print("\nmean test AUC [95% CI incl. label-subset variance] by init, mode and labeled images:\n")
    print(headline_table(summary))
    print("\npretrained init minus random init, paired over test patients and label subsets [95% CI], p:\n")
    print(paired_table(paired))
