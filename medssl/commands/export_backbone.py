"""`medssl export-backbone`: a pretraining checkpoint -> plain MONAI state dict + JSON spec."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  medssl export-backbone runs/moco/checkpoints/best.ckpt --out runs/moco/encoder-best.pt

Writes OUT (torch.save of the online encoder's MONAI network state_dict, no classifier) and
OUT with a .json suffix: arch, in_channels, input_size, normalisation mean/std, the MONAI
constructor and kwargs, feature_dim, medssl version and the source checkpoint's SHA-256.
Load without medssl:
  net = monai.networks.nets.resnet18(**spec["monai"]["kwargs"])
  net.load_state_dict(torch.load("encoder.pt", weights_only=True))
  features = net((x - spec["mean"]) / spec["std"])   # x: float (B, 1, H, W) in [0, 1]"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-backbone", help="export a pretrained encoder as a plain MONAI state dict",
        description="Extract the online encoder from a `medssl pretrain` checkpoint (loaded weights-only) "
                    "and write it as a plain MONAI network state dict plus a JSON description.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .ckpt written by medssl pretrain (last.ckpt, best.ckpt)")
    p.add_argument("--out", "-o", required=True, help="output weights file, e.g. encoder.pt (JSON written beside)")
    p.set_defaults(func=run)


def run(args) -> int:
    from medssl.ssl.checkpoint import export_backbone

    weights, spec = export_backbone(args.checkpoint, args.out)
    print(f"medssl export-backbone: wrote {weights} and {spec}")
    return 0
