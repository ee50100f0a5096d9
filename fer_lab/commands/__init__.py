"""CLI subcommands (one module each, ``register(subparsers)``)."""
import json
import sys


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    """Plain aligned text table."""
    from ..report import format_table

    print(format_table(rows, columns))