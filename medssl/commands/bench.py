"""`medssl bench PART`: throughput benchmarks that write JSON and print a table.

A part is a module `medssl.bench.<part>` exposing `add_arguments(parser)` and `run(args) -> dict`
(keep its top-level imports light: it is imported to build `medssl --help`). Adding a part = adding
its name to PARTS. `medssl bench all` runs every available part with its default arguments.
"""

from __future__ import annotations

import argparse
import importlib

#: Benchmark parts, in the order `all` runs them; modules that do not exist yet are skipped.
PARTS = ("io", "pipeline", "pretrain", "finetune", "scale")

EXAMPLES = """examples:
  medssl bench io                         # decode rates, cache build and cached-read ratios
  medssl bench io --n 8 --size 3000 --out bench/io-3k.json
  medssl bench all --out bench/all.json   # every available part, defaults, one JSON

Numbers are medians over repeats; every ratio is measured in the same run as its reference."""


def available_parts() -> dict:
    """name -> module for every part in PARTS that is installed."""
    out = {}
    for name in PARTS:
        try:
            out[name] = importlib.import_module(f"medssl.bench.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"medssl.bench.{name}":
                raise
    return out


def _add_out(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", "-o", default=default, help=f"JSON results file (default {default})")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="throughput benchmarks (JSON out): io, pipeline, pretrain, finetune, scale, all",
        description="Measure throughput on this machine; results go to a JSON file and a printed table.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", metavar="PART")
    sub.required = True
    for name, module in available_parts().items():
        doc = (module.__doc__ or name).strip().splitlines()[0]
        sp = sub.add_parser(name, help=doc, description=module.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sp)
        _add_out(sp, f"bench/{name}.json")
        sp.set_defaults(func=run)
    sp = sub.add_parser("all", help="run every available part with its defaults into one JSON")
    _add_out(sp, "bench/all.json")
    sp.set_defaults(func=run)


def default_args(module, **overrides) -> argparse.Namespace:
    """The arguments a part runs with under `all`: its own defaults plus overrides."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def run(args) -> int:
    from medssl.bench.common import environment, write_results

    parts = available_parts()
    results = {"environment": environment(), "parts": {}}
    status = 0
    if args.part == "all":
        for name, module in parts.items():
            print(f"== bench {name}")
            try:
                results["parts"][name] = module.run(default_args(module, out=args.out))
            except Exception as e:  # one broken part must not lose the others' numbers
                results["parts"][name] = {"error": f"{type(e).__name__}: {e}"}
                print(f"bench {name} failed: {type(e).__name__}: {e}")
                status = 1
    else:
        results["parts"][args.part] = parts[args.part].run(args)
    path = write_results(args.out, results)
    print(f"wrote {path}")
    return status
