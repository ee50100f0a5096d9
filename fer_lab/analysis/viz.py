"""Every plotly figure fer_lab draws (notebooks, app and CLI only call these).

Builders take plain NumPy / pandas inputs and return ``plotly.graph_objects.Figure``; no model
code here.  :func:`save_png` writes a static image through kaleido only when a Chrome/Chromium is
already installed (kaleido 1.x must never try to download one).
"""
from __future__ import annotations

import os
import shutil
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["distribution_bar", "image_data_uri", "thumbnail_gallery", "cam_comparison_figure", "confusion_heatmap", "cooccurrence_heatmap",
           "line_curves", "perturbation_curve_figure", "faithfulness_figure", "reliability_diagram", "histogram",
           "embedding_scatter", "find_chrome", "save_png"]

# A light "plotly_white" look set through a few layout properties: validating a full template
# costs 45-130 ms per figure (measured in the app's request path); these cost ~1 ms.
_TEMPLATE = None
_STYLE = dict(paper_bgcolor="white", plot_bgcolor="white",
              xaxis=dict(gridcolor="#EBF0F8", zerolinecolor="#EBF0F8", linecolor="#EBF0F8"),
              yaxis=dict(gridcolor="#EBF0F8", zerolinecolor="#EBF0F8", linecolor="#EBF0F8"))


