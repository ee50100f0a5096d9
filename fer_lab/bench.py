"""``fer-lab bench``: speed of EfficientFace and its peers, measured side by side in one run.

For every model: parameters, MACs (paper and plain conventions, :mod:`fer_lab.complexity`), CPU
latency at batch 1 and throughput at a large batch, in PyTorch eager (``inference_mode``; in the plain
NCHW layout and channels-last, the layout the library's own models use) and through ONNX Runtime (the file :func:`fer_lab.inference.export.export_onnx` writes); ratios to the
ShuffleNet-V2 baseline; training throughput for the hard / LDG-online / LDG-cached targets when
the trainer provides ``fer_lab.training.benchmark_training``; CUDA fp32/fp16/bf16 throughput
when a GPU is present.

Method (the machine is usually shared, so timings are noisy):

* a fixed thread count for PyTorch (``torch.set_num_threads``) and ONNX Runtime
  (``intra_op_num_threads``, sequential execution);
* warm-up calls, then ``repeats`` rounds; each round times every (model, engine) in turn, so a
  burst of load from other processes hits all of them alike;
* latency p50 = median over the rounds of each round's median; p95 over all calls;
  throughput = batch / median call time;
* next to each wall-clock figure, the CPU time of the process for the same call
  (``time.process_time``): with one thread it excludes time spent preempted by other
  processes, so ratios computed from it are stable on a loaded machine;
* the load average before and after the run is part of the result.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["BenchConfig", "DEFAULT_MODELS", "BASELINE", "TRAIN_TARGETS", "TARGETS", "machine_info", "time_calls",
           "run_bench", "format_report", "section_profile", "format_sections"]

DEFAULT_MODELS = ("efficientface", "baseline", "resnet18", "ldg_resnet50", "mobilenetv3_small")
BASELINE = "baseline"
TRAIN_TARGETS = ("hard", "ldg-online", "ldg-cached")
# issue 9: (description, ratio name, limit)
TARGETS = {
    "efficientface_eager_vs_baseline_eager": 1.10,
    "efficientface_ort_vs_efficientface_eager": 0.60,
    "ldg_cached_vs_hard_time_per_image": 1.10,
}


@dataclass
class BenchConfig:
    models: tuple = DEFAULT_MODELS
    input_size: int = 224
    threads: int = 1
    repeats: int = 5             # rounds over all (model, engine) pairs
    latency_iters: int = 20      # batch-1 calls per round
    warmup: int = 5              # batch-1 calls before timing
    throughput_batch: int = 64
    throughput_repeats: int = 3  # batch calls (one per round)
    onnx: bool = True
    exporter: str = "dynamo"     # see fer_lab.inference.export.EXPORTERS
    training: bool = True
    train_batch: int = 32
    train_steps: int = 5
    teacher_arch: str = "ldg_resnet50"
    cuda: bool | None = None     # None: when available
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        """A smoke run (seconds): EfficientFace + baseline, few calls, small batches, fast exporter."""
        base = dict(models=("efficientface", BASELINE), repeats=3, latency_iters=5, warmup=2, throughput_batch=8,
                    throughput_repeats=2, exporter="torchscript", training=False, train_batch=8, train_steps=2)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def validate(self) -> None:
        from .models import list_models
        from .inference.export import EXPORTERS

        unknown = [m for m in self.models if m not in list_models()]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; available: {', '.join(list_models())}")
        if not self.models:
            raise ValueError("no models to benchmark")
        if self.input_size < 32 or self.input_size % 16:
            raise ValueError(f"input size must be a multiple of 16 (>= 32; EfficientFace's LFE splits the "
                             f"stem map into quadrants), got {self.input_size}")
        for name in ("threads", "repeats", "latency_iters", "throughput_batch", "throughput_repeats",
                     "train_batch", "train_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None = None) -> dict:
    """What the numbers were measured on."""
    import onnx
    import onnxruntime as ort

    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # psutil missing or restricted
        physical, mem_gb = None, None
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "ort_threads": threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    return info


@dataclass
class _Runner:
    """One (model, engine) pair: a batch-1 call and a large-batch call, with their samples."""

    model: str
    engine: str
    call1: Callable[[], object]
    call_batch: Callable[[], object]
    wall: list = field(default_factory=list)       # per round: list of batch-1 wall times (s)
    cpu: list = field(default_factory=list)        # per round: list of batch-1 CPU times (s)
    batch_wall: list = field(default_factory=list)
    batch_cpu: list = field(default_factory=list)


def time_calls(fn: Callable[[], object], n: int, sync: Callable[[], None] | None = None) -> tuple[list, list]:
    """Wall and process-CPU seconds of ``n`` calls of ``fn``."""
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        if sync is not None:
            sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _p(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _summarise(r: _Runner, batch: int) -> dict:
    per_round = [statistics.median(w) for w in r.wall]
    per_round_cpu = [statistics.median(c) for c in r.cpu]
    flat = [v for w in r.wall for v in w]
    bw = statistics.median(r.batch_wall)
    return {
        "p50_ms": round(statistics.median(per_round) * 1e3, 3),
        "p95_ms": round(_p(flat, 95) * 1e3, 3),
        "cpu_ms": round(statistics.median(per_round_cpu) * 1e3, 3),
        "calls": len(flat),
        "img_s": round(batch / bw, 2),
        "img_s_cpu": round(batch / statistics.median(r.batch_cpu), 2),
    }


def _seeded_model(name: str, seed: int):
    from .models import create_model

    torch.manual_seed(seed)
    return create_model(name).eval()


def _eager_runner(name: str, model, x1, xb, engine: str = "eager") -> _Runner:
    def run(x):
        with torch.inference_mode():
            return model(x)

    return _Runner(name, engine, lambda: run(x1), lambda: run(xb))


def _nhwc_runner(name: str, model, x1, xb) -> _Runner:
    """The same model and inputs stored channels-last: the layout the library's own models use
    (:func:`fer_lab.engine.to_channels_last`), timed next to the plain layout."""
    import copy

    from .engine import to_channels_last

    cl = torch.channels_last
    return _eager_runner(name, to_channels_last(copy.deepcopy(model)), x1.contiguous(memory_format=cl),
                         xb.contiguous(memory_format=cl), engine="eager_nhwc")


def _ort_runner(name: str, model, x1, xb, threads: int, exporter: str, workdir: str) -> tuple[_Runner, dict]:
    from .inference.export import OnnxModel, export_onnx

    t0 = time.perf_counter()
    report = export_onnx(model, os.path.join(workdir, f"{name}.onnx"), exporter=exporter, input_size=x1.shape[-1])
    export_s = time.perf_counter() - t0
    runner = OnnxModel(report.path, threads=threads)
    a1, ab = x1.numpy(), xb.numpy()
    info = {"exporter": report.exporter, "export_s": round(export_s, 2), "fallback_reason": report.fallback_reason}
    return _Runner(name, "onnxruntime", lambda: runner(a1), lambda: runner(ab)), info


def _complexity(name: str, size: int) -> dict:
    from .complexity import count_params, paper_macs, plain_macs

    m = _seeded_model(name, 0)
    return {"params": count_params(m), "paper_mmacs": round(paper_macs(m, size) / 1e6, 2),
            "plain_mmacs": round(plain_macs(m, size) / 1e6, 2)}


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def _training(cfg: BenchConfig, log) -> dict:
    try:
        from .training import benchmark_training
    except Exception as e:  # ImportError until the trainer lands
        return {"available": False,
                "note": f"not available yet: fer_lab.training.benchmark_training cannot be imported ({e})"}
    rows = {}
    # the trainer's default (channels_last=true), then hard labels in the plain NCHW layout for the ratio
    for target, nhwc in [(t, True) for t in TRAIN_TARGETS] + [("hard", False)]:
        key = target if nhwc else f"{target} (nchw)"
        log(f"training throughput: {key}")
        try:
            res = benchmark_training(arch="efficientface", target=target, input_size=cfg.input_size,
                                     batch_size=cfg.train_batch, steps=cfg.train_steps, teacher_arch=cfg.teacher_arch,
                                     device="cpu", channels_last=nhwc)
            rows[key] = {k: v for k, v in dict(res).items() if isinstance(v, (int, float, str, bool)) or v is None}
        except Exception as e:  # a trainer bug must not hide the inference figures
            rows[key] = {"error": f"{type(e).__name__}: {e}"}
    out = {"available": True, "batch_size": cfg.train_batch, "steps": cfg.train_steps, "targets": rows}
    # ratios of per-step CPU time (every row has the same batch, so = time per image / per epoch): the rows
    # run one after another, and on a shared machine their wall-clock times move with the neighbours' load
    cpu = {k: r.get("cpu_s_per_step") for k, r in rows.items()}
    out["nhwc_vs_nchw_time"] = _ratio(cpu.get("hard"), cpu.get("hard (nchw)")) \
        if cpu.get("hard") and cpu.get("hard (nchw)") else None  # < 1: channels-last is faster
    for t in ("ldg-online", "ldg-cached"):
        out[f"{t}_vs_hard_time"] = _ratio(cpu.get(t), cpu.get("hard")) if cpu.get(t) and cpu.get("hard") else None
    out["ratios_from"] = "cpu time per step"
    return out


def _cuda(cfg: BenchConfig, log) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    dev = torch.device("cuda")
    rows = []
    sync = torch.cuda.synchronize
    for name in cfg.models:
        log(f"cuda: {name}")
        row = {"model": name}
        for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                row[f"{dtype_name}_img_s"] = None
                continue
            model = _seeded_model(name, cfg.seed).to(dev, dtype)
            xb = torch.randn(cfg.throughput_batch, 3, cfg.input_size, cfg.input_size, device=dev, dtype=dtype)
            with torch.inference_mode():
                for _ in range(max(cfg.warmup, 3)):
                    model(xb)
                sync()
                wall, _ = time_calls(lambda: model(xb), max(cfg.throughput_repeats, 5), sync)
                if dtype is torch.float32:
                    x1 = xb[:1].contiguous()
                    lat, _ = time_calls(lambda: model(x1), cfg.latency_iters * cfg.repeats, sync)
                    row["fp32_b1_p50_ms"] = round(statistics.median(lat) * 1e3, 3)
            row[f"{dtype_name}_img_s"] = round(cfg.throughput_batch / statistics.median(wall), 1)
            model = xb = None  # free this dtype's copy before the next (not `del`: the timing lambdas close over them)
            torch.cuda.empty_cache()
        rows.append(row)
    return {"available": True, "device": torch.cuda.get_device_name(0), "batch": cfg.throughput_batch, "rows": rows}


def run_bench(cfg: BenchConfig | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark; returns ``{"machine", "config", "rows", "targets", "training", "cuda", ...}``."""
    cfg = cfg or BenchConfig()
    cfg.validate()
    log = log or (lambda msg: None)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    t_start = time.perf_counter()
    try:
        size = cfg.input_size
        g = torch.Generator().manual_seed(cfg.seed)
        x1 = torch.randn(1, 3, size, size, generator=g)
        xb = torch.randn(cfg.throughput_batch, 3, size, size, generator=g)
        runners, exports, complexity = [], {}, {}
        with tempfile.TemporaryDirectory(prefix="fer-lab-bench-") as workdir:
            for name in cfg.models:
                log(f"preparing {name}")
                complexity[name] = _complexity(name, size)
                model = _seeded_model(name, cfg.seed)
                runners.append(_eager_runner(name, model, x1, xb))
                runners.append(_nhwc_runner(name, model, x1, xb))
                if cfg.onnx:
                    try:
                        r, exports[name] = _ort_runner(name, model, x1, xb, cfg.threads, cfg.exporter, workdir)
                        runners.append(r)
                    except Exception as e:
                        exports[name] = {"error": f"{type(e).__name__}: {e}"}
            log("warm-up")
            for r in runners:
                time_calls(r.call1, cfg.warmup)
                time_calls(r.call_batch, 1)
            for rnd in range(cfg.repeats):
                log(f"latency round {rnd + 1}/{cfg.repeats}")
                for r in runners:
                    w, c = time_calls(r.call1, cfg.latency_iters)
                    r.wall.append(w)
                    r.cpu.append(c)
            for rnd in range(cfg.throughput_repeats):
                log(f"throughput round {rnd + 1}/{cfg.throughput_repeats} (batch {cfg.throughput_batch})")
                for r in runners:
                    w, c = time_calls(r.call_batch, 1)
                    r.batch_wall += w
                    r.batch_cpu += c
        stats = {(r.model, r.engine): _summarise(r, cfg.throughput_batch) for r in runners}
        rows = []
        for name in cfg.models:
            row = {"model": name, **complexity[name]}
            for engine, prefix in (("eager", "eager"), ("eager_nhwc", "nhwc"), ("onnxruntime", "ort")):
                s = stats.get((name, engine))
                for k in ("p50_ms", "p95_ms", "cpu_ms", "img_s"):
                    row[f"{prefix}_{k}"] = s[k] if s else None
            row["ort_vs_eager"] = _ratio(row["ort_p50_ms"], row["eager_p50_ms"])
            row["ort_vs_eager_cpu"] = _ratio(row["ort_cpu_ms"], row["eager_cpu_ms"])
            # < 1: channels-last is faster (batch-1 latency; and per image at the throughput batch)
            row["nhwc_vs_eager"] = _ratio(row["nhwc_p50_ms"], row["eager_p50_ms"])
            row["nhwc_vs_eager_cpu"] = _ratio(row["nhwc_cpu_ms"], row["eager_cpu_ms"])
            row["nhwc_vs_eager_batch"] = _ratio(row["eager_img_s"], row["nhwc_img_s"])
            rows.append(row)
        base = next((r for r in rows if r["model"] == BASELINE), None)
        for row in rows:
            for key in ("params", "paper_mmacs", "eager_p50_ms", "eager_cpu_ms", "eager_img_s", "ort_p50_ms",
                        "ort_cpu_ms", "ort_img_s"):
                row[f"{key}_x_base"] = _ratio(row[key], base[key]) if base else None
        targets = _targets(rows)
        training = _training(cfg, log) if cfg.training else {"available": False, "note": "skipped (--no-training)"}
        if training.get("available"):
            v = training.get("ldg-cached_vs_hard_time")
            targets["ldg_cached_vs_hard_time_per_image"] = _target_entry(v, TARGETS["ldg_cached_vs_hard_time_per_image"])
            targets["ldg_online_vs_hard_time_per_image"] = {"value": training.get("ldg-online_vs_hard_time"),
                                                             "limit": None, "met": None}
        use_cuda = torch.cuda.is_available() if cfg.cuda is None else cfg.cuda
        cuda = _cuda(cfg, log) if use_cuda else {"available": torch.cuda.is_available(), "note": "skipped"}
    finally:
        torch.set_num_threads(old_threads)
    machine = machine_info(cfg.threads)
    machine["loadavg_before"] = load_before
    machine["loadavg_after"] = machine.pop("loadavg")
    return {"machine": machine, "config": asdict(cfg), "rows": rows, "targets": targets, "exports": exports,
            "training": training, "cuda": cuda, "duration_s": round(time.perf_counter() - t_start, 1),
            "method": "latency p50 = median of per-round medians (batch 1); p95 over all calls; cpu_ms = process "
                      "CPU time per call (median); img_s = batch / median call time; *_x_base = ratio to baseline"}


