"""Pre-logit embeddings -> UMAP -> interactive scatter, cached on disk.

``compute_embedding(model, faces)`` runs the model once over the faces (pre-logit features
``forward_head(forward_features(x), pre_logits=True)`` and the softmax from the same pass), fits
UMAP and stores features + coordinates + probabilities in one ``.npz`` keyed by
(model weights hash, data key, UMAP/preprocessing parameters).  Widgets and app callbacks only
*read* that cache: fitting UMAP takes seconds to minutes and must never run inside a callback.

The cache lives under ``fer_lab.data.cache_root()/embeddings`` (``$FER_LAB_CACHE`` or
``~/.cache/fer_lab``), outside the repository: features of research-only images (FER+) are
derived data and must not be committed.

umap-learn: a ``random_state`` makes the layout reproducible but forces single-threaded
optimisation; the default here is ``random_state=None`` (parallel, not reproducible) and tests
pass a seed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn

from .distributions import as_face_set, entropy, label_names

__all__ = ["Embedding", "extract_features", "fit_umap", "weights_hash", "data_key", "compute_embedding", "fit_pca", "LAYOUTS",
           "embedding_figure", "embedding_widget", "embedding_cache_dir"]

EMBEDDING_FORMAT = 1


@dataclass
class Embedding:
    features: np.ndarray          # N x D float32 pre-logit features
    coords: np.ndarray            # N x 2 float32 UMAP coordinates
    probs: np.ndarray             # N x C float32 softmax of the same forward pass
    labels: np.ndarray | None     # N int64 (annotated), if known
    datasets: np.ndarray          # N str, source name per row ("data" for a single source)
    label_names: list = field(default_factory=list)
    key: str = ""
    params: dict = field(default_factory=dict)
    path: str | None = None
    from_cache: bool = False

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    def __len__(self) -> int:
        return len(self.coords)


def extract_features(model: nn.Module, images, batch_size: int = 64, input_size: int | None = None,
                     with_probs: bool = False):
    """Pre-logit features (N, D) float32 (:func:`fer_lab.engine.run_model` with ``features=True``),
    and with ``with_probs`` the softmax (N, C) of the classifier applied to those same features."""
    from ..engine import run_model

    if not all(hasattr(model, a) for a in ("forward_features", "forward_head")):
        raise TypeError(f"{type(model).__name__} lacks forward_features/forward_head (the fer_lab model contract)")
    feats = run_model(model, as_face_set(images), features=True, batch_size=batch_size, input_size=input_size)
    if not with_probs:
        return feats
    head = model.get_classifier()
    with torch.inference_mode():
        w = next(head.parameters())
        logits = head(torch.from_numpy(feats).to(device=w.device, dtype=w.dtype))
        probs = torch.softmax(logits.float(), 1).cpu().numpy()
    return feats, probs


def fit_umap(features, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
             random_state: int | None = None, n_components: int = 2) -> np.ndarray:
    """UMAP of the features -> (N, n_components) float32 (``random_state`` forces one thread)."""
    import warnings

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"UMAP needs an N x D feature array with N >= 4, got shape {x.shape}")
    n_neighbors = int(min(n_neighbors, len(x) - 1))
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # the random_state note
        warnings.filterwarnings("ignore", category=FutureWarning)
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                            n_components=n_components, random_state=random_state,
                            init="spectral" if len(x) > n_components + 1 else "random")
        return reducer.fit_transform(x).astype(np.float32)


LAYOUTS = ("umap", "pca")


def fit_pca(features, n_components: int = 2) -> np.ndarray:
    """Linear 2-D layout: the top principal components (sign fixed so the largest loading of each
    axis is positive).  No JIT, milliseconds: the smoke-mode/quick-look stand-in for UMAP, whose
    numba compilation costs 30-60 s per process on the shared CPU."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"PCA needs an N x D feature array with N >= 2, got shape {x.shape}")
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:n_components]
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    out = np.zeros((len(x), n_components), np.float32)
    out[:, :len(vt)] = x @ vt.T
    return out


