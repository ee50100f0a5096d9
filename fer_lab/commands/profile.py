"""``fer-lab profile``: params and MACs in the paper's and the plain convention."""
from . import print_json, print_table


def run(args) -> int:
    from ..complexity import PAPER_TABLE_MODELS, profile_models

    names = args.models or list(PAPER_TABLE_MODELS)
    reports = [r.as_dict() for r in profile_models(names, args.num_classes, args.input_size)]
    if args.json:
        print_json({"conventions": {
            "paper_mmacs": "paper/thop-0.0.31: conv MACs + conv bias + 2/BN element + linear (reproduces the paper's MFLOPs)",
            "plain_mmacs": "conv + linear MACs only (torch FlopCounterMode / 2)"}, "models": reports})
    else:
        print_table(reports)
        print("\npaper_mmacs: the paper's convention (conv MACs + bias + 2 per BN element + linear); "
              "plain_mmacs: conv+linear MACs (FlopCounterMode/2).")
    return 0


def register(sub) -> None:
    p = sub.add_parser("profile", help="parameter and MAC counts (paper and plain conventions)")
    p.add_argument("--models", nargs="+", help="model names (default: the paper's Table 1/2 rows)")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