def _target_entry(value, limit) -> dict:
    return {"value": value, "limit": limit, "met": None if value is None else bool(value <= limit)}


def _targets(rows: list[dict]) -> dict:
    by = {r["model"]: r for r in rows}
    ef, base = by.get("efficientface"), by.get(BASELINE)
    out = {}
    if ef and base:
        lim = TARGETS["efficientface_eager_vs_baseline_eager"]
        out["efficientface_eager_vs_baseline_eager"] = {
            **_target_entry(ef["eager_p50_ms_x_base"], lim), "cpu_time_value": ef["eager_cpu_ms_x_base"],
            "cpu_time_met": None if ef["eager_cpu_ms_x_base"] is None else bool(ef["eager_cpu_ms_x_base"] <= lim)}
    if ef:
        lim = TARGETS["efficientface_ort_vs_efficientface_eager"]
        out["efficientface_ort_vs_efficientface_eager"] = {
            **_target_entry(ef["ort_vs_eager"], lim), "cpu_time_value": ef["ort_vs_eager_cpu"],
            "cpu_time_met": None if ef["ort_vs_eager_cpu"] is None else bool(ef["ort_vs_eager_cpu"] <= lim)}
    return out


TABLE_COLUMNS = ["model", "params", "paper_mmacs", "plain_mmacs", "eager_p50_ms", "eager_p95_ms", "eager_cpu_ms",
                 "eager_img_s", "nhwc_p50_ms", "nhwc_img_s", "nhwc_vs_eager", "nhwc_vs_eager_batch",
                 "ort_p50_ms", "ort_p95_ms", "ort_cpu_ms", "ort_img_s", "ort_vs_eager",
                 "paper_mmacs_x_base", "eager_p50_ms_x_base", "eager_cpu_ms_x_base", "ort_p50_ms_x_base",
                 "eager_img_s_x_base"]


