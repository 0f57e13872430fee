"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set trainer.max_epochs=5 (repeatable)")


def load_from_args(args):
    from medssl.config import load_config
    return load_config(getattr(args, "config", None), getattr(args, "overrides", []))
