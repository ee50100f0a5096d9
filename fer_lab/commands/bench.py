"""``fer-lab bench``: latency / throughput / MACs of EfficientFace and its peers in one run."""
from __future__ import annotations

import sys

from . import print_json


def register(sub) -> None:
    from ..bench import DEFAULT_MODELS

    p = sub.add_parser("bench", help="measure inference (eager, ONNX Runtime) and training speed side by side",
                       description="One run, same machine: params, MACs, batch-1 latency (p50/p95) and batch "
                                   "throughput in PyTorch eager and ONNX Runtime, ratios to the ShuffleNet-V2 "
                                   "baseline, training img/s per target, CUDA fp16/bf16 when present.")
    p.add_argument("--models", nargs="+", help=f"models to compare (default: {' '.join(DEFAULT_MODELS)}; "
                                                "the baseline is added for the ratios)")
    p.add_argument("--input-size", type=int, default=None, help="square input size (default 224)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime (default 1)")
    p.add_argument("--repeats", type=int, default=None, help="timing rounds (default 5; quick 3)")
    p.add_argument("--iters", type=int, default=None, help="batch-1 calls per round (default 20; quick 5)")
    p.add_argument("--batch", type=int, default=None, help="throughput batch size (default 64; quick 8)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default=None,
                   help="ONNX exporter for the ONNX Runtime rows (default dynamo; quick torchscript)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--no-training", action="store_true", help="skip training throughput")
    p.add_argument("--no-cuda", action="store_true", help="skip CUDA even when present")
    p.add_argument("--quick", action="store_true", help="a smoke run in seconds (efficientface + baseline, few calls, no training)")
    p.add_argument("--profile", action="store_true",
                   help="only the per-block CPU-time profile of baseline vs efficientface (where the extra time goes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench import BASELINE, BenchConfig, format_report, format_sections, run_bench, section_profile

    if args.profile:
        prof = section_profile(input_size=args.input_size or 224, iters=(args.iters or 20) * (args.repeats or 5),
                               threads=args.threads or 1)
        print_json(prof) if args.json else print(format_sections(prof), end="")
        return 0

    overrides = dict(input_size=args.input_size, threads=args.threads, repeats=args.repeats,
                     latency_iters=args.iters, throughput_batch=args.batch, exporter=args.exporter)
    if args.models:
        models = list(dict.fromkeys(args.models))
        if BASELINE not in models:
            models.append(BASELINE)
        overrides["models"] = tuple(models)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)
    if args.no_onnx:
        cfg.onnx = False
    if args.no_training:
        cfg.training = False
    if args.no_cuda:
        cfg.cuda = False
    result = run_bench(cfg, log=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    if args.json:
        print_json(result)
    else:
        print(format_report(result), end="")
    return 0
