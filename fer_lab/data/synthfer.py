"""synthfer: a procedural facial-expression dataset with known label distributions.

Every face is drawn (numpy + PIL, no data files) from

* an **expression mixture** ``w`` over the canonical classes (ground truth label distribution):
  mostly one dominant expression plus a secondary one, with tunable ambiguity.  The facial
  action parameters (brow raise / furrow / inner raise, eye openness, cheek raise, mouth curve /
  opening / width, lip press, upper-lip raise, nose wrinkle, one-sided lip corner) are the
  ``w``-weighted blend of per-expression prototypes plus a little per-face intensity jitter;
* **nuisance factors**: identity (face shape, jaw, skin tone, eye spacing and size, brows, hair
  style and colour, glasses), pose (yaw as a cylinder projection that moves features sideways
  and squashes the outline, roll), face scale and position, lighting gradient, background
  clutter, pixel noise;
* optional **occlusions** (sunglasses, surgical mask, hand, random patch).

Labels are the argmax of the mixture (``clean_labels``), or majority votes of ``annotators``
simulated annotators, then optional injected noise: ``label_noise`` (uniform flips) and
``contempt_noise`` (a fraction of non-contempt faces relabelled contempt, the paper's
noisy-AffectNet-contempt story).  ``flipped`` marks the injected flips.

Deterministic: sample ``i`` depends only on ``(seed, i)`` and the options, so
``make_synthfer(100, seed=s)[:50]`` equals ``make_synthfer(50, seed=s)`` (except the label
noise, which is drawn for the whole set so that its fraction is exact).  Measurements
(learnability, speed) are in ``docs/synthfer.md``.
"""
from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .faceset import FaceSet
from ..labels import CANONICAL, LabelMap, canonical, normalise_name

__all__ = [
    "SynthFERData",
    "FaceParams",
    "ACTION_UNITS",
    "PROTOTYPES",
    "OCCLUSIONS",
    "make_synthfer",
    "sample_mixture",
    "sample_face_params",
    "expression_params",
    "render_face",
    "render_expression",
    "make_group_photo",
    "write_examples",
]

GENERATOR_VERSION = 1

# facial action parameters (a FACS-flavoured, drawable subset)
ACTION_UNITS = ("brow_raise", "brow_inner", "brow_furrow", "eye_open", "cheek_raise", "mouth_curve",
                "mouth_open", "mouth_width", "lip_press", "upper_lip", "nose_wrinkle", "lip_corner")

# per-expression prototypes; unspecified units are 0 and eye_open defaults to 1
_PROTO = {
    "neutral": {},
    "happiness": {"cheek_raise": 1.0, "eye_open": 0.65, "mouth_curve": 1.0, "mouth_open": 0.35, "mouth_width": 0.45},
    "sadness": {"brow_inner": 1.0, "brow_raise": -0.15, "eye_open": 0.7, "mouth_curve": -0.9, "mouth_width": -0.1},
    "surprise": {"brow_raise": 1.0, "eye_open": 1.55, "mouth_open": 1.0, "mouth_width": -0.55},
    "fear": {"brow_raise": 0.55, "brow_inner": 0.8, "brow_furrow": 0.25, "eye_open": 1.45, "mouth_open": 0.45,
             "mouth_width": 0.85, "mouth_curve": -0.3},
    "disgust": {"nose_wrinkle": 1.0, "upper_lip": 1.0, "brow_furrow": 0.45, "brow_raise": -0.35, "eye_open": 0.6,
                "mouth_curve": -0.45, "cheek_raise": 0.35},
    "anger": {"brow_furrow": 1.0, "brow_raise": -0.6, "eye_open": 0.95, "lip_press": 1.0, "mouth_curve": -0.25,
              "mouth_width": -0.25},
    "contempt": {"lip_corner": 1.0, "eye_open": 0.85, "brow_raise": 0.1, "mouth_width": -0.05},
}
PROTOTYPES: dict[str, np.ndarray] = {
    name: np.array([spec.get(u, 1.0 if u == "eye_open" else 0.0) for u in ACTION_UNITS], np.float32)
    for name, spec in _PROTO.items()
}
OCCLUSIONS = ("sunglasses", "mask", "hand", "patch")

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 140, 100], [160, 105, 70],
                  [120, 78, 52], [92, 60, 42]], np.float32)
_HAIR = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [170, 130, 80], [215, 190, 140], [140, 140, 140],
                  [120, 40, 20]], np.float32)


# -------------------------------------------------------------------------------------------------
# parameters


