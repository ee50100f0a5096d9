"""Decode-once array cache: face crops resized to ``size`` and stored as uint8 ``.npy`` memmaps.

Layout of one cache (a folder under ``$FER_LAB_CACHE`` or ``~/.cache/fer_lab``)::

    <dataset>-<split>-<size>[-gray]-<key16>/
        images.npy   uint8 N x S x S x 3 (opened with mmap_mode="r")
        labels.npy   int64 N
        dists.npy    float32 N x C            (only when the dataset has distributions)
        extra_<name>.npy                      (per-sample arrays a dataset exposes, e.g. synthfer's yaw)
        manifest.json  key, the fields hashed into it, ids, label map, excluded images, timings

The key hashes everything that changes the pixels or labels: adapter name, absolute root, split,
class count, adapter options, a fingerprint of the sample list (ids, labels, boxes,
distributions), the crop recipe, size, grayscale and :data:`DATA_LAYER_VERSION`.  A build
writes into a temporary sibling folder and renames it into place, so a killed build never
leaves a half cache; a concurrent build of the same key simply loses the rename race and opens
the winner's.  Images that fail to decode are recorded in the manifest and left out.

Decoding runs in a fork-based process pool (``workers`` processes, default: all cores) that
writes straight into the memmap; tqdm shows progress.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from ..labels import LabelMap
from .base import DATA_LAYER_VERSION, FERDataset, Problem
from .faceset import FaceSet

__all__ = ["ArrayCache", "build_cache", "cache_root", "cache_key", "run_spans"]

CACHE_FORMAT = 1
_CHUNK = 256


def cache_root(cache_dir=None) -> Path:
    """``cache_dir`` or ``$FER_LAB_CACHE`` or ``~/.cache/fer_lab``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FER_LAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fer_lab"


def _recipe_spec(recipe):
    """(recipe object or None for "whole image", JSON-able description for the key)."""
    if recipe is None or (isinstance(recipe, str) and recipe.strip().lower() == "none"):
        return None, "none"
    from ..faces import get_recipe

    obj = get_recipe(recipe)
    if not obj.detect:  # "none", "prealigned": the whole image, same pixels
        return None, "none"
    return obj, obj.to_dict()


def cache_key(ds: FERDataset, size: int | None, recipe="none", grayscale: bool = False) -> tuple[str, dict]:
    """(sha256 hex key, the JSON-able fields it hashes)."""
    _, spec = _recipe_spec(recipe)
    fields = {"dataset": ds.describe(), "fingerprint": ds.fingerprint(), "recipe": spec,
              "size": None if size is None else int(size), "grayscale": bool(grayscale),
              "data_layer_version": DATA_LAYER_VERSION, "cache_format": CACHE_FORMAT}
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), fields


class ArrayCache(FaceSet):
    """A built cache opened read-only: a :class:`FaceSet` whose ``images`` is a memmap (the rest is
    in memory) and whose ``key`` is the cache key."""

    def __init__(self, path):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise FileNotFoundError(f"{self.path} is not a fer_lab cache (no manifest.json)")
        self.manifest: dict = json.loads(mf.read_text())
        self.key: str = self.manifest["key"]
        self.images: np.memmap = np.load(self.path / "images.npy", mmap_mode="r")
        self.labels: np.ndarray = np.load(self.path / "labels.npy")
        self.dists: np.ndarray | None = (np.load(self.path / "dists.npy")
                                         if (self.path / "dists.npy").is_file() else None)
        self.ids: list[str] = list(self.manifest["ids"])
        self.label_map = LabelMap(self.manifest["label_map"])
        self.extras: dict[str, np.ndarray] = {
            p.stem[len("extra_"):]: np.load(p) for p in sorted(self.path.glob("extra_*.npy"))}
        self.problems = [Problem(**{k: d[k] for k in ("path", "line", "kind", "message")})
                         for d in self.manifest.get("problems", [])]
        n = len(self.labels)
        if len(self.images) != n or len(self.ids) != n or (self.dists is not None and len(self.dists) != n):
            raise RuntimeError(f"cache {self.path} is inconsistent (array lengths differ); delete it")

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.label_map)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": np.asarray(self.images[i]), "label": int(self.labels[i]),
                "dist": None if self.dists is None else self.dists[i], "id": self.ids[i]}

    def batch(self, indices: Sequence[int]):
        """Indices -> dict of torch tensors: image uint8 B x S x S x 3, label int64, dist float32|None.

        Rows are read in sorted order (sequential memmap reads) and returned in the order given.
        """
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        imgs = np.empty((len(idx),) + self.images.shape[1:], dtype=np.uint8)
        imgs[order] = self.images[idx[order]]
        out = {"image": torch.from_numpy(imgs), "label": torch.from_numpy(self.labels[idx])}
        out["dist"] = None if self.dists is None else torch.from_numpy(self.dists[idx])
        return out

    def __repr__(self) -> str:
        return (f"ArrayCache({self.manifest['dataset']['name']}/{self.manifest['dataset']['split']}, "
                f"n={len(self)}, size={self.size}, key={self.key[:12]}, path={str(self.path)!r})")