def weights_hash(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): identical weights -> same key."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_key(source) -> str:
    """A stable key for a face source: a dataset's/cache's fingerprint, else a hash of the pixels."""
    if isinstance(source, Mapping):
        return hashlib.sha256(json.dumps({str(k): data_key(v) for k, v in source.items()},
                                         sort_keys=True).encode()).hexdigest()
    if hasattr(source, "fingerprint") and callable(source.fingerprint):
        return "ds:" + source.fingerprint()
    if isinstance(getattr(source, "key", None), str) and source.key:  # "" = a FaceSet of unknown origin
        return "cache:" + source.key
    fs = as_face_set(source)
    h = hashlib.sha256()
    for img in fs.images:
        a = np.ascontiguousarray(img)
        h.update(f"{a.shape}".encode())
        h.update(a.tobytes())
    if fs.labels is not None:
        h.update(np.asarray(fs.labels, np.int64).tobytes())
    return "px:" + h.hexdigest()


def embedding_cache_dir(cache_dir=None) -> Path:
    from ..data.cache import cache_root

    return cache_root(cache_dir) / "embeddings"


def _gather(sources) -> tuple[list, np.ndarray | None, np.ndarray, object]:
    if isinstance(sources, Mapping):
        items = list(sources.items())
    else:
        items = [("data", sources)]
    images, labels, names, lmap = [], [], [], None
    have_labels = True
    for name, src in items:
        fs = as_face_set(src)
        images.extend(list(fs.images))
        names.extend([str(name)] * len(fs))
        if fs.labels is None:
            have_labels = False
        else:
            labels.append(fs.labels)
        if fs.label_map is not None:
            if lmap is not None and list(lmap) != list(fs.label_map):
                raise ValueError(f"sources have different label maps: {list(lmap)} vs {list(fs.label_map)}")
            lmap = fs.label_map
    return images, (np.concatenate(labels) if have_labels and labels else None), np.asarray(names), lmap


def compute_embedding(model: nn.Module, sources, *, n_neighbors: int = 15, min_dist: float = 0.1,
                      metric: str = "cosine", random_state: int | None = None, input_size: int | None = None,
                      batch_size: int = 64, cache_dir=None, key: str | None = None, use_cache: bool = True,
                      refresh: bool = False, method: str = "umap") -> Embedding:
    """Features + UMAP coordinates for ``sources`` (one face source or a dict name -> source,
    e.g. {"ferplus": cache, "synthfer": data} to colour by dataset), cached on disk.

    ``key`` overrides the data part of the cache key (e.g. a dataset name + split you trust).
    ``refresh`` recomputes and overwrites; ``use_cache=False`` neither reads nor writes.
    ``method``: "umap" (default) or "pca" (:func:`fit_pca`, instant; the UMAP options are unused).
    """
    if method not in LAYOUTS:
        raise ValueError(f"method must be one of {LAYOUTS}, got {method!r}")
    from .cam import preprocess_for, model_label_names

    pre = preprocess_for(model, input_size)
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist, "metric": metric, "random_state": random_state,
              "input_size": pre.input_size, "mean": list(pre.mean), "std": list(pre.std),
              "grayscale": pre.grayscale, "format": EMBEDDING_FORMAT}
    if method != "umap":  # keeps the keys of existing UMAP cache files valid
        params = {**params, "method": method, "n_neighbors": None, "min_dist": None, "metric": None,
                  "random_state": None}
    dkey = key or data_key(sources)
    full_key = hashlib.sha256(json.dumps({"weights": weights_hash(model), "data": dkey, "params": params},
                                         sort_keys=True).encode()).hexdigest()
    path = embedding_cache_dir(cache_dir) / f"{full_key}.npz"
    names = model_label_names(model)
    if use_cache and not refresh and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = z["labels"] if z["has_labels"] else None
                return Embedding(z["features"], z["coords"], z["probs"], labels, z["datasets"].astype(str),
                                 names, full_key, params, str(path), True)
        except (OSError, KeyError, ValueError):
            pass  # unreadable/old cache file: recompute and overwrite
    images, labels, ds_names, lmap = _gather(sources)
    if lmap is not None and list(lmap) != names:
        raise ValueError(f"the model's classes {names} differ from the data's label map {list(lmap)}")
    feats, probs = extract_features(model, images, batch_size, pre.input_size, with_probs=True)
    coords = fit_umap(feats, n_neighbors, min_dist, metric, random_state) if method == "umap" else fit_pca(feats)
    emb = Embedding(feats, coords, probs, labels, ds_names, names, full_key, params, None, False)
    if use_cache:
        from ..checkpoint import atomic_write

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, features=feats, coords=coords, probs=probs, datasets=ds_names.astype("U"),
                         labels=labels if labels is not None else np.zeros(0, np.int64),
                         has_labels=np.array(labels is not None))

        atomic_write(path, write)
        emb.path = str(path)
    return emb


