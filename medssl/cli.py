"""`medssl <command>`: a thin argparse layer over the package's functions.

Each sub-command lives in `medssl/commands/<name>.py` with `register(subparsers)`; heavy
imports (torch, pydicom) happen inside the command, so `medssl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medssl import __version__
from medssl.errors import MedsslError

#: Sub-command modules in the order the data flows; missing ones are skipped.
COMMAND_MODULES = (
    "manifest", "split", "cache", "inspect", "augment", "pretrain", "export_backbone",
    "finetune", "evaluate", "study", "demo", "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl",
        description="Self-supervised pretraining and label-efficiency studies for medical images. "
                    "Data flows: manifest -> split -> cache -> pretrain -> finetune/evaluate -> study.",
    )
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"medssl.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"medssl.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except MedsslError as e:
        print(f"medssl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medssl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