@dataclass
class FaceParams:
    """Everything that defines one rendered face (all geometry in face units: half-height = 1)."""

    mixture: np.ndarray                       # C weights summing to 1 (ground-truth distribution)
    actions: np.ndarray                       # len(ACTION_UNITS) action values
    # identity
    face_width: float = 0.78                  # half-width / half-height
    jaw: float = 0.8                          # jaw narrowing (1 = ellipse)
    skin: tuple = (224, 172, 130)
    hair: tuple = (60, 40, 25)
    hair_style: int = 1                       # 0 bald, 1 short, 2 long, 3 bangs
    eye_dx: float = 0.33
    eye_size: float = 1.0
    brow_thick: float = 0.055
    nose_len: float = 1.0
    mouth_size: float = 1.0
    lip_color: tuple = (170, 90, 90)
    iris: tuple = (70, 50, 30)
    glasses: bool = False
    # pose and framing
    yaw: float = 0.0                          # radians, + = face turned to image right
    roll: float = 0.0                         # radians
    scale: float = 0.4                        # face half-height / image side
    cx: float = 0.5
    cy: float = 0.52
    # occlusion
    occlusion: str | None = None              # one of OCCLUSIONS
    occ_params: tuple = ()
    # image
    background: tuple = (128, 128, 128)
    clutter: tuple = ()                       # ((kind, x0, y0, x1, y1, r, g, b), ...)
    light_dir: float = 0.0
    light_strength: float = 0.0
    brightness: float = 1.0
    noise_sigma: float = 3.0
    grayscale: bool = False


def expression_params(mixture, num_classes: int | None = None) -> np.ndarray:
    """Blend the per-expression prototypes by a mixture (array of C weights, or {name: weight})."""
    w = _mixture_array(mixture, num_classes)
    protos = np.stack([PROTOTYPES[n] for n in CANONICAL[: len(w)]])
    return (w[:, None] * protos).sum(0).astype(np.float32)


def _mixture_array(mixture, num_classes: int | None = None) -> np.ndarray:
    if isinstance(mixture, str):
        mixture = {mixture: 1.0}
    if isinstance(mixture, Mapping):
        idx = {CANONICAL.index(normalise_name(k)): float(v) for k, v in mixture.items()}
        n = num_classes or (8 if 7 in idx else 7)
        w = np.zeros(n, np.float64)
        for i, v in idx.items():
            if i >= n:
                raise ValueError(f"{CANONICAL[i]} is not in the {n}-class space")
            w[i] = v
    else:
        w = np.asarray(mixture, np.float64).ravel()
    if w.size not in (7, 8):
        raise ValueError(f"a mixture has 7 or 8 weights (canonical order {CANONICAL}), got {w.size}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"mixture weights must be finite, >= 0 and not all zero, got {w}")
    return (w / w.sum()).astype(np.float32)


def sample_mixture(rng: np.random.Generator, num_classes: int = 7, ambiguity: float = 0.3,
                   class_probs: Sequence[float] | None = None) -> np.ndarray:
    """One dominant expression + a secondary one + a little spread over all classes.

    The secondary share is ``0.5 * ambiguity * Beta(2, 2)`` and the spread ``0.15 * ambiguity *
    Dirichlet(1)``; at ``ambiguity=0`` the mixture is one-hot, at 1 the top two can be nearly tied
    (the clean label is the argmax of the final mixture in every case).
    """
    c = num_classes
    dom = int(rng.choice(c, p=class_probs)) if class_probs is not None else int(rng.integers(c))
    sec = int(rng.integers(c - 1))
    sec += sec >= dom
    s = 0.5 * ambiguity * rng.beta(2.0, 2.0)
    t = 0.15 * ambiguity
    w = np.zeros(c, np.float64)
    w[dom] += 1.0 - s - t
    w[sec] += s
    w += t * rng.dirichlet(np.ones(c))
    return (w / w.sum()).astype(np.float32)


def sample_face_params(rng: np.random.Generator, mixture, *, pose: float = 0.0, occlusion: float | str | None = 0.0,
                       grayscale: bool = False, intensity_jitter: float = 0.15) -> FaceParams:
    """Random identity/pose/scene for a given expression mixture.

    ``pose`` in [0, 1]: yaw up to ``pose * 50`` degrees and roll up to ``pose * 25`` degrees
    (uniform, either side); a mild +-3 degree roll is always present.  ``occlusion``: a
    probability, or the name of an occluder to force (``None``/0 = none).
    """
    w = _mixture_array(mixture)
    actions = expression_params(w)
    actions = actions * rng.uniform(1 - intensity_jitter, 1 + intensity_jitter) \
        + rng.normal(0, 0.06, actions.shape).astype(np.float32)
    if isinstance(occlusion, str):
        if occlusion not in OCCLUSIONS:
            raise ValueError(f"unknown occlusion {occlusion!r}; choose from {OCCLUSIONS}")
        occ = occlusion
    else:
        p = float(occlusion or 0.0)
        occ = OCCLUSIONS[int(rng.integers(len(OCCLUSIONS)))] if rng.random() < p else None
    skin_t = rng.uniform(0, len(_SKIN) - 1)
    lo = int(skin_t)
    skin = _SKIN[lo] * (1 - (skin_t - lo)) + _SKIN[min(lo + 1, len(_SKIN) - 1)] * (skin_t - lo)
    skin = np.clip(skin * rng.uniform(0.93, 1.07, 3), 0, 255)
    hair = np.clip(_HAIR[int(rng.integers(len(_HAIR)))] * rng.uniform(0.8, 1.2), 0, 255)
    lip = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.uniform(-15, 15, 3), 0, 255)
    bg = rng.uniform(30, 230, 3)
    clutter = []
    for _ in range(int(rng.integers(0, 7))):
        x0, y0 = rng.uniform(-0.1, 1.0, 2)
        wh = rng.uniform(0.05, 0.45, 2)
        col = rng.uniform(0, 255, 3)
        clutter.append((int(rng.integers(3)), x0, y0, x0 + wh[0], y0 + wh[1], *col))
    occ_params = tuple(rng.uniform(0, 1, 6))
    return FaceParams(
        mixture=w, actions=actions.astype(np.float32),
        face_width=rng.uniform(0.7, 0.86), jaw=rng.uniform(0.6, 0.95),
        skin=tuple(skin), hair=tuple(hair), hair_style=int(rng.integers(4)),
        eye_dx=rng.uniform(0.29, 0.36), eye_size=rng.uniform(0.85, 1.15), brow_thick=rng.uniform(0.04, 0.075),
        nose_len=rng.uniform(0.85, 1.15), mouth_size=rng.uniform(0.85, 1.15), lip_color=tuple(lip),
        iris=tuple(rng.uniform(20, 120, 3)), glasses=bool(rng.random() < 0.12),
        yaw=math.radians(rng.uniform(-50, 50) * pose), roll=math.radians(rng.uniform(-3, 3) + rng.uniform(-25, 25) * pose),
        scale=rng.uniform(0.36, 0.44), cx=0.5 + rng.uniform(-0.05, 0.05), cy=0.52 + rng.uniform(-0.04, 0.04),
        occlusion=occ, occ_params=occ_params,
        background=tuple(bg), clutter=tuple(clutter),
        light_dir=rng.uniform(0, 2 * math.pi), light_strength=rng.uniform(0.0, 0.45),
        brightness=rng.uniform(0.8, 1.15), noise_sigma=rng.uniform(1.0, 7.0), grayscale=grayscale,
    )