def embedding_figure(emb: Embedding, color_by="label", *, images=None, thumb_px: int = 64,
                     title: str | None = None):
    """Interactive scatter of an :class:`Embedding`.

    ``color_by``: "label" (annotated), "prediction", "entropy" (of the model's softmax),
    "confidence", "dataset", or an array of N values.  ``images`` (the same faces, in order) adds
    hover thumbnails (stored as data URIs in ``customdata``; see :func:`embedding_widget`).
    """
    from .viz import embedding_scatter, image_data_uri

    n = len(emb)
    names = emb.label_names or label_names(None, emb.probs.shape[1])
    pred = emb.pred
    categorical = True
    if isinstance(color_by, str):
        if color_by == "label":
            if emb.labels is None:
                raise ValueError("this embedding has no annotated labels; colour by 'prediction' instead")
            color = np.asarray([names[i] for i in emb.labels])
        elif color_by == "prediction":
            color = np.asarray([names[i] for i in pred])
        elif color_by == "entropy":
            color, categorical = entropy(emb.probs), False
        elif color_by == "confidence":
            color, categorical = emb.probs.max(1), False
        elif color_by == "dataset":
            color = emb.datasets
        else:
            raise ValueError(f"color_by must be label/prediction/entropy/confidence/dataset or an array, got {color_by!r}")
        cname = color_by
    else:
        color, cname, categorical = np.asarray(color_by), "value", None
    hover = []
    for i in range(n):
        s = f"#{i} [{emb.datasets[i]}]"
        if emb.labels is not None:
            s += f"<br>label: {names[emb.labels[i]]}"
        s += f"<br>pred: {names[pred[i]]} ({emb.probs[i].max():.2f})"
        hover.append(s)
    thumbs = None
    if images is not None:
        faces = as_face_set(images).images
        if len(faces) != n:
            raise ValueError(f"{len(faces)} images for {n} embedded points")
        thumbs = [image_data_uri(f, thumb_px) for f in faces]
    fig = embedding_scatter(emb.coords, color, color_name=cname, categorical=categorical, hover_text=hover,
                            thumbnails=thumbs, title=title)
    method = emb.params.get("method", "umap").upper()
    fig.update_xaxes(title_text=f"{method} 1")
    fig.update_yaxes(title_text=f"{method} 2")
    return fig


def embedding_widget(fig, emb: Embedding | None = None):
    """Jupyter: the scatter as a FigureWidget next to an image that shows the hovered face.

    With ``emb`` (the :class:`Embedding` the figure was drawn from), clicking a point also shows
    that face's predicted label distribution (``viz.distribution_bar``) under the image.
    Needs ipywidgets + anywidget (plotly 7's FigureWidget).  The handlers only read what is
    already stored (thumbnails in the figure, probabilities in ``emb``): nothing is recomputed.
    """
    import base64

    import ipywidgets as widgets
    import plotly.graph_objects as go

    from .viz import distribution_bar

    fw = go.FigureWidget(fig)
    img = widgets.Image(format="png", width=128, height=128)
    names = None if emb is None else (emb.label_names or label_names(None, emb.probs.shape[1]))
    dist = None if emb is None else go.FigureWidget(distribution_bar(emb.probs[0], names, "click a point"))
    if dist is not None:
        dist.update_layout(width=360, height=300)

    def show(trace, i):
        uri = trace.customdata[i][1]
        if uri:
            img.value = base64.b64decode(uri.split(",", 1)[1])

    def on_hover(trace, points, state):
        if points.point_inds:
            show(trace, points.point_inds[0])

    def on_click(trace, points, state):
        if not points.point_inds:
            return
        i = points.point_inds[0]
        show(trace, i)
        idx = int(trace.customdata[i][0])
        new = distribution_bar(emb.probs[idx], names, f"point #{idx}")
        with dist.batch_update():
            dist.data[0].y, dist.data[0].text = new.data[0].y, new.data[0].text
            dist.data[0].marker.color = new.data[0].marker.color
            dist.layout.title.text = new.layout.title.text

    for tr in fw.data:
        tr.on_hover(on_hover)
        if dist is not None:
            tr.on_click(on_click)
    side = img if dist is None else widgets.VBox([img, dist])
    return widgets.HBox([fw, side])
