"""`medssl manifest build | validate | summary`: one row per image, pseudonymised ids."""

from __future__ import annotations

import argparse

FORMAT_NAMES = ("chexpert", "mimic-cxr-jpg", "nih-cxr14", "dicom-dir", "nifti-dir", "image-dir", "kermany")

EXAMPLES = """examples:
  medssl manifest build --format chexpert /data/CheXpert-v1.0-small --out chexpert.csv
  medssl manifest build --format nih-cxr14 /data/nih --out nih.parquet --no-verify
  medssl manifest build --format dicom-dir /pacs/export --out cxr.csv --labels labels.csv \\
      --on-error skip --report skipped.csv
  medssl manifest build --format image-dir ./pngs --out pngs.csv --patient-regex '^(?P<patient>\\d+)_'
  medssl manifest build --format kermany "$(python -c 'import medssl.data as d; print(d.embedded_kermany_dir())')" \\
      --out kermany.csv
  medssl manifest validate chexpert.csv --verify-files
  medssl manifest summary chexpert.csv

Patient/study ids are replaced by salted pseudonyms (salt: MEDSSL_SALT, else ~/.config/medssl/salt,
created on first use; keep it to get the same pseudonyms next time) unless --keep-ids. Paths are
relative to the data root (default: the source folder), which is recorded in <out stem>.meta.json.
Schema and format mappings: data_manifests/README.md."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "manifest", help="build, validate or summarise an image manifest",
        description="Turn a data set (CheXpert, MIMIC-CXR-JPG, NIH ChestX-ray14, Kermany, or folders of "
                    "DICOM / NIfTI / PNG files) into a manifest: one row per image with path, "
                    "pseudonymised patient and study ids, view, modality and label columns.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    b = sub.add_parser("build", help="build a manifest from a source data set",
                       description="Build, pseudonymise, validate and write a manifest; prints a summary.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("source", help="data set folder (or its label CSV for table formats)")
    b.add_argument("--format", "-f", required=True, choices=FORMAT_NAMES, help="source layout")
    b.add_argument("--out", "-o", required=True, help="manifest to write (.csv, .csv.gz or .parquet)")
    b.add_argument("--data-root", help="folder the paths are made relative to (default: the source folder)")
    b.add_argument("--no-verify", dest="verify_files", action="store_false",
                   help="do not check that every image file exists (table formats)")
    b.add_argument("--keep-ids", action="store_true",
                   help="keep RAW patient/study ids (PHI!) instead of salted pseudonyms")
    b.add_argument("--labels", help="labels CSV for dicom-dir/nifti-dir/image-dir: a `path` column "
                                    "(relative to SOURCE) or `study_id`, then one column per label")
    b.add_argument("--patient-regex", help="regex on file names giving the patient (named group "
                                           "`patient` or group 1; optional group `study`)")
    b.add_argument("--modality", help="modality code where the source does not say (e.g. DX, CT, MR)")
    b.add_argument("--view", help="view where the source does not say (e.g. PA, FRONTAL)")
    b.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="unreadable or missing files: stop (default) or leave them out and list them")
    b.add_argument("--report", help="CSV listing skipped files (path, reason); default with --on-error "
                                    "skip: <out stem>.skipped.csv")
    b.set_defaults(func=run_build)

    v = sub.add_parser("validate", help="check a manifest (schema, labels, duplicates, leakage, files)",
                       description="Exit 0 when the manifest is valid, 2 with the problem and its fix.")
    v.add_argument("manifest", help="manifest CSV/Parquet")
    v.add_argument("--verify-files", action="store_true", help="also check every image exists")
    v.add_argument("--data-root", help="where paths resolve (default: from the manifest's sidecar, else "
                                       "its folder)")
    v.set_defaults(func=run_validate)

    s = sub.add_parser("summary", help="print counts and label prevalence (no ids)",
                       description="Images, patients, studies, views, splits and per-label positive / "
                                   "negative / uncertain / blank counts.")
    s.add_argument("manifest", help="manifest CSV/Parquet")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=run_summary)


def run_build(args) -> int:
    from pathlib import Path

    import medssl.manifest as manifest
    from medssl.manifest.table import base_name

    report = args.report
    if report is None and args.on_error == "skip":
        report = Path(args.out).with_name(f"{base_name(args.out)}.skipped.csv")
    df = manifest.build(args.format, args.source, data_root=args.data_root, verify_files=args.verify_files,
                        keep_ids=args.keep_ids, on_error=args.on_error, report=report,
                        labels=args.labels, patient_regex=args.patient_regex, modality=args.modality,
                        view=args.view)
    manifest.save(df, args.out, validate=False)  # build() validated it
    print(f"wrote {args.out} (data root {df.attrs['data_root']})")
    if df.attrs.get("skipped"):
        print(f"skipped {df.attrs['skipped']} file(s); listed in {report}")
    print(manifest.format_summary(manifest.summary(df)))
    return 0


def run_validate(args) -> int:
    import medssl.manifest as manifest

    df = manifest.load(args.manifest, data_root=args.data_root)  # validates the table
    if args.verify_files:
        manifest.validate(df, verify_files=True, source=args.manifest)
    print(f"{args.manifest}: valid ({len(df)} rows{', all files present' if args.verify_files else ''})")
    return 0


def run_summary(args) -> int:
    import json

    import medssl.manifest as manifest

    df = manifest.load(args.manifest)
    s = manifest.summary(df)
    print(json.dumps(s, indent=2) if args.json else manifest.format_summary(s))
    return 0
