"""Channels-last (NHWC) vs NCHW on this machine, interleaved: the trainer's step and the engine's inference.

    python tools/bench_layout.py [--archs efficientface baseline] [--input-size 64] [--batch 128] [--rounds 5]

Each round times, for every architecture, a training epoch of ``--steps`` steps through
``fer_lab.training.benchmark_training`` (the trainer's own loop: augmentation, forward, loss, backward, SGD)
with ``channels_last`` on and off, then inference of a ``--batch`` batch and of one image with the model
in each layout -- alternating the layouts so load from other processes hits both alike.  Reported: the
median over rounds of process CPU time (one thread: free of preemption by other processes) and the
ratio NHWC / NCHW (< 1: channels-last is faster).  This is what decided that the library's own models
run channels-last on CPU (``fer_lab.engine.to_channels_last``, docs/performance.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time


def _cpu(fn, n: int = 1) -> float:
    c0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - c0) / n


def main(argv=None):
    import torch

    from fer_lab import create_model
    from fer_lab.engine import to_channels_last
    from fer_lab.training import benchmark_training

    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["efficientface", "baseline"])
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s = args.input_size
    times = {(a, k, fmt): [] for a in args.archs for k in ("train_step", "infer_batch", "infer_1")
             for fmt in ("nchw", "nhwc")}
    models = {}
    for a in args.archs:
        torch.manual_seed(0)
        plain = create_model(a, num_classes=8).eval()
        models[a] = {"nchw": plain, "nhwc": to_channels_last(copy.deepcopy(plain))}
    xb, x1 = torch.randn(args.batch, 3, s, s), torch.randn(1, 3, s, s)
    for _ in range(args.rounds):
        for a in args.archs:
            for fmt in ("nchw", "nhwc"):
                r = benchmark_training(arch=a, target="hard", input_size=s, batch_size=args.batch, steps=args.steps,
                                       warmup=1, num_classes=8, channels_last=fmt == "nhwc")
                times[(a, "train_step", fmt)].append(r["cpu_s_per_step"])
                m = models[a][fmt]
                mf = torch.channels_last if fmt == "nhwc" else torch.contiguous_format
                b, o = xb.contiguous(memory_format=mf), x1.contiguous(memory_format=mf)
                with torch.inference_mode():
                    m(b), m(o)  # warm
                    times[(a, "infer_batch", fmt)].append(_cpu(lambda: m(b)))
                    times[(a, "infer_1", fmt)].append(_cpu(lambda: m(o), 10))
    rows = []
    for a in args.archs:
        for k in ("train_step", "infer_batch", "infer_1"):
            nchw, nhwc = (statistics.median(times[(a, k, f)]) * 1000 for f in ("nchw", "nhwc"))
            rows.append({"arch": a, "what": k, "nchw_cpu_ms": round(nchw, 4), "nhwc_cpu_ms": round(nhwc, 4),
                         "nhwc_vs_nchw": round(nhwc / nchw, 3)})
    if args.json:
        print(json.dumps({"input_size": s, "batch": args.batch, "rounds": args.rounds, "rows": rows}, indent=1))
    else:
        print(f"input {s}px, batch {args.batch}, {args.rounds} rounds, 1 thread, median process CPU time")
        print("| arch | what | NCHW ms | NHWC ms | NHWC / NCHW |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['arch']} | {r['what']} | {r['nchw_cpu_ms']:.2f} | {r['nhwc_cpu_ms']:.2f} | {r['nhwc_vs_nchw']} |")
    return rows


if __name__ == "__main__":
    main()
