"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse


def override(text: str) -> str:
    """argparse type of a `--set` item: KEY=VALUE, else a usage error that says how to place positionals."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE (a positional argument after --set is read as an override: "
            "put it before --set, or end the --set list with --)")
    return text


def add_config_args(parser: argparse.ArgumentParser, config_help: str = "YAML config (see configs/)") -> None:
    parser.add_argument("--config", "-c", help=config_help)
    # nargs="+" with action="extend": `--set a=1 b=2` and `--set a=1 --set b=2` mean the same
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], type=override,
                        metavar="KEY=VALUE",
                        help="override config values, e.g. --set trainer.max_epochs=5 trainer.batch_size=64 "
                             "(several per flag, flag repeatable; later ones win). It takes every following "
                             "word up to the next option, so give positional arguments before it or end it with --")


def load_from_args(args):
    from medssl.config import load_config
    return load_config(getattr(args, "config", None), getattr(args, "overrides", []))
