"""``fer-lab`` console script: argparse subcommands, each a thin shim over a library function.

Each subcommand lives in ``fer_lab/commands/<name>.py`` exposing ``register(subparsers)``;
the handler it sets (``func``) takes the parsed args and returns an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# order = order in --help
COMMAND_MODULES = ["models", "profile", "data", "train", "soup", "distributions", "eval", "prior", "predict", "bench",
                   "export"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fer-lab", description="Lightweight facial expression recognition workbench "
                                     "(EfficientFace, label distribution training, CAMs).")
    parser.add_argument("--version", action="version", version=f"fer-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"fer_lab.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"fer_lab.commands.{name}":
                continue  # not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # library errors carry a message meant for the user: no traceback
        print(f"fer-lab {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
