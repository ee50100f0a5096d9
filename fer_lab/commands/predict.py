"""``fer-lab predict``: score every face of some images with one checkpoint."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from . import print_json, print_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict", help="predict the expression of every face in images",
        description="Detect faces, crop them with the checkpoint's recipe and print per-face "
                    "probabilities for every canonical label. Unreadable images get an error "
                    "entry and make the exit code 1.")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders (every image file directly inside, sorted by name)")
    p.add_argument("--weights", default=None,
                   help="shipped name or checkpoint path (default: efficientface-ferplus)")
    p.add_argument("--no-detect", action="store_true",
                   help="score the whole image instead of detected faces")
    p.add_argument("--recipe", default=None,
                   help="override the checkpoint's crop recipe (the model was trained on its own)")
    p.add_argument("--max-faces", type=int, default=None, help="keep only the N largest faces per image")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", choices=("torch", "onnx", "auto"), default="torch",
                   help="onnx: serve through ONNX Runtime (exported once, cached in $FER_LAB_CACHE/onnx); "
                        "auto: ONNX Runtime when installed")
    p.add_argument("--tta-flip", action="store_true",
                   help="average each face's probabilities with its mirror image's (2x the model cost; same as "
                        "fer-lab eval --tta-flip)")
    p.add_argument("--no-prior-correction", action="store_true",
                   help="report the model's raw probabilities, without the checkpoint's stored post-hoc prior "
                        "correction (a tau chosen on validation that evens out the training set's class prior) and "
                        "calibration temperature")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference import DEFAULT_WEIGHTS, Predictor, predict_files
    from ..inference.evaluate import served_record
    from ..io import HEIF_ADVICE, HEIF_EXTENSIONS, image_files

    if args.max_faces is not None and args.max_faces < 1:
        raise ValueError("--max-faces must be >= 1")
    predictor = Predictor(args.weights or DEFAULT_WEIGHTS, device=args.device, recipe=args.recipe,
                          backend=args.backend, tta_flip=args.tta_flip,
                          prior_correction=not args.no_prior_correction)
    files, skipped = image_files(args.images)
    if skipped:
        kinds = Counter(Path(f).suffix.lower() or "(no extension)" for f in skipped)
        print(f"skipped {len(skipped)} file{'s' if len(skipped) != 1 else ''} in the folder(s) that "
              f"{'are' if len(skipped) != 1 else 'is'} not an image type fer_lab reads: "
              + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
              + (f"; HEIC/HEIF photos: {HEIF_ADVICE}" if any(k in HEIF_EXTENSIONS for k in kinds) else ""),
              file=sys.stderr)
    results = predict_files(predictor, files, detect=not args.no_detect, max_faces=args.max_faces)
    failed = [r for r in results if not r.ok]
    if args.json:
        print_json({"weights": predictor.name, "arch": predictor.meta.arch, "recipe": predictor.recipe,
                    "backend": predictor.backend, "tta_flip": predictor.tta_flip,
                    "prior_correction": served_record(predictor.meta, predictor.prior_correction),
                    "labels": list(predictor.labels), "images": [r.to_dict() for r in results],
                    "skipped": skipped})
    else:
        rows = []
        for r in results:
            if not r.ok:
                continue
            if not r.faces:
                rows.append({"image": r.source, "face": "-", "box": "no face found", "label": "", "score": ""})
            for f in r.faces:
                box = "whole image" if f.box is None else ",".join(map(str, f.box))
                rows.append({"image": r.source, "face": f.index, "box": box, "label": f.label,
                             "score": f"{f.score:.3f}"})
        print(f"weights: {predictor.name} ({predictor.meta.arch}, recipe {predictor.recipe}, "
              f"prior correction tau {predictor.prior_tau:g}"
              + (f", temperature {predictor.temperature:g}" if predictor.temperature != 1 else "") + ")")
        if rows:
            print_table(rows, ["image", "face", "box", "label", "score"])
        if any(r.ok and not r.faces for r in results) and not args.no_detect:
            # face sets of pre-cropped faces (FER-2013, RAF-DB aligned, ...) often defeat the detector
            print("no face found in some images; if they are already face crops, score them whole with "
                  "--no-detect", file=sys.stderr)
        for r in failed:
            print(f"error: {r.source}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