# -------------------------------------------------------------------------------------------------
# rendering


class _Frame:
    """Face units -> image pixels: cylinder yaw projection, roll, scale, translation."""

    def __init__(self, p: FaceParams, side: float):
        self.p = p
        self.k = p.scale * side
        self.cx, self.cy = p.cx * side, p.cy * side
        self.cr, self.sr = math.cos(p.roll), math.sin(p.roll)
        self.radius = p.face_width * 1.08

    def feature(self, pts, dz: float = 0.0):
        """Points on the face surface (+ ``dz`` protrusion, e.g. the nose); placed lazily."""
        return (np.asarray(pts, np.float64).reshape(-1, 2), dz, False)

    def flat(self, pts, dz: float = 0.0):
        """Silhouette points (outline, hair): orthographic squash by cos(yaw)."""
        return (np.asarray(pts, np.float64).reshape(-1, 2), dz, True)

    def place_all(self, shapes) -> list[np.ndarray]:
        """Project every recorded shape in one vectorised pass (the renderer's hot loop)."""
        if not shapes:
            return []
        lengths = [len(s[0]) for s in shapes]
        pts = np.concatenate([s[0] for s in shapes])
        dz = np.repeat(np.array([s[1] for s in shapes], np.float64), lengths)
        flat = np.repeat(np.array([s[2] for s in shapes], bool), lengths)
        yaw = self.p.yaw
        th = np.arcsin(np.clip(pts[:, 0] / self.radius, -1, 1))
        x_surface = self.radius * np.sin(th + yaw)
        x = np.where(flat, pts[:, 0] * math.cos(yaw), x_surface) + dz * math.sin(yaw)
        y = pts[:, 1]
        X = self.cx + self.k * (x * self.cr - y * self.sr)
        Y = self.cy + self.k * (x * self.sr + y * self.cr)
        out = np.stack([X, Y], 1)
        return np.split(out, np.cumsum(lengths)[:-1])

    def px(self, d: float) -> float:
        return d * self.k


class _Recorder:
    """Collects polygons/lines in face units; draws them in order after one projection."""

    def __init__(self):
        self.ops: list[tuple[str, tuple, dict]] = []

    def polygon(self, shape, **kw):
        self.ops.append(("polygon", shape, kw))

    def line(self, shape, **kw):
        self.ops.append(("line", shape, kw))

    def flush(self, frame: _Frame, draw: ImageDraw.ImageDraw) -> None:
        placed = frame.place_all([op[1] for op in self.ops])
        for (kind, _, kw), xy in zip(self.ops, placed):
            getattr(draw, kind)(xy.ravel().tolist(), **kw)


@lru_cache(maxsize=64)
def _unit_arc(n: int, a0: float, a1: float) -> np.ndarray:
    t = np.linspace(a0, a1, n)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _ellipse(cx, cy, rx, ry, n=28, a0=0.0, a1=2 * math.pi):
    return _unit_arc(n, a0, a1) * (rx, ry) + (cx, cy)