def format_report(result: dict) -> str:
    """The human-readable report: machine, the table, training, CUDA, targets."""
    import io
    from contextlib import redirect_stdout

    from .report import format_table

    m, c = result["machine"], result["config"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        print(f"machine: {m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores "
              f"({m['usable_cores']} usable), {m['memory_gb']} GB; {m['os']}")
        print(f"software: python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}")
        print(f"threads: torch {m['torch_threads']}, onnxruntime {m['ort_threads']}; load average before "
              f"{m['loadavg_before']}, after {m['loadavg_after']}; {m['time']}; run took {result['duration_s']} s")
        print(f"input {c['input_size']}x{c['input_size']}; latency batch 1: {c['repeats']} rounds x "
              f"{c['latency_iters']} calls after {c['warmup']} warm-up; throughput batch {c['throughput_batch']}: "
              f"{c['throughput_repeats']} calls; ONNX exporter {c['exporter']}\n")
        print(format_table([{k: ("-" if r.get(k) is None else r.get(k)) for k in TABLE_COLUMNS}
                            for r in result["rows"]], TABLE_COLUMNS))
        print("\n" + result["method"])
        for name, e in result.get("exports", {}).items():
            if e.get("error") or e.get("fallback_reason"):
                print(f"onnx {name}: {e.get('error') or e.get('fallback_reason')}")
        t = result["training"]
        print("\ntraining throughput (efficientface, CPU):")
        if not t.get("available"):
            print(f"  {t.get('note')}")
        else:
            rows = [{"target": k, **v} for k, v in t["targets"].items()]
            print(format_table(rows, sorted({k for r in rows for k in r}, key=lambda k: (k != "target", k))))
            print(f"  CPU time per image vs hard: ldg-online {t.get('ldg-online_vs_hard_time')}, "
                  f"ldg-cached {t.get('ldg-cached_vs_hard_time')}; channels-last vs NCHW (hard) "
                  f"{t.get('nhwc_vs_nchw_time')}")
        cu = result["cuda"]
        print("\nCUDA:", cu.get("device") if cu.get("available") and cu.get("rows") else cu.get("note", "not available"))
        if cu.get("rows"):
            print(format_table(cu["rows"], sorted({k for r in cu["rows"] for k in r}, key=lambda k: (k != "model", k))))
        print("\ntargets (ratios from this run):")
        for name, tv in result["targets"].items():
            met = {True: "met", False: "MISSED", None: "n/a"}[tv["met"]]
            extra = f"; from CPU time {tv['cpu_time_value']}" if "cpu_time_value" in tv else ""
            lim = f" <= {tv['limit']}" if tv["limit"] is not None else " (documented, no limit)"
            print(f"  {name}: {tv['value']}{lim}: {met}{extra}")
    return buf.getvalue()


SECTIONS = ("conv1", "maxpool", "stage2", "modulator", "local", "stage3", "stage4", "conv5")


def section_profile(models=("baseline", "efficientface"), input_size: int = 224, iters: int = 100,
                    threads: int = 1, seed: int = 0) -> dict:
    """Per-block CPU time (ms, median) of ShuffleNet-family models at batch 1, models interleaved.

    Forward pre/post hooks read the thread's CPU clock around each top-level block, so the
    table says where EfficientFace's extra time over the baseline goes (stem width, LFE, CSM).
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    clock = time.thread_time
    samples: dict = {}
    built, handles = {}, []
    try:
        for name in models:
            m = _seeded_model(name, seed)
            for sec in SECTIONS:
                mod = getattr(m, sec, None)
                if mod is None:
                    continue
                key = (name, sec)
                start = {}
                handles.append(mod.register_forward_pre_hook(lambda *_, st=start: st.__setitem__(0, clock())))
                handles.append(mod.register_forward_hook(
                    lambda *_, st=start, k=key: samples.setdefault(k, []).append(clock() - st[0])))
            built[name] = m
        x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))
        totals = {n: [] for n in built}
        with torch.inference_mode():
            for m in built.values():
                for _ in range(5):
                    m(x)
            samples.clear()
            for _ in range(iters):
                for n, m in built.items():
                    c0 = clock()
                    m(x)
                    totals[n].append(clock() - c0)
    finally:
        for h in handles:
            h.remove()
        torch.set_num_threads(old)
    out = {"input_size": input_size, "iters": iters, "threads": threads, "loadavg": [round(v, 2) for v in os.getloadavg()],
           "models": {}}
    for n in built:
        secs = {sec: round(statistics.median(samples[(n, sec)]) * 1e3, 3) for sec in SECTIONS if (n, sec) in samples}
        total = round(statistics.median(totals[n]) * 1e3, 3)
        secs["other"] = round(total - sum(secs.values()), 3)
        out["models"][n] = {"total_cpu_ms": total, "sections_cpu_ms": secs}
    return out


def format_sections(prof: dict) -> str:
    names = list(prof["models"])
    lines = [f"per-block CPU time, ms (median of {prof['iters']}, batch 1, {prof['input_size']}px, "
             f"{prof['threads']} thread, load {prof['loadavg']})",
             "block      " + "".join(f"{n:>15s}" for n in names)]
    for sec in (*SECTIONS, "other"):
        vals = [prof["models"][n]["sections_cpu_ms"].get(sec) for n in names]
        lines.append(f"{sec:10s} " + "".join(f"{'-' if v is None else v:>15}" for v in vals))
    lines.append(f"{'total':10s} " + "".join(f"{prof['models'][n]['total_cpu_ms']:>15}" for n in names))
    return "\n".join(lines) + "\n"
