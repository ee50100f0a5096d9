"""``fer-lab data``: list adapters, check a dataset, build its array cache.

``fer-lab data check`` exits 0 when every checked split is clean, 1 when problems were found
(unparsable rows, unknown labels, missing files, and with ``--verify-images`` undecodable images)
or when the dataset cannot be opened at all (message on stderr, no report).
"""
from __future__ import annotations

import argparse

from . import print_json, print_table


def _parse_options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        low = v.strip().lower()
        if low in ("true", "false"):
            val = low == "true"
        else:
            try:
                val = int(v)
            except ValueError:
                try:
                    val = float(v)
                except ValueError:
                    val = v
        out[k.strip().replace("-", "_")] = val
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="adapter name (fer-lab data list)")
    p.add_argument("--root", default=None, help="dataset folder in its native layout (not needed for synthfer)")
    p.add_argument("--num-classes", type=int, choices=(7, 8), default=None,
                   help="7 or 8 (default: the dataset's own: FER+/AffectNet/synthfer 8, others 7)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="adapter option, e.g. majority=argmax8 (ferplus), images=original (rafdb), "
                        "list=subset.csv (imagefolder), n=500 (synthfer); repeatable")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset adapters: list, check, cache",
                              description="Read FER datasets in their native layouts.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    ls = sub.add_parser("list", help="list dataset adapters")
    ls.set_defaults(func=_list)

    ck = sub.add_parser("check", help="counts, label distributions and every problem row/file",
                        description="Exit code 0: clean; 1: problems found (or the dataset cannot be opened).")
    _common(ck)
    ck.add_argument("--split", default=None, help="one split (default: every split present)")
    ck.add_argument("--json", action="store_true", help="print the report as JSON")
    ck.add_argument("--verify-images", action="store_true", help="decode every image to find corrupt files")
    ck.set_defaults(func=_check)

    ca = sub.add_parser("cache", help="build (or reuse) the decoded array cache of one split")
    _common(ca)
    ca.add_argument("--split", default="train")
    ca.add_argument("--size", default="112", help="side in pixels, or 'native' (all images one size, e.g. FER+ 48)")
    ca.add_argument("--recipe", default="none", help="face crop recipe (fer_lab.faces), default whole image")
    ca.add_argument("--grayscale", action="store_true")
    ca.add_argument("--cache-dir", default=None, help="default $FER_LAB_CACHE or ~/.cache/fer_lab")
    ca.add_argument("--rebuild", action="store_true")
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(func=_cache)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _list(args) -> int:
    from ..data import list_datasets
    from ..data.base import dataset_class

    rows = []
    for name in list_datasets():
        cls = dataset_class(name)
        rows.append({"name": name, "splits": ",".join(cls.splits), "default_classes": cls.default_num_classes,
                     "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""})
    print_table(rows, ["name", "splits", "default_classes"])
    return 0


def _check(args) -> int:
    from ..data import check_dataset

    report = check_dataset(args.dataset, args.root, args.split, num_classes=args.num_classes,
                           verify_images=args.verify_images, workers=args.workers,
                           progress=not args.json, **_parse_options(args.option))
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0 if report["clean"] else 1


def _print_report(report: dict) -> None:
    print(f"dataset {report['dataset']} at {report['root']}  ({report['num_classes']} classes: "
          f"{', '.join(report['label_map'])})")
    splits = report["splits"]
    rows = []
    for cls in report["label_map"]:
        rows.append({"class": cls, **{s: v["per_class"][cls] for s, v in splits.items()}})
    rows.append({"class": "TOTAL", **{s: v["n"] for s, v in splits.items()}})
    print_table(rows, ["class", *splits])
    for s, v in splits.items():
        d = v["distribution"]
        if d:
            print(f"{s}: label distributions: mean entropy {d['mean_entropy']:.3f} nats "
                  f"(max {d['max_entropy']:.3f}), mean max prob {d['mean_max_prob']:.3f}")
        if v["excluded"]:
            print(f"{s}: excluded by label policy: " + ", ".join(f"{k} {n}" for k, n in v["excluded"].items()))
    for m in report["missing_splits"]:
        print(f"(split {m['split']} not present)")
    if report["clean"]:
        verified = "images decoded" if report["verified_images"] else "images not decoded: add --verify-images"
        print(f"clean: no problems ({verified})")
        return
    print(f"{report['problems']} problem(s):")
    for s, v in splits.items():
        for p in v["problems"]:
            print(f"  [{s}] {p['where']}: {p['kind']}: {p['message']}")


def _cache(args) -> int:
    from ..data import build_cache, build_dataset

    size = None if str(args.size).lower() == "native" else int(args.size)
    ds = build_dataset(args.dataset, args.root, args.split, num_classes=args.num_classes,
                       **_parse_options(args.option))
    cache = build_cache(ds, size, recipe=args.recipe, grayscale=args.grayscale, cache_dir=args.cache_dir,
                        progress=not args.json, workers=args.workers, rebuild=args.rebuild)
    m = cache.manifest
    info = {"path": str(cache.path), "key": cache.key, "n": len(cache), "size": cache.size,
            "label_map": cache.label_map.to_list(), "has_dists": cache.dists is not None,
            "excluded_images": len(cache.problems), "dataset_problems": m.get("dataset_problems", 0),
            "build_seconds": m.get("build_seconds"), "images_per_second": m.get("images_per_second")}
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            print(f"{k}: {v}")
        for p in cache.problems:
            print(f"  excluded {p.where}: {p.message}")
    return 0
