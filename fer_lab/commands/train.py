"""``fer-lab train --config CFG [key=value ...]``."""
from . import print_json


def run(args) -> int:
    from ..training import list_presets, load_config, train

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print_json(cfg.to_dict())
        return 0
    summary = train(cfg)
    if summary:
        brief = {k: summary[k] for k in ("best_epoch", "val_selected", "last_epoch") if k in summary}
        if "best_on_test_official_protocol" in summary:
            brief["best_on_test_official_protocol"] = summary["best_on_test_official_protocol"]
        print_json(brief)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (SLL, LDG online/cached, crowd, smoothing); resumable")
    p.add_argument("config", nargs="?", help="YAML config file or preset name (see --list-presets)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. lr=0.05 augment.rotate=5")
    p.add_argument("--config", dest="config_opt", help=argparse_suppress())
    p.add_argument("--list-presets", action="store_true")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_dispatch)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _dispatch(args) -> int:
    if args.config_opt:
        if args.config and "=" in args.config:
            args.overrides = [args.config, *args.overrides]
        elif args.config:
            raise ValueError("give the config either positionally or with --config")
        args.config = args.config_opt
    elif args.config and "=" in args.config:
        args.overrides, args.config = [args.config, *args.overrides], None
    return run(args)