# -- building ------------------------------------------------------------------------------
_STATE: dict = {}


def _process_one(ds: FERDataset, i: int, size, recipe_obj, grayscale: bool) -> np.ndarray:
    from ..preprocess import resize_square

    img = ds.load_image(i)
    if recipe_obj is not None:
        from ..faces import extract_faces

        face, img = extract_faces(img, recipe_obj, detect=True, fallback_whole=True)[0]
        if face is None:
            _STATE["noface"].append(i)
    if size is None:
        h, w = img.shape[:2]
        if (h, w) != (_STATE["native"], _STATE["native"]):
            raise _SizeMismatch(f"{ds.records[i].path} is {w}x{h}, not {_STATE['native']}x{_STATE['native']}; "
                                "size=None (native) needs all images the same square size: pass a size")
        return resize_square(img, h, grayscale) if grayscale else img
    return resize_square(img, int(size), grayscale)


class _SizeMismatch(ValueError):
    pass


def _work(span: tuple[int, int]) -> list[tuple[int, str, str]]:
    """Fill rows [a, b) of the memmap; return (index, kind, message) for each failure."""
    st = _STATE
    if st.get("mm") is None:
        st["mm"] = np.load(st["images_path"], mmap_mode="r+")
    mm, ds = st["mm"], st["ds"]
    bad = []
    st["noface"] = []
    for i in range(*span):
        try:
            mm[i] = _process_one(ds, i, st["size"], st["recipe"], st["grayscale"])
        except _SizeMismatch as e:
            bad.append((i, "size", str(e)))
        except (ValueError, OSError) as e:
            bad.append((i, "corrupt", str(e)))
    mm.flush()
    return bad + [(i, "noface", "no face detected: whole image used") for i in st["noface"]]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(root: Path) -> None:
    for p in root.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def build_cache(ds: FERDataset, size: int | None, *, recipe="none", grayscale: bool = False,
                cache_dir=None, progress: bool = True, workers: int | None = None,
                rebuild: bool = False) -> ArrayCache:
    """Decode + crop + resize every sample of ``ds`` once; reuse the cache when the key matches.

    ``size=None`` keeps the native size (all images must share one square size, e.g. FER+ 48).
    ``workers``: processes for decoding (default ``os.cpu_count()``; 1 = in this process).
    """
    if size is not None and (int(size) < 8 or int(size) > 1024):
        raise ValueError(f"cache size must be in 8..1024 pixels (or None for native), got {size}")
    if len(ds) == 0:
        raise ValueError(f"{ds!r} has no samples to cache"
                         + (f"; first problem: {ds.problems[0]}" if ds.problems else ""))
    recipe_obj, _ = _recipe_spec(recipe)
    key, fields = cache_key(ds, size, recipe, grayscale)
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{ds.name}-{ds.split}-{size or 'native'}{'-gray' if grayscale else ''}-{key[:16]}"
    if (final / "manifest.json").is_file() and not rebuild:
        cache = ArrayCache(final)
        if cache.key == key:
            return cache
    _clean_stale_tmp(root)

    n = len(ds)
    t0 = time.perf_counter()
    native = None
    if size is None:
        native = _probe_native_size(ds, recipe_obj)
    side = int(size) if size is not None else native
    tmp = root / f".tmp-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        images_path = tmp / "images.npy"
        mm = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(n, side, side, 3))
        del mm
        _STATE.clear()
        _STATE.update(ds=ds, size=size, recipe=recipe_obj, grayscale=grayscale, native=native,
                      images_path=str(images_path), mm=None)
        bad = _run_pool(n, workers, progress, f"cache {ds.name}/{ds.split}@{size or 'native'}")
        _STATE.clear()  # also drops a serial run's memmap handle
        noface = [i for i, kind, _ in bad if kind == "noface"]
        bad = [b for b in bad if b[1] != "noface"]
        sizes = [b for b in bad if b[1] == "size"]
        if sizes:
            raise ValueError(sizes[0][2] + f" ({len(sizes)} images differ)")
        bad_idx = {i for i, _, _ in bad}
        keep = np.array([i for i in range(n) if i not in bad_idx], dtype=np.int64)
        if bad_idx:
            _compact(images_path, keep, (side, side, 3))
        labels = ds.labels[keep]
        np.save(tmp / "labels.npy", labels)
        dists = ds.dists
        if dists is not None:
            np.save(tmp / "dists.npy", dists[keep].astype(np.float32))
        for name, arr in ds.extras.items():
            np.save(tmp / f"extra_{name}.npy", np.asarray(arr)[keep])
        ids = ds.ids
        problems = [Problem(ds.records[i].path, None, kind, msg).to_dict() for i, kind, msg in sorted(bad)]
        secs = time.perf_counter() - t0
        manifest = {"format": CACHE_FORMAT, "key": key, "key_fields": fields,
                    "dataset": ds.describe(), "n": int(len(keep)), "n_dataset": n,
                    "size": side, "native_size": size is None, "grayscale": bool(grayscale),
                    "label_map": ds.label_map.to_list(), "has_dists": dists is not None,
                    "ids": [ids[i] for i in keep], "problems": problems,
                    "dataset_problems": len(ds.problems), "recipe": fields["recipe"],
                    "no_face_detected": [ds.records[i].id for i in sorted(noface)], "excluded": dict(ds.excluded),
                    "build_seconds": round(secs, 3), "images_per_second": round(n / max(secs, 1e-9), 1),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if rebuild and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race with an identical build
    except BaseException:
        _STATE.clear()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ArrayCache(final)


def _probe_native_size(ds: FERDataset, recipe_obj) -> int:
    """The (square) size of the first decodable image."""
    for i in range(min(len(ds), 64)):
        try:
            img = ds.load_image(i)
        except (ValueError, OSError):
            continue
        if recipe_obj is not None:
            raise ValueError("size=None (native) only works with recipe='none': crops vary in size")
        h, w = img.shape[:2]
        if h != w:
            raise ValueError(f"size=None (native) needs square images; {ds.records[i].path} is {w}x{h}")
        return int(h)
    raise ValueError("size=None: none of the first 64 images could be decoded")


def _run_pool(n: int, workers: int | None, progress: bool, desc: str) -> list:
    return run_spans(_work, n, workers=workers, progress=progress, desc=desc)


def run_spans(fn, n: int, *, workers: int | None = None, progress: bool = True, desc: str = "",
              chunk: int | None = None) -> list:
    """Call module-level ``fn((a, b))`` over spans of ``range(n)``; concatenate the returned lists.

    Uses a fork process pool (workers inherit module state set before the call, e.g. the
    dataset, without pickling it) when ``workers > 1``; tqdm counts items.
    """
    from tqdm.auto import tqdm

    chunk = chunk or _CHUNK
    spans = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    workers = max(1, int(workers or os.cpu_count() or 1))
    out: list = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        if workers == 1 or len(spans) <= 1 or "fork" not in mp.get_all_start_methods():
            for s in spans:
                out += fn(s)
                bar.update(s[1] - s[0])
        else:
            with mp.get_context("fork").Pool(min(workers, len(spans))) as pool:
                for s, res in zip(spans, pool.imap(fn, spans)):
                    out += res
                    bar.update(s[1] - s[0])
    return out


def _compact(images_path: Path, keep: np.ndarray, shape) -> None:
    """Rewrite images.npy with only the ``keep`` rows (bad images dropped)."""
    src = np.load(images_path, mmap_mode="r")
    out_path = images_path.with_name("images.compact.npy")
    dst = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(keep),) + tuple(shape))
    for a in range(0, len(keep), 4096):
        dst[a:a + 4096] = src[keep[a:a + 4096]]
    dst.flush()
    del src, dst
    os.replace(out_path, images_path)
