"""``python -m fer_lab.train CONFIG [key=value ...]`` — the entry point for torchrun:

    torchrun --nproc-per-node=4 -m fer_lab.train ferplus out_dir=runs/ef target=crowd
"""
import sys


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
