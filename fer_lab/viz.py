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

__all__ = ["distribution_bar"]

_TEMPLATE = "plotly_white"


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
    fig = go.Figure(go.Bar(x=labels, y=p, name=name, marker_color=colors,
                           text=[f"{v:.2f}" for v in p], textposition="outside",
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    if reference is not None:
        r = _as_probs(reference, labels)
        fig.add_trace(go.Bar(x=labels, y=r, name=reference_name, marker_color="#ff7f0e",
                             hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
        fig.update_layout(barmode="group")
    fig.update_layout(title=title, template=_TEMPLATE, showlegend=reference is not None,
                      margin=dict(l=40, r=10, t=50 if title else 20, b=40))
    fig.update_yaxes(title_text="probability", range=[0, max(1.0, float(p.max()) * 1.1)])
    fig.update_xaxes(title_text="expression")
    return fig
