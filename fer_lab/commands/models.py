"""``fer-lab models``: registered architectures and shipped weights."""
from . import print_json, print_table


def run(args) -> int:
    from ..checkpoint import list_shipped, read_meta, resolve_weights
    from ..models import create_model, list_models, model_default_cfg
    from ..shipped import SHIPPED_WEIGHTS

    rows = []
    for name in list_models():
        cfg = model_default_cfg(name)
        m = create_model(name, num_classes=args.num_classes)
        rows.append({"model": name, "params": sum(p.numel() for p in m.parameters()),
                     "cam_layer": cfg["cam_layer"], "input_size": cfg["input_size"], "paper": cfg["paper"]})
    shipped = list_shipped()
    details = {}  # what each shipped file records, not a copy of it that can drift when the weights change
    for name in shipped:
        meta = read_meta(resolve_weights(name))  # the header only: no tensors are read
        w = SHIPPED_WEIGHTS.get(name)
        details[name] = {"description": w.description if w else "", "arch": meta.arch if meta else None,
                         "input_size": meta.input_size if meta else None,
                         "grayscale": meta.grayscale if meta else None}
    if args.json:
        print_json({"models": rows, "shipped_weights": shipped, "shipped": details})
    else:
        print_table(rows)
        print("\nshipped weights:" + ("" if shipped else " none"))
        for name, d in details.items():
            size = f"{d['input_size']} px{' gray' if d['grayscale'] else ''}" if d["input_size"] else ""
            print(f"  {name}  ({', '.join(x for x in (d['description'], size) if x)})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models and shipped weights")
    p.add_argument("--num-classes", type=int, default=7)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
