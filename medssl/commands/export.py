"""`medssl export`: a fine-tuned classifier or an encoder -> TorchScript / ONNX + model card."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl export runs/cell/best.pt --format torchscript,onnx --out runs/cell/export
  medssl export runs/study/cells/mocov2__full__250__seed0/best.pt --format onnx --out export/
  medssl export runs/moco/encoder.pt --format torchscript --out export-encoder/
  medssl export runs/study/cells/random__linear__250__seed0/best.pt --format onnx --init-seed 0 --out export/
  medssl export weights/resnet18-imagenet.pth --arch resnet18 --input-size 224 --format onnx --out export/

MODEL is a cell's best.pt (classifier: probabilities per label; kNN cells cannot be exported) or an
encoder (encoder.pt from export-backbone with its JSON, or any weights file with --arch). The
exported model takes float32 (B, 1, S, S) images in [0, 1] (S = the model's input size, bright =
dense) and normalises them itself. Each export is checked against the PyTorch model on random
inputs before it is kept. Beside it: model_card.md and model_card.json (architecture, input and
normalisation, labels, label budget, test AUC with CIs from metrics.json, pretraining counts,
medssl version, config and weights SHA-256). ONNX needs `pip install 'medssl[export]'`."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a fine-tuned classifier or an encoder as TorchScript / ONNX with a model card",
        description="Write MODEL as TorchScript (model.ts) and/or ONNX (model.onnx) taking (B, 1, S, S) images in "
                    "[0, 1], plus model_card.md / model_card.json.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a fine-tuning cell's best.pt, or an encoder weights file")
    p.add_argument("--format", "-f", default="torchscript,onnx",
                   help="comma-separated: torchscript, onnx, or all (default torchscript,onnx)")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--init", help="linear probes without stored encoder weights: the init weights the cell used "
                                  "(default: the path recorded in best.pt)")
    p.add_argument("--init-seed", type=int, help="linear probes on a random encoder: the config's top-level seed")
    p.add_argument("--arch", help="encoder files without a JSON: the architecture (e.g. resnet18)")
    p.add_argument("--in-channels", type=int, choices=(1, 3), help="encoder files without a JSON (default 1)")
    p.add_argument("--input-size", type=int, help="encoder files without a JSON: input size S (default 224)")
    p.add_argument("--config", help="config file whose SHA-256 goes into the card (default: config.yaml found "
                                    "beside the model or up to two folders above)")
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.models.export import export

    out = export(args.model, formats=args.format, out_dir=args.out, init=args.init, init_seed=args.init_seed,
                 arch=args.arch, in_channels=args.in_channels, input_size=args.input_size, config=args.config)
    model = out["model"]
    what = f"{model.kind} ({model.arch}, {len(model.labels)} labels)" if model.kind == "classifier" else \
        f"encoder ({model.arch}, {model.feature_dim} features)"
    for fmt, path in out["files"].items():
        d = out["parity"][fmt]
        check = "not measured (onnxruntime missing)" if d is None else f"max abs diff to PyTorch {d:.1e}"
        print(f"medssl export: wrote {path} [{what}; input (B, 1, {model.input_size}, {model.input_size}); {check}]")
    md, js = out["card"]
    print(f"medssl export: wrote {md} and {js}")
    return 0
