"""Loopback load test and single-request timing for the app (a development tool, not shipped in the package).

    python tools/loadtest.py                      # 100 /analyze requests, 8 concurrent clients
    python tools/loadtest.py --requests 24 --clients 4 --url http://127.0.0.1:7860/
    python tools/loadtest.py --profile 20         # one request in-process, p50 + breakdown

Needs fer_lab installed with the ``app`` extra (``pip install -e ".[dev]"``); tests/test_app.py
imports :func:`run_load` and :func:`default_image` from here.

Without ``--url`` the app (shipped weights, or ``$FER_LAB_WEIGHTS``) is started in a separate
Python process on 127.0.0.1 at a free port for the duration of the test, so the client threads
do not share the server's interpreter lock.  Every request uploads a
*distinct* image (one pixel changed), so the server's per-file detection cache never hides the
detection cost.  Latency = client-side wall time of one ``/analyze`` call (upload, queue wait,
detection, both models, both CAMs, encoding of the returned images and figures, and — as a page
does — fetching the returned images; ``--no-download`` leaves that last step out).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LoadReport", "run_load", "profile_request", "default_image", "free_port", "start_server", "main"]


@dataclass
class LoadReport:
    requests: int
    clients: int
    failures: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    wall_s: float
    throughput_rps: float
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.clients} clients: {self.failures} failed; "
                f"p50 {self.p50_ms:.0f} ms, p95 {self.p95_ms:.0f} ms, max {self.max_ms:.0f} ms; "
                f"{self.throughput_rps:.2f} req/s over {self.wall_s:.1f} s")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def default_image(width: int = 640, height: int = 480) -> np.ndarray:
    """A 640x480 photo with one face: the public-domain astronaut (scikit-image's copy, 512 px),
    scaled to the height and centred on a grey canvas."""
    import skimage.data
    from PIL import Image

    face = Image.fromarray(skimage.data.astronaut()).resize((height, height), Image.BILINEAR)
    canvas = Image.new("RGB", (width, height), (128, 128, 128))
    canvas.paste(face, ((width - height) // 2, 0))
    return np.asarray(canvas)


def _variants(img: np.ndarray, n: int, folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i in range(n):
        v = img.copy()
        v[0, i % v.shape[1], 0] ^= 1 + (i // v.shape[1]) % 255  # distinct bytes, same picture
        p = folder / f"req_{i:04d}.png"
        Image.fromarray(v).save(p)
        paths.append(str(p))
    return paths


def run_load(url: str, image: np.ndarray, requests: int = 100, clients: int = 8, face: int = 0,
             cam_method: str = "gradcam", models: tuple[str | None, str | None] | None = None,
             timeout_s: float = 600.0, download: bool = True) -> LoadReport:
    """``requests`` /analyze calls spread over ``clients`` concurrent gradio_client Clients."""
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory(prefix="fer_lab_load_") as tmp:
        dl = str(Path(tmp) / "downloads") if download else False
        paths = _variants(image, requests, Path(tmp))
        local = threading.local()
        latencies, errors = [], []
        lock = threading.Lock()
        base_client = Client(url, verbose=False)
        api = base_client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/analyze"]
        defaults = {p["parameter_name"]: p.get("parameter_default") for p in api["parameters"]}
        left, right = models or (defaults.get("baseline_model"), defaults.get("efficientface_model"))

        def one(path: str):
            if not hasattr(local, "client"):
                local.client = Client(url, verbose=False, download_files=dl)
            t0 = time.perf_counter()
            try:
                out = local.client.predict(handle_file(path), face, False, cam_method, left, right,
                                           api_name="/analyze")
                if not isinstance(out[-1], dict) or not out[-1].get("models"):
                    raise RuntimeError(f"unexpected response: {out[-1]!r}")
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
            except Exception as e:  # count, keep going: the report says what failed
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

        # one request first, not counted: the server's first call pays for lazy imports and caches
        warm_dir = Path(tmp) / "warm"
        warm_dir.mkdir()
        Client(url, verbose=False, download_files=dl).predict(
            handle_file(_variants(image, 1, warm_dir)[0]), face, False, cam_method, left, right, api_name="/analyze")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(one, paths, timeout=timeout_s))
        wall = time.perf_counter() - t0
    return LoadReport(requests=requests, clients=clients, failures=len(errors),
                      p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
                      max_ms=max(latencies, default=float("nan")), wall_s=wall,
                      throughput_rps=len(latencies) / wall if wall > 0 else 0.0, errors=errors[:10])


def profile_request(engine, image: np.ndarray, repeats: int = 20, cam_method: str = "gradcam") -> dict:
    """Time ``AppEngine.analyze`` in-process on distinct copies of ``image``: p50 total + breakdown.

    Breakdown (p50 of each): image decode, face detection, per model preprocessing + the one pass
    that gives probabilities and CAM, the rest (drawing boxes, CAM overlays, plotly figures,
    writing the output images).
    """
    from fer_lab.io import load_image

    left, right = (engine.hub.default_for(i) for i in range(2))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fer_lab_prof_") as tmp:
        paths = _variants(image, repeats + 1, Path(tmp))
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            load_image(path)
            decode = (time.perf_counter() - t0) * 1000.0
            t0 = time.perf_counter()
            out = engine.analyze(path, 0, False, cam_method, left, right)
            total = (time.perf_counter() - t0) * 1000.0
            s = out[-1]
            if i == 0:
                continue  # warm-up
            row = {"total_ms": total, "decode_ms": decode, "detect_ms": s["detect_ms"]}
            for side, m in s["models"].items():
                row[f"{side}_model_cam_ms"] = m["model_cam_ms"]
            row["other_ms"] = total - decode - sum(v for k, v in row.items() if k not in ("total_ms", "decode_ms"))
            rows.append(row)
    keys = list(rows[0])
    res = {k: round(statistics.median(r[k] for r in rows), 1) for k in keys}
    res["total_p95_ms"] = round(percentile([r["total_ms"] for r in rows], 95), 1)
    res["repeats"] = len(rows)
    res["image"] = f"{image.shape[1]}x{image.shape[0]}"
    res["faces_found"] = s["faces_found"]
    return res


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(timeout_s: float = 180.0):
    """Start the app in a child process; returns (Popen, url) once it answers."""
    import subprocess
    import urllib.request

    port = free_port()
    code = ("from fer_lab.app import build_demo, launch_kwargs; "
            f"build_demo().launch(server_name='127.0.0.1', server_port={port}, quiet=True, **launch_kwargs())")
    log = tempfile.TemporaryFile()  # a pipe nobody reads would block a chatty server
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the app exited during start-up: {log.read().decode(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise TimeoutError(f"the app did not answer on {url} within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/loadtest.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running app (default: build and serve one here)")
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--image", help="image to send (default: first data/examples image or the astronaut, 640x480)")
    ap.add_argument("--profile", type=int, metavar="N", default=0,
                    help="instead of the load test, time N in-process requests with a breakdown")
    ap.add_argument("--no-download", action="store_true",
                    help="do not fetch the returned images (server round trip only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        ap.error("--requests and --clients must be >= 1")

    if args.image:
        from fer_lab.io import load_image

        image = load_image(args.image)
    else:
        image = default_image()

    if args.profile:
        import torch

        from fer_lab.app.events import AppEngine
        from fer_lab.app.ui import TORCH_THREADS

        torch.set_num_threads(TORCH_THREADS)  # as in the app

        engine = AppEngine()
        engine.warmup()
        res = profile_request(engine, image, args.profile)
        print(json.dumps(res, indent=2) if args.json else
              "  ".join(f"{k}={v}" for k, v in res.items()))
        return 0

    server = None
    url = args.url
    if url is None:
        server, url = start_server()
    try:
        rep = run_load(url, image, args.requests, args.clients, download=not args.no_download)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    print(json.dumps(asdict(rep), indent=2) if args.json else rep.summary())
    for e in rep.errors:
        print("  error:", e, file=sys.stderr)
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