def _as_probs(probs, labels: Sequence[str]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 1:
        raise ValueError(f"expected one distribution (C,), got shape {p.shape}")
    if len(labels) != p.shape[0]:
        raise ValueError(f"{p.shape[0]} probabilities but {len(labels)} labels")
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN/inf")
    return p


def distribution_bar(probs, labels: Sequence[str], title: str | None = None, *,
                     reference=None, reference_name: str = "reference", name: str = "model",
                     highlight_max: bool = True) -> go.Figure:
    """Bar chart of one label distribution (a model's softmax, crowd votes, an LDG output).

    ``reference`` (optional, same length) is drawn as a second series, e.g. FER+ crowd votes
    next to the prediction.  The top class is drawn darker.
    """
    labels = [str(l) for l in labels]
    p = _as_probs(probs, labels)
    colors = ["#1f77b4"] * len(p)
    if highlight_max:
        colors[int(p.argmax())] = "#08306b"
    # one dict-built figure: this is on the app's request path, and plotly's incremental
    # update_layout/update_axes validation costs ~50-150 ms per call here (dict: ~1-3 ms)
    data = [dict(type="bar", x=labels, y=p.tolist(), name=name, marker=dict(color=colors),
                 text=[f"{v:.2f}" for v in p], textposition="outside",
                 hovertemplate="%{x}: %{y:.3f}<extra></extra>")]
    if reference is not None:
        r = _as_probs(reference, labels)
        data.append(dict(type="bar", x=labels, y=r.tolist(), name=reference_name, marker=dict(color="#ff7f0e"),
                         hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    layout = dict(title=dict(text=title) if title else None, showlegend=reference is not None,
                  barmode="group" if reference is not None else None,
                  margin=dict(l=40, r=10, t=50 if title else 20, b=40), paper_bgcolor="white", plot_bgcolor="white",
                  xaxis=dict(title=dict(text="expression"), **_STYLE["xaxis"]),
                  yaxis=dict(title=dict(text="probability"), range=[0, max(1.0, float(p.max()) * 1.1)],
                             **_STYLE["yaxis"]))
    fig = go.Figure(dict(data=data, layout={k: v for k, v in layout.items() if v is not None}))
    return fig


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def image_data_uri(img: np.ndarray, max_side: int | None = 96) -> str:
    """uint8 image -> ``data:image/png;base64,...`` (downscaled so figures stay small)."""
    import base64
    import io

    from PIL import Image

    from ..preprocess import to_rgb_uint8

    pil = Image.fromarray(to_rgb_uint8(img))
    if max_side and max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_gallery(images: Sequence[np.ndarray], captions: Sequence[str] | None = None, ncols: int = 8,
                      title: str | None = None, thumb_px: int = 96) -> go.Figure:
    """A grid of face thumbnails with captions (audit suspects, CAM overlays, examples)."""
    from plotly.subplots import make_subplots

    images = list(images)
    if not images:
        raise ValueError("thumbnail_gallery needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    ncols = max(1, min(int(ncols), len(images)))
    nrows = -(-len(images) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=list(captions) if captions else None,
                        horizontal_spacing=0.01, vertical_spacing=0.12 / max(nrows, 1) + 0.02)
    for i, img in enumerate(images):
        fig.add_trace(go.Image(source=image_data_uri(img, thumb_px), hoverinfo="skip"),
                      row=i // ncols + 1, col=i % ncols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=9)
    fig.update_layout(title=title, **_STYLE, height=170 * nrows + (60 if title else 20),
                      width=max(400, 140 * ncols), margin=dict(l=5, r=5, t=60 if title else 30, b=5))
    return fig


def cam_comparison_figure(result: dict, captions: Sequence[str] | None = None, thumb_px: int = 128,
                          title: str | None = None) -> go.Figure:
    """CAM overlays of :func:`fer_lab.analysis.cam.compare_cams` as a grid: one row per model, one column
    per face; each caption names the model, its predicted class and probability (and the
    face's caption when given)."""
    images, caps = [], []
    ncols = None
    for model, r in result.items():
        overlays = list(r["overlays"])
        if ncols is not None and len(overlays) != ncols:
            raise ValueError("every model of a compare_cams result must cover the same faces")
        ncols = len(overlays)
        if captions is not None and len(captions) != ncols:
            raise ValueError(f"{len(captions)} captions for {ncols} faces")
        for i, ov in enumerate(overlays):
            k = int(r["pred"][i])
            head = f"{captions[i]}<br>" if captions is not None else ""
            images.append(ov)
            caps.append(f"{head}{model}: {r['labels'][k]} {float(r['probs'][i][k]):.2f}")
    if not images:
        raise ValueError("empty compare_cams result")
    method = next(iter(result.values())).get("method", "CAM")
    return thumbnail_gallery(images, caps, ncols=ncols, title=title or f"{method} per model (rows) and face (columns)",
                             thumb_px=thumb_px)


# ---------------------------------------------------------------------------------------------
# matrices
# ---------------------------------------------------------------------------------------------
def _heatmap(m: np.ndarray, x: list, y: list, title, xtitle, ytitle, fmt: str, colorscale="Blues",
             zmin=None, zmax=None) -> go.Figure:
    text = [[("" if not np.isfinite(v) else format(v, fmt)) for v in row] for row in m]
    fig = go.Figure(go.Heatmap(z=m, x=x, y=y, colorscale=colorscale, zmin=zmin, zmax=zmax, text=text,
                               texttemplate="%{text}", hovertemplate=f"{ytitle}: %{{y}}<br>{xtitle}: %{{x}}"
                                                                     "<br>value: %{z}<extra></extra>"))
    fig.update_layout(title=title, **_STYLE)
    fig.update_xaxes(title_text=xtitle, side="bottom")
    fig.update_yaxes(title_text=ytitle, autorange="reversed")
    return fig


def confusion_heatmap(cm, labels: Sequence[str], normalize: bool = True, title: str | None = "Confusion matrix") -> go.Figure:
    """Confusion matrix (rows = true class, columns = predicted); ``normalize`` -> row fractions."""
    cm = np.asarray(cm, dtype=np.float64)
    labels = [str(l) for l in labels]
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(labels)} labels")
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = cm / cm.sum(1, keepdims=True)
    return _heatmap(cm, labels, labels, title, "predicted", "true", ".2f" if normalize else ".0f",
                    zmin=0, zmax=1 if normalize else None)


def cooccurrence_heatmap(matrix, labels: Sequence[str] | None = None,
                         title: str | None = "Expression co-occurrence") -> go.Figure:
    """Heat map of :func:`fer_lab.analysis.distributions.cooccurrence_matrix` (DataFrame or array + labels)."""
    if hasattr(matrix, "to_numpy"):
        labels = labels or [str(c) for c in matrix.columns]
        m = matrix.to_numpy(dtype=np.float64)
    else:
        m = np.asarray(matrix, dtype=np.float64)
    if labels is None or m.shape != (len(labels), len(labels)):
        raise ValueError("co-occurrence heat map needs a square matrix and one label per row")
    return _heatmap(m, list(labels), list(labels), title, "with", "given", ".2f", colorscale="Viridis")


# ---------------------------------------------------------------------------------------------
# curves
# ---------------------------------------------------------------------------------------------
def line_curves(df, x: str, y: str, group: str = "model", *, title: str | None = None,
                xtitle: str | None = None, ytitle: str | None = None, error: str | None = None) -> go.Figure:
    """One line per ``group`` value from a long DataFrame (perturbation curves, training curves)."""
    for col in (x, y, group) + ((error,) if error else ()):
        if col not in df:
            raise ValueError(f"column {col!r} not in the data (columns: {list(df.columns)})")
    fig = go.Figure()
    for name, sub in df.groupby(group, sort=False):
        sub = sub.sort_values(x)
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="lines+markers", name=str(name),
                                 error_y=dict(type="data", array=sub[error]) if error else None))
    fig.update_layout(title=title, **_STYLE, legend_title_text=group)
    fig.update_xaxes(title_text=xtitle or x)
    fig.update_yaxes(title_text=ytitle or y)
    return fig


def perturbation_curve_figure(df, title: str | None = None) -> go.Figure:
    """Accuracy vs perturbation strength, one line per model (:func:`fer_lab.analysis.robustness.perturbation_curve`)."""
    kind = str(df["kind"].iloc[0]) if "kind" in df and len(df) else "perturbation"
    fig = line_curves(df, "strength", "accuracy", "model", title=title or f"Accuracy under {kind}",
                      xtitle=f"{kind} strength", ytitle="accuracy")
    fig.update_yaxes(range=[0, 1])
    return fig


def faithfulness_figure(curves: dict, title: str | None = "Deletion curves") -> go.Figure:
    """Mean target probability vs fraction of pixels removed/inserted; ``curves``: name -> (B, K+1)."""
    fig = go.Figure()
    for name, c in curves.items():
        c = np.asarray(c, dtype=np.float64)
        c = c[None] if c.ndim == 1 else c
        xs = np.linspace(0, 1, c.shape[1])
        fig.add_trace(go.Scatter(x=xs, y=c.mean(0), mode="lines+markers", name=str(name)))
    fig.update_layout(title=title, **_STYLE)
    fig.update_xaxes(title_text="fraction of pixels (most salient first)", range=[0, 1])
    fig.update_yaxes(title_text="target-class probability", range=[0, 1])
    return fig


def reliability_diagram(bins_by_model: dict, title: str | None = "Reliability diagram") -> go.Figure:
    """Accuracy vs confidence per bin, one series per model; ``bins_by_model``: name -> dict from
    ``fer_lab.metrics.reliability_bins`` (optionally with an "ece" entry shown in the legend)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(dash="dash", color="gray")))
    for name, b in bins_by_model.items():
        edges = np.asarray(b["edges"])
        centers = (edges[:-1] + edges[1:]) / 2
        count = np.asarray(b["count"])
        ok = count > 0
        label = f"{name} (ECE {b['ece']:.3f})" if "ece" in b else str(name)
        fig.add_trace(go.Scatter(x=np.asarray(b["confidence"])[ok], y=np.asarray(b["accuracy"])[ok],
                                 mode="lines+markers", name=label, customdata=np.stack([centers[ok], count[ok]], 1),
                                 hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>"
                                               "n = %{customdata[1]}<extra></extra>"))
    fig.update_layout(title=title, **_STYLE)
    fig.update_xaxes(title_text="confidence", range=[0, 1])
    fig.update_yaxes(title_text="accuracy", range=[0, 1])
    return fig


def histogram(values: dict, title: str | None = None, xtitle: str = "value", nbins: int = 30) -> go.Figure:
    """Overlaid histograms, one per named series (e.g. entropy of LDG vs crowd distributions)."""
    fig = go.Figure()
    for name, v in values.items():
        fig.add_trace(go.Histogram(x=np.asarray(v, dtype=np.float64).ravel(), name=str(name), opacity=0.6,
                                   nbinsx=nbins))
    fig.update_layout(title=title, **_STYLE, barmode="overlay")
    fig.update_xaxes(title_text=xtitle)
    fig.update_yaxes(title_text="images")
    return fig


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
def embedding_scatter(coords, color, *, color_name: str = "label", categorical: bool | None = None,
                      hover_text: Sequence[str] | None = None, thumbnails: Sequence[str] | None = None,
                      title: str | None = None) -> go.Figure:
    """2-D scatter of embedding coordinates coloured by a categorical (label, prediction,
    dataset) or continuous (entropy) variable.  ``thumbnails`` (data URIs, :func:`image_data_uri`)
    are stored in ``customdata`` for :func:`fer_lab.analysis.embeddings.embedding_widget` to show on hover.
    """
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"coords must be N x 2, got {xy.shape}")
    color = np.asarray(color)
    if len(color) != len(xy):
        raise ValueError(f"{len(color)} colour values for {len(xy)} points")
    n = len(xy)
    hover = np.asarray(hover_text if hover_text is not None else [f"#{i}" for i in range(n)], dtype=object)
    thumbs = np.asarray(thumbnails if thumbnails is not None else [""] * n, dtype=object)
    if len(hover) != n or len(thumbs) != n:
        raise ValueError("hover_text/thumbnails must have one entry per point")
    idx = np.arange(n)
    if categorical is None:
        categorical = color.dtype.kind in "OUSb" or (color.dtype.kind in "iu" and len(np.unique(color)) <= 20)
    fig = go.Figure()
    if categorical:
        for val in sorted(np.unique(color.astype(str)), key=lambda s: (len(s), s)):
            sel = color.astype(str) == val
            fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=val,
                                       marker=dict(size=6, opacity=0.8), text=hover[sel],
                                       customdata=np.stack([idx[sel], thumbs[sel]], 1),
                                       hovertemplate="%{text}<extra>" + val + "</extra>"))
    else:
        fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name=color_name,
                                   marker=dict(size=6, color=color.astype(np.float64), colorscale="Viridis",
                                               showscale=True, colorbar=dict(title=dict(text=color_name))),
                                   text=hover, customdata=np.stack([idx, thumbs], 1),
                                   hovertemplate="%{text}<br>" + color_name + " %{marker.color:.3f}<extra></extra>"))
    fig.update_layout(title=title, **_STYLE, legend_title_text=color_name)
    fig.update_xaxes(title_text="UMAP 1")
    fig.update_yaxes(title_text="UMAP 2")
    return fig


# ---------------------------------------------------------------------------------------------
# static export
# ---------------------------------------------------------------------------------------------
def find_chrome() -> str | None:
    """A locally installed Chrome/Chromium for kaleido, or None (never downloads one)."""
    for cand in (os.environ.get("BROWSER_PATH"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable", "chrome"):
        if cand:
            p = shutil.which(cand) or (cand if os.path.isfile(cand) and os.access(cand, os.X_OK) else None)
            if p:
                return p
    return None


_PNG_ATTEMPTS = 3  # save_png's tries when kaleido loses its page race


def save_png(fig: go.Figure, path, width: int | None = None, height: int | None = None, scale: float = 1.0):
    """Write a PNG through kaleido with a local Chrome; RuntimeError (clear) if none is installed."""
    chrome = find_chrome()
    if chrome is None:
        raise RuntimeError("no Chrome/Chromium found for kaleido; install one (e.g. apt install chromium) "
                           "or set BROWSER_PATH -- fer_lab never downloads a browser")
    os.environ.setdefault("BROWSER_PATH", chrome)
    for attempt in range(1, _PNG_ATTEMPTS + 1):
        try:
            fig.write_image(str(path), format="png", width=width, height=height, scale=scale)
            return path
        except Exception as e:  # only kaleido's page race is retried; everything else is re-raised
            # kaleido 1.x can run its render call before its own page script has loaded when the machine is
            # busy ("ReferenceError: kaleido_scopes is not defined", seen with two trainings on two cores):
            # a fresh attempt loads a fresh page
            if type(e).__name__ != "JavascriptError" or "kaleido_scopes" not in str(e) or attempt == _PNG_ATTEMPTS:
                raise