def _shade(col, f):
    return tuple(int(max(0, min(255, c * f))) for c in col)


def _rgb(col):
    return tuple(int(max(0, min(255, round(c)))) for c in col)


def _thick_curve(pts: np.ndarray, width: np.ndarray | float) -> np.ndarray:
    """A polyline -> a closed polygon of (varying) width."""
    pts = np.asarray(pts, np.float64)
    d = np.gradient(pts, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    w = np.broadcast_to(np.asarray(width, np.float64), (len(pts),))[:, None] / 2
    return np.concatenate([pts + nrm * w, (pts - nrm * w)[::-1]])


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    return yy, xx


def render_face(params: FaceParams, size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw one face -> size x size x 3 uint8 RGB.  ``rng`` drives only the pixel noise."""
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an int in [16, 1024] (48-224 is the tested range), got {size!r}")
    p = params
    ss = 2 if size <= 128 else 1  # supersampling for anti-aliased small faces
    side = size * ss
    img = Image.new("RGB", (side, side), _rgb(p.background))
    d = ImageDraw.Draw(img)
    for kind, x0, y0, x1, y1, r, g, b in p.clutter:
        box = [x0 * side, y0 * side, x1 * side, y1 * side]
        col = (int(r), int(g), int(b))
        if kind == 0:
            d.rectangle(box, fill=col)
        elif kind == 1:
            d.ellipse(box, fill=col)
        else:
            d.line([(box[0], box[1]), (box[2], box[3])], fill=col, width=max(1, int(0.03 * side)))
    f = _Frame(p, side)
    draw, d = d, _Recorder()
    a = dict(zip(ACTION_UNITS, p.actions.tolist()))
    skin, hair = _rgb(p.skin), _rgb(p.hair)
    dark_skin = _shade(p.skin, 0.72)
    fw = p.face_width

    # neck/shoulders and long hair behind the head
    d.polygon(f.flat([[-0.33, 0.6], [0.33, 0.6], [0.4, 1.6], [-0.4, 1.6]]), fill=_shade(p.skin, 0.85))
    shirt = _rgb(np.asarray(p.background)[::-1] * 0.6 + 40)
    d.polygon(f.flat([[-1.6, 1.35], [1.6, 1.35], [1.9, 3.0], [-1.9, 3.0]]), fill=shirt)
    if p.hair_style == 2:
        d.polygon(f.flat(np.concatenate([_ellipse(0, -0.05, fw * 1.2, 1.12, 20, math.pi, 2 * math.pi),
                                         [[fw * 1.25, 1.0], [-fw * 1.25, 1.0]]]), dz=-0.2), fill=hair)
    # ears (behind the face: they move against the yaw)
    for sx in (-1, 1):
        d.polygon(f.flat(_ellipse(sx * fw * 0.98, -0.05, 0.11, 0.2, 14)), fill=dark_skin)
    # face outline: ellipse with a narrowed jaw
    t = np.linspace(0, 2 * math.pi, 48)
    ox, oy = fw * np.cos(t), np.sin(t)
    ox = np.where(oy > 0, ox * (1 - (1 - p.jaw) * oy ** 2), ox)
    d.polygon(f.flat(np.stack([ox, oy], 1)), fill=skin)
    # hair on top
    if p.hair_style in (1, 2, 3):
        top = _ellipse(0, -0.08, fw * 1.06, 1.02, 24, math.pi, 2 * math.pi)
        low = -0.62 if p.hair_style != 3 else -0.48
        edge = np.array([[fw * 1.05, -0.1], [fw * 0.8, low], [0, low - 0.05], [-fw * 0.8, low], [-fw * 1.05, -0.1]])
        d.polygon(f.flat(np.concatenate([top, edge])), fill=hair)

    # ---- features
    eye_y = -0.15
    ew = 0.2 * p.eye_size
    open_ = max(0.05, a["eye_open"])
    eh_up = 0.085 * p.eye_size * open_
    eh_lo = 0.07 * p.eye_size * open_ * max(0.2, 1 - 0.75 * max(0.0, a["cheek_raise"]))
    for sx in (-1, 1):
        ex = sx * p.eye_dx
        up = _ellipse(ex, eye_y, ew / 2, eh_up, 14, math.pi, 2 * math.pi)
        lo = _ellipse(ex, eye_y, ew / 2, eh_lo, 14, 0, math.pi)
        d.polygon(f.feature(np.concatenate([up, lo]), 0.05), fill=(240, 238, 232))
        ir = min(0.045 * p.eye_size, (eh_up + eh_lo) / 2)
        d.polygon(f.feature(_ellipse(ex, eye_y + (eh_lo - eh_up) * 0.2, 0.045 * p.eye_size, ir, 12), 0.06),
                  fill=_rgb(p.iris))
        d.polygon(f.feature(_ellipse(ex, eye_y + (eh_lo - eh_up) * 0.2, 0.02 * p.eye_size, min(ir, 0.02), 8), 0.06),
                  fill=(10, 10, 10))
        d.line(f.feature(up, 0.06), fill=(35, 25, 20), width=max(1, int(f.px(0.022))))
        if a["cheek_raise"] > 0.3:  # cheek bulge under the eye (Duchenne)
            d.line(f.feature(_ellipse(ex, eye_y + eh_lo + 0.05, ew / 2, 0.03, 8, 0.2, math.pi - 0.2), 0.04),
                   fill=dark_skin, width=max(1, int(f.px(0.015 * min(1.5, a["cheek_raise"])))))
        # brows
        raise_ = 0.11 * a["brow_raise"]
        inner_dy = 0.09 * a["brow_furrow"] - 0.11 * a["brow_inner"]
        xin, xout = sx * (0.08 + 0.04 * (1 - a["brow_furrow"])), sx * (p.eye_dx + 0.17)
        yb = eye_y - 0.17 - raise_
        brow = np.array([[xin, yb + inner_dy], [sx * (p.eye_dx - 0.02), yb - 0.045 - 0.02 * a["brow_inner"]],
                         [xout, yb + 0.03]])
        brow = np.stack([np.interp(np.linspace(0, 2, 9), [0, 1, 2], brow[:, i]) for i in (0, 1)], 1)
        d.polygon(f.feature(_thick_curve(brow, np.linspace(1.2, 0.7, 9) * p.brow_thick), 0.07), fill=hair)
    if a["brow_furrow"] > 0.3:  # vertical glabella lines
        for sx in (-1, 1):
            d.line(f.feature([[sx * 0.035, -0.33], [sx * 0.045, -0.22]], 0.07), fill=dark_skin,
                   width=max(1, int(f.px(0.013 * min(1.5, a["brow_furrow"])))))
    if a["brow_raise"] > 0.4:  # forehead lines
        for k in range(2):
            y = -0.56 + 0.055 * k
            d.line(f.feature(_ellipse(0, y + 0.2, 0.3, 0.2, 9, math.pi + 0.6, 2 * math.pi - 0.6), 0.03),
                   fill=_shade(p.skin, 0.82), width=max(1, int(f.px(0.012))))
    # nose
    nl = 0.3 * p.nose_len
    d.line(f.feature([[0.02, -0.08], [0.05, nl - 0.04], [0.0, nl]], 0.25), fill=dark_skin, width=max(1, int(f.px(0.02))))
    for sx in (-1, 1):
        d.polygon(f.feature(_ellipse(sx * 0.055, nl, 0.032, 0.018, 8), 0.2), fill=_shade(p.skin, 0.5))
    if a["nose_wrinkle"] > 0.25:
        for k in range(3):
            y = -0.08 + 0.045 * k
            d.line(f.feature([[-0.07, y], [0.07, y + 0.01]], 0.22), fill=_shade(p.skin, 0.62),
                   width=max(1, int(f.px(0.014 * min(1.5, a["nose_wrinkle"])))))
    if max(a["cheek_raise"], a["nose_wrinkle"]) > 0.3:  # nasolabial folds
        s = min(1.5, max(a["cheek_raise"], a["nose_wrinkle"]))
        for sx in (-1, 1):
            fold = np.array([[sx * 0.12, nl - 0.02], [sx * 0.2, nl + 0.1], [sx * 0.26, nl + 0.24]])
            d.line(f.feature(fold, 0.1), fill=dark_skin, width=max(1, int(f.px(0.016 * s))))
    # mouth
    my = 0.5 - 0.06 * a["upper_lip"]
    mw = 0.21 * p.mouth_size * (1 + 0.33 * a["mouth_width"])
    tt = np.linspace(-1, 1, 17)
    xs = tt * mw
    curve = 0.1 * a["mouth_curve"]
    asym = 0.09 * a["lip_corner"] * np.clip(tt, 0, None) ** 2  # right corner only (contempt)
    xs = xs + 0.04 * a["lip_corner"] * np.clip(tt, 0, None) ** 3
    base = my - curve * tt ** 2 - asym + curve * 0.3
    bulge = np.sqrt(np.clip(1 - tt ** 2, 0, 1))
    press = 1 - 0.65 * np.clip(a["lip_press"], 0, 1.3)
    open_h = 0.17 * max(0.0, a["mouth_open"]) + 0.035 * max(0.0, a["upper_lip"])
    up_lip = 0.045 * press * bulge
    lo_lip = 0.055 * press * bulge
    top_inner = base - 0.4 * open_h * bulge
    bot_inner = base + 0.6 * open_h * bulge
    outer = np.concatenate([np.stack([xs, top_inner - up_lip], 1), np.stack([xs, bot_inner + lo_lip], 1)[::-1]])
    d.polygon(f.feature(outer, 0.12), fill=_rgb(p.lip_color))
    if open_h > 0.01:
        inner = np.concatenate([np.stack([xs, top_inner], 1), np.stack([xs, bot_inner], 1)[::-1]])
        d.polygon(f.feature(inner, 0.1), fill=(45, 15, 20))
        if a["mouth_curve"] > 0.3 or a["upper_lip"] > 0.4:  # teeth show in smiles and snarls
            teeth = np.concatenate([np.stack([xs * 0.85, top_inner], 1),
                                    np.stack([xs * 0.85, top_inner + 0.35 * (bot_inner - top_inner)], 1)[::-1]])
            d.polygon(f.feature(teeth, 0.1), fill=(235, 230, 220))
    else:
        d.line(f.feature(np.stack([xs, base], 1), 0.12), fill=_shade(p.lip_color, 0.55), width=max(1, int(f.px(0.015))))
    if a["lip_corner"] > 0.3:  # dimple at the raised corner
        d.polygon(f.feature(_ellipse(xs[-1] + 0.03, base[-1], 0.018, 0.03, 8), 0.1), fill=dark_skin)

    if p.glasses:
        for sx in (-1, 1):
            d.line(f.feature(_ellipse(sx * p.eye_dx, eye_y, 0.15, 0.1, 20), 0.12), fill=(30, 30, 30),
                   width=max(1, int(f.px(0.02))))
        d.line(f.feature([[-p.eye_dx + 0.15, eye_y], [p.eye_dx - 0.15, eye_y]], 0.14), fill=(30, 30, 30),
               width=max(1, int(f.px(0.02))))
    _draw_occluder(d, f, p, eye_y, nl, my)
    d.flush(f, draw)

    arr = np.asarray(img.resize((size, size), Image.BOX) if ss > 1 else img, dtype=np.float32)
    # lighting: directional gradient + global brightness
    yy, xx = _grid(size)
    grad = 1.0 + p.light_strength * (xx * math.cos(p.light_dir) + yy * math.sin(p.light_dir)) * 2
    arr = arr * (grad * p.brightness)[:, :, None]
    if rng is not None and p.noise_sigma > 0:
        arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(p.noise_sigma)
    if p.grayscale:
        arr = np.repeat((arr @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None], 3, 2)
    return np.clip(arr, 0, 255).round().astype(np.uint8)


def _draw_occluder(d: _Recorder, f: _Frame, p: FaceParams, eye_y: float, nl: float, my: float) -> None:
    if p.occlusion is None:
        return
    u = p.occ_params if len(p.occ_params) >= 6 else (0.5,) * 6
    if p.occlusion == "sunglasses":
        col = _rgb(np.array([15, 15, 20]) + 40 * np.array(u[:3]))
        for sx in (-1, 1):
            lens = _ellipse(sx * p.eye_dx, eye_y + 0.01, 0.17, 0.12, 20)
            d.polygon(f.feature(lens, 0.14), fill=col)
        d.line(f.feature([[-p.eye_dx + 0.15, eye_y - 0.03], [p.eye_dx - 0.15, eye_y - 0.03]], 0.15), fill=col,
               width=max(1, int(f.px(0.035))))
        for sx in (-1, 1):
            d.line(f.flat([[sx * p.eye_dx * 1.5, eye_y - 0.02], [sx * p.face_width, eye_y - 0.04]], 0.0), fill=col,
                   width=max(1, int(f.px(0.03))))
    elif p.occlusion == "mask":
        col = _rgb([(170, 205, 230), (235, 235, 235), (60, 60, 70)][int(u[0] * 2.999)])
        top = nl - 0.08
        fw = p.face_width
        t = np.linspace(0, math.pi, 16)
        bottom = np.stack([fw * 0.92 * np.cos(t), 0.55 + 0.35 * np.sin(t)], 1)
        poly = np.concatenate([[[-fw * 0.92, top + 0.05], [0, top - 0.04], [fw * 0.92, top + 0.05]], bottom])
        d.polygon(f.feature(poly, 0.12), fill=col)
        for k in range(3):
            y = top + 0.15 + 0.13 * k
            d.line(f.feature([[-fw * 0.7, y], [fw * 0.7, y]], 0.13), fill=_shade(col, 0.8), width=max(1, int(f.px(0.012))))
    elif p.occlusion == "hand":
        col = _rgb(np.asarray(p.skin) * (0.82 + 0.1 * u[0]) + np.array([12, 4, 0]))
        edge = dict(outline=_shade(col, 0.6), width=max(1, int(f.px(0.018))))
        target_y = my if u[1] < 0.6 else eye_y  # over the mouth, or over one eye
        sx = -1 if u[2] < 0.5 else 1
        hx = sx * (0.15 + 0.2 * u[3]) if target_y == eye_y else (u[3] - 0.5) * 0.2
        for k in range(4):
            fx = hx - 0.2 + 0.13 * k
            finger = _thick_curve(np.array([[fx, target_y + 0.05], [fx + 0.05, target_y - 0.34]]), 0.095)
            d.polygon(f.feature(finger, 0.3), fill=col, **edge)
        d.polygon(f.feature(_ellipse(hx, target_y + 0.1, 0.3, 0.22, 20), 0.3), fill=col, **edge)
    elif p.occlusion == "patch":
        col = _rgb(np.array(u[:3]) * 255)
        w, h = 0.45 + 0.35 * u[3], 0.4 + 0.35 * u[4]
        x0 = -p.face_width + u[5] * (2 * p.face_width - w)
        y0 = -0.55 + u[1] * (1.2 - h)
        d.polygon(f.flat([[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]], 0.3), fill=col)
    else:
        raise ValueError(f"unknown occlusion {p.occlusion!r}; choose from {OCCLUSIONS}")


def render_expression(mixture="neutral", *, size: int = 128, seed: int = 0, yaw_degrees: float = 0.0,
                      roll_degrees: float = 0.0, occlusion: str | None = None, noise: bool = True,
                      grayscale: bool = False) -> np.ndarray:
    """One face for notebooks and app examples: a mixture (name, {name: weight} or C weights),
    an identity/scene drawn from ``seed``, and an explicit pose and occluder."""
    rng = np.random.default_rng([int(seed), 7])
    params = sample_face_params(rng, mixture, pose=0.0, occlusion=occlusion, grayscale=grayscale,
                                intensity_jitter=0.0)
    params = replace(params, actions=expression_params(params.mixture), yaw=math.radians(yaw_degrees),
                     roll=math.radians(roll_degrees))
    return render_face(params, size, rng if noise else None)


# -------------------------------------------------------------------------------------------------
# dataset


@dataclass(kw_only=True, eq=False)
class SynthFERData(FaceSet):
    """A synthfer sample set: a :class:`fer_lab.data.FaceSet` (NumPy arrays, one row per face)
    plus the ground truth behind it (clean labels, injected flips, occlusion and pose)."""

    images: np.ndarray          # N x S x S x 3 uint8
    labels: np.ndarray          # N int64, the training labels (after votes and injected noise)
    clean_labels: np.ndarray    # N int64, argmax of the ground-truth mixture
    dists: np.ndarray           # N x C float32, ground-truth label distributions (rows sum to 1)
    flipped: np.ndarray         # N bool, label changed by label_noise / contempt_noise
    occluded: np.ndarray        # N bool
    occlusion: np.ndarray       # N str ('' or one of OCCLUSIONS)
    yaw: np.ndarray             # N float32, degrees
    roll: np.ndarray            # N float32, degrees
    label_map: LabelMap
    votes: np.ndarray | None = None   # N x C int64 annotator counts when annotators were simulated
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx) -> "SynthFERData":
        """Row subset (slice, index array or boolean mask)."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        out = {}
        for fld in fields(self):
            v = getattr(self, fld.name)
            if fld.name == "ids" and v is not None:
                v = np.asarray(v, dtype=object)[idx].tolist()
            out[fld.name] = v[idx] if isinstance(v, np.ndarray) else v
        out["key"] = ""  # a subset is other data
        return SynthFERData(**out)

    @property
    def num_classes(self) -> int:
        return len(self.label_map)


def make_synthfer(n: int, *, size: int = 64, seed: int = 0, num_classes: int = 7, occlusion: float = 0.0,
                  pose: float = 0.0, ambiguity: float = 0.3, label_noise: float = 0.0, contempt_noise: float = 0.0,
                  annotators: int | None = None, class_probs: Sequence[float] | None = None,
                  grayscale: bool = False) -> SynthFERData:
    """Generate ``n`` faces (see the module docstring).

    ``occlusion``: probability that a face gets an occluder; ``pose``: max pose strength in [0, 1];
    ``ambiguity`` in [0, 1]: how much secondary expression is mixed in; ``annotators``: if set,
    labels are the majority of that many votes drawn from each face's mixture (ties -> the
    smallest class index among the tied, as a deterministic rule); ``label_noise``: exact fraction
    of labels replaced by a different uniformly chosen class; ``contempt_noise``: exact fraction of
    the (remaining) non-contempt faces relabelled contempt (needs ``num_classes=8``).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an int in [16, 1024] (48-224 tested), got {size!r}")
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")
    for name, v in (("occlusion", occlusion), ("pose", pose), ("ambiguity", ambiguity),
                    ("label_noise", label_noise), ("contempt_noise", contempt_noise)):
        if not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if contempt_noise > 0 and num_classes != 8:
        raise ValueError("contempt_noise relabels faces as contempt: it needs num_classes=8")
    if annotators is not None and int(annotators) < 1:
        raise ValueError(f"annotators must be >= 1, got {annotators}")
    if class_probs is not None:
        class_probs = np.asarray(class_probs, np.float64)
        if class_probs.shape != (num_classes,) or (class_probs < 0).any() or class_probs.sum() <= 0:
            raise ValueError(f"class_probs must be {num_classes} non-negative weights")
        class_probs = class_probs / class_probs.sum()

    images = np.empty((n, size, size, 3), np.uint8)
    dists = np.empty((n, num_classes), np.float32)
    occ = np.empty(n, dtype=object)
    yaw = np.empty(n, np.float32)
    roll = np.empty(n, np.float32)
    votes = np.zeros((n, num_classes), np.int64) if annotators else None
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        w = sample_mixture(rng, num_classes, ambiguity, class_probs)
        params = sample_face_params(rng, w, pose=pose, occlusion=occlusion, grayscale=grayscale)
        images[i] = render_face(params, size, rng)
        dists[i] = w
        occ[i] = params.occlusion or ""
        yaw[i], roll[i] = math.degrees(params.yaw), math.degrees(params.roll)
        if votes is not None:
            votes[i] = rng.multinomial(int(annotators), w.astype(np.float64) / w.sum())

    clean = dists.argmax(1).astype(np.int64)
    labels = votes.argmax(1).astype(np.int64) if votes is not None else clean.copy()
    flipped = np.zeros(n, bool)
    noise_rng = np.random.default_rng([int(seed), 2**31 - 1])
    if label_noise > 0:
        k = int(round(label_noise * n))
        idx = noise_rng.choice(n, k, replace=False)
        shift = noise_rng.integers(1, num_classes, k)
        labels[idx] = (labels[idx] + shift) % num_classes
        flipped[idx] = True
    if contempt_noise > 0:
        contempt = CANONICAL.index("contempt")
        pool = np.flatnonzero((labels != contempt) & ~flipped)
        k = int(round(contempt_noise * len(pool)))
        idx = noise_rng.choice(pool, k, replace=False)
        labels[idx] = contempt
        flipped[idx] = True
    config = dict(n=int(n), size=int(size), seed=int(seed), num_classes=num_classes, occlusion=float(occlusion),
                  pose=float(pose), ambiguity=float(ambiguity), label_noise=float(label_noise),
                  contempt_noise=float(contempt_noise), annotators=annotators, grayscale=bool(grayscale),
                  class_probs=None if class_probs is None else class_probs.tolist(), version=GENERATOR_VERSION)
    return SynthFERData(images=images, labels=labels, clean_labels=clean, dists=dists, flipped=flipped,
                        occluded=occ != "", occlusion=occ.astype(str), yaw=yaw, roll=roll,
                        label_map=canonical(num_classes), votes=votes, config=config)


# -------------------------------------------------------------------------------------------------
# example images for the app and docs


def make_group_photo(face: np.ndarray | None = None, *, size: tuple[int, int] = (800, 600),
                     tiles: Sequence[tuple[int, int, int]] = ((30, 40, 280), (360, 70, 210), (580, 300, 190),
                                                              (140, 360, 200)),
                     background: tuple[int, int, int] = (190, 196, 205)) -> np.ndarray:
    """Paste copies of a face photo (default: the astronaut's head, public domain) at several
    scales on a plain canvas -> H x W x 3 uint8; a deterministic multi-face test image."""
    import cv2

    if face is None:
        from skimage import data

        face = data.astronaut()[30:250, 140:380]
    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = background
    for x, y, s in tiles:
        if x < 0 or y < 0 or x + s > w or y + s > h:
            raise ValueError(f"tile {(x, y, s)} does not fit a {w}x{h} canvas")
        canvas[y:y + s, x:x + s] = cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA)
    return canvas


EXAMPLES = (
    ("synth_happiness.png", {"happiness": 1.0}, None, 0.0),
    ("synth_surprise.png", {"surprise": 0.85, "fear": 0.15}, None, 10.0),
    ("synth_sadness_sunglasses.png", {"sadness": 1.0}, "sunglasses", 0.0),
    ("synth_anger_mask.png", {"anger": 1.0}, "mask", -12.0),
    ("synth_disgust.png", {"disgust": 0.7, "anger": 0.3}, None, 0.0),
    ("synth_ambiguous_fear_surprise.png", {"fear": 0.5, "surprise": 0.45, "neutral": 0.05}, None, 0.0),
    ("synth_contempt.png", {"contempt": 1.0}, None, 0.0),
    ("synth_neutral_hand.png", {"neutral": 1.0}, "hand", 0.0),
)


def write_examples(out_dir: str | Path, size: int = 192) -> list[Path]:
    """Write the app's license-clean example images (synthfer faces, astronaut, group photo)."""
    from skimage import data

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, mixture, occluder, yaw) in enumerate(EXAMPLES):
        img = render_expression(mixture, size=size, seed=100 + i, yaw_degrees=yaw, occlusion=occluder)
        Image.fromarray(img).save(out / name, optimize=True)
        written.append(out / name)
    # 320 px keeps the PNG under 200 kB (the face is still ~60 px: detectable)
    Image.fromarray(data.astronaut()).resize((320, 320), Image.LANCZOS).save(out / "astronaut.png", optimize=True)
    Image.fromarray(make_group_photo()).save(out / "group.jpg", quality=88)
    written += [out / "astronaut.png", out / "group.jpg"]
    return written
