"""Offline face detection and the one face-crop path used for training and inference.

Detection uses the Haar cascades shipped inside opencv-python-headless 4.x (no downloads):
``frontalface_alt2`` first (fastest here, fewest false positives), then ``frontalface_default``
only when alt2 found nothing; the profile cascade (both orientations) is opt-in.
Eye centres (``haarcascade_eye``) are looked for only when a recipe wants roll alignment or
``landmarks=True`` is passed.

:func:`crop_face` with a named :class:`CropRecipe` does every crop: the training caches (through
:func:`extract_faces`) and ``Predictor.extract`` (``fer-lab predict``, the app, which
reuses detections shared between models) all call it with the recipe stored in the checkpoint metadata
(``meta.crop``), so the framing a model was trained on is the framing it sees at inference.
See ``docs/faces.md`` for the measurements behind the recipes and the speed figures.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Mapping

import cv2
import numpy as np

__all__ = [
    "Face",
    "CropRecipe",
    "RECIPES",
    "register_recipe",
    "get_recipe",
    "list_recipes",
    "detect_faces",
    "detect_eyes",
    "crop_face",
    "extract_faces",
    "draw_faces",
    "framing_stats",
]

# -------------------------------------------------------------------------------------------------
# detection


@dataclass
class Face:
    """A detected face in original-image pixel coordinates.

    ``box`` is (x, y, w, h); ``score`` is the cascade's neighbour count (how many overlapping
    raw windows voted for the box; >= the detector's ``min_neighbors``, larger = more certain);
    ``landmarks`` is a 2 x 2 array of (x, y) eye centres (image-left eye first) or None.
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray | None = None
    detector: str = field(default="", compare=False)

    @property
    def area(self) -> int:
        return int(self.box[2]) * int(self.box[3])

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    @property
    def roll_degrees(self) -> float:
        """In-plane rotation from the eye line (0 when no landmarks)."""
        if self.landmarks is None:
            return 0.0
        (lx, ly), (rx, ry) = self.landmarks
        return math.degrees(math.atan2(ry - ly, rx - lx))


_CASCADE_FILES = {
    "alt2": "haarcascade_frontalface_alt2.xml",
    "default": "haarcascade_frontalface_default.xml",
    "profile": "haarcascade_profileface.xml",
    "eye": "haarcascade_eye.xml",
}
_local = threading.local()  # one CascadeClassifier set per thread: detectMultiScale is not re-entrant

DETECT_WORK_SIDE = 320   # long side the image is scaled to for detection (speed)
MIN_WORK_SIDE = 160      # short side small images are upscaled to (FER-size 48 px crops)
MAX_WORK_PIXELS = 2_500_000
WINDOW = 24              # nominal cascade window, px at working scale
SCALE_FACTOR = 1.15      # pyramid step: 1.1 costs ~2x the time for ~+5% recall on FER+ (docs/faces.md)
DEFAULT_CASCADES = ("alt2", "default")


def _cascade(name: str) -> cv2.CascadeClassifier:
    cache = getattr(_local, "cascades", None)
    if cache is None:
        cache = _local.cascades = {}
    if name not in cache:
        path = cv2.data.haarcascades + _CASCADE_FILES[name]
        clf = cv2.CascadeClassifier(path)
        if clf.empty():
            raise RuntimeError(f"OpenCV could not load {path}; opencv-python-headless 4.x is required "
                               "(5.x ships no Haar cascades)")
        cache[name] = clf
    return cache[name]


def _to_gray(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an H x W x 3 uint8 RGB array, got {type(image).__name__}; "
                        "use fer_lab.io.load_image first")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}; use fer_lab.io.load_image first")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")


def _work_scale(h: int, w: int, min_size: int | None) -> float:
    """Scale for the detection copy: fast for large photos, upscaled for tiny crops."""
    s = min(1.0, DETECT_WORK_SIDE / max(h, w))
    if min_size is not None:
        s = max(s, WINDOW / float(min_size))  # the smallest wanted face must cover the window
    s = max(s, MIN_WORK_SIDE / min(h, w))
    s = min(s, math.sqrt(MAX_WORK_PIXELS / (h * w)))
    return s


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


def _run_cascade(gray: np.ndarray, name: str, min_win: int, max_win: int, min_neighbors: int):
    clf = _cascade(name)
    kw = dict(scaleFactor=SCALE_FACTOR, minNeighbors=min_neighbors, minSize=(min_win, min_win),
              maxSize=(max_win, max_win))
    boxes, counts = clf.detectMultiScale2(gray, **kw)
    out = [(tuple(int(v) for v in b), float(c)) for b, c in zip(boxes, counts)]
    if name == "profile":  # the cascade knows one facing direction; mirror for the other
        W = gray.shape[1]
        boxes, counts = clf.detectMultiScale2(np.ascontiguousarray(gray[:, ::-1]), **kw)
        for (x, y, w, h), c in zip(boxes, counts):
            out.append(((int(W - x - w), int(y), int(w), int(h)), float(c)))
    return out


def detect_faces(image: np.ndarray, *, min_size: int | None = None, max_faces: int | None = 16,
                 min_neighbors: int = 5, cascades: tuple[str, ...] = DEFAULT_CASCADES,
                 landmarks: bool = False) -> list[Face]:
    """Find faces in an H x W x 3 uint8 RGB image; largest first, ``[]`` when there is none.

    ``min_size`` is the smallest face side (original pixels) to look for; by default it follows
    from the working resolution (faces of about 1/13 of the long side of a large photo and up;
    any face in a small image).  ``cascades`` are tried in order until one finds a face; add
    ``"profile"`` for side views (it costs about 2x the no-face time).  ``landmarks`` adds eye
    centres (used for roll alignment).
    """
    gray = _to_gray(image)
    h, w = gray.shape
    if h < 8 or w < 8:
        return []
    if min_size is not None and min_size < 1:
        raise ValueError(f"min_size must be >= 1 pixel, got {min_size}")
    s = _work_scale(h, w, min_size)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    work = gray if abs(s - 1.0) < 1e-6 else cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                                                       interpolation=interp)
    min_win = max(WINDOW, int(round((min_size or 0) * s)))
    max_win = min(work.shape)
    if min_win > max_win:
        return []
    found: list[tuple[tuple, float, str]] = []
    unknown = [c for c in cascades if c not in ("alt2", "default", "profile")]
    if unknown or not cascades:
        raise ValueError(f"unknown cascades {unknown}; choose from 'alt2', 'default', 'profile'")
    for name in cascades:
        found = [(b, c, name) for b, c in _run_cascade(work, name, min_win, max_win, min_neighbors)]
        if found:
            break
    # merge duplicates (profile mirror pass, nested boxes), keep the larger-count box
    found.sort(key=lambda t: (-t[1], -t[0][2]))
    kept: list[tuple[tuple, float, str]] = []
    for b, c, name in found:
        if all(_iou(b, k[0]) < 0.3 and not _contains(k[0], b) for k in kept):
            kept.append((b, c, name))
    faces = []
    for (x, y, bw, bh), c, name in kept:
        box = (int(round(x / s)), int(round(y / s)), int(round(bw / s)), int(round(bh / s)))
        faces.append(Face(box=box, score=c, landmarks=None, detector=name))
    faces.sort(key=lambda f: -f.area)
    if max_faces is not None:
        faces = faces[:max_faces]
    if landmarks:
        for f in faces:
            f.landmarks = detect_eyes(gray, f.box)
    return faces


def _contains(outer, inner) -> bool:
    ox, oy, ow, oh = outer
    ix, iy, iw, ih = inner
    cx, cy = ix + iw / 2, iy + ih / 2
    return ox <= cx <= ox + ow and oy <= cy <= oy + oh and iw * ih < 0.5 * ow * oh


def detect_eyes(gray: np.ndarray, box) -> np.ndarray | None:
    """Eye centres (2 x 2, image-left first) inside a face box, or None when not both are found.

    Searches the upper 60% of the box, resized to a fixed 120 px face width; accepts a pair only
    when the eyes lie in opposite halves, at plausible distance (25-65% of the face width) and
    with a tilt under 30 degrees, so a spurious eyebrow or nostril hit yields None, not a bad roll.
    """
    if gray.ndim == 3:
        gray = _to_gray(gray)
    x, y, w, h = (int(v) for v in box)
    H, W = gray.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + int(0.6 * h))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    roi = gray[y0:y1, x0:x1]
    k = 120.0 / w
    roi = cv2.resize(roi, (max(1, round(roi.shape[1] * k)), max(1, round(roi.shape[0] * k))),
                     interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    eyes = _cascade("eye").detectMultiScale(roi, scaleFactor=1.1, minNeighbors=3, minSize=(14, 14),
                                            maxSize=(50, 50))
    if len(eyes) < 2:
        return None
    mid = (x + w / 2.0 - x0) * k
    centres = [((ex + ew / 2.0), (ey + eh / 2.0), ew) for ex, ey, ew, eh in eyes]
    left = [c for c in centres if c[0] < mid]
    right = [c for c in centres if c[0] >= mid]
    if not left or not right:
        return None
    best = None
    for l in left:
        for r in right:
            dist = math.hypot(r[0] - l[0], r[1] - l[1]) / 120.0
            tilt = abs(math.degrees(math.atan2(r[1] - l[1], r[0] - l[0])))
            if 0.25 <= dist <= 0.65 and tilt < 30:
                cost = tilt + abs(l[2] - r[2])
                if best is None or cost < best[0]:
                    best = (cost, l, r)
    if best is None:
        return None
    _, l, r = best
    pts = np.array([[l[0], l[1]], [r[0], r[1]]], dtype=np.float32) / k
    pts += np.array([x0, y0], dtype=np.float32)
    return pts


# -------------------------------------------------------------------------------------------------
# crop recipes


@dataclass(frozen=True)
class CropRecipe:
    """How a face box becomes the model's input crop.

    ``margin``: each side of the (square) detected box is extended by ``margin`` x box side, so
    the crop side is ``(1 + 2 * margin) * max(w, h)``.  ``offset_y`` moves the crop centre down by
    that fraction of the box height.  ``align`` rotates the image about the face centre so the
    eye line is horizontal (when eyes are found).  ``detect=False`` means the input is already a
    face crop (FER+, prealigned RAF-DB/AffectNet): the whole image is used.
    """

    name: str
    margin: float = 0.0
    square: bool = True
    align: bool = False
    detect: bool = True
    offset_y: float = 0.0
    description: str = ""

    def __post_init__(self):
        if not (-0.4 <= self.margin <= 2.0):
            raise ValueError(f"recipe {self.name!r}: margin {self.margin} outside [-0.4, 2.0]")
        if not (-0.5 <= self.offset_y <= 0.5):
            raise ValueError(f"recipe {self.name!r}: offset_y {self.offset_y} outside [-0.5, 0.5]")

    def to_dict(self) -> dict:
        """What goes into ``ModelMeta.crop``."""
        return {"recipe": self.name, "margin": self.margin, "square": self.square, "align": self.align,
                "detect": self.detect, "offset_y": self.offset_y}


RECIPES: dict[str, CropRecipe] = {}


def register_recipe(recipe: CropRecipe) -> CropRecipe:
    if recipe.name in RECIPES and RECIPES[recipe.name] != recipe:
        raise ValueError(f"a different crop recipe named {recipe.name!r} is already registered")
    RECIPES[recipe.name] = recipe
    return recipe


# FER+ margin measured with framing_stats (docs/faces.md): detected boxes on FER+ test images have a
# median side of ~0.82 x the 48 px frame and are centred -> margin (1/0.82 - 1)/2 = 0.11.
FERPLUS_MARGIN = 0.115

register_recipe(CropRecipe("none", detect=False, description="whole image (input is already a face crop)"))
register_recipe(CropRecipe("prealigned", detect=False,
                           description="whole image; the input is an aligned face crop (official RAF-DB/AffectNet "
                                       "models expect RetinaFace-aligned crops; fer_lab cannot reproduce RetinaFace)"))
register_recipe(CropRecipe("ferplus", margin=FERPLUS_MARGIN,
                           description="FER-2013/FER+ framing: square box around the detected face, measured margin"))
register_recipe(CropRecipe("ferplus_aligned", margin=FERPLUS_MARGIN, align=True,
                           description="ferplus framing after eye-line roll alignment"))
register_recipe(CropRecipe("wide", margin=0.35,
                           description="looser square crop with hair and chin context"))


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(recipe: str | CropRecipe | Mapping | None) -> CropRecipe:
    """A recipe by name, a :class:`CropRecipe`, or a checkpoint's ``meta.crop`` dict."""
    if recipe is None:
        return RECIPES["none"]
    if isinstance(recipe, CropRecipe):
        return recipe
    if isinstance(recipe, Mapping):
        name = recipe.get("recipe", "none")
        extra = {k: recipe[k] for k in ("margin", "square", "align", "detect", "offset_y") if k in recipe}
        base = get_recipe(name) if name in RECIPES else None
        if base is None:
            if not extra:
                raise ValueError(f"unknown crop recipe {name!r}; known: {', '.join(list_recipes())}")
            return CropRecipe(name, **extra)
        if extra and any(getattr(base, k) != v for k, v in extra.items()):
            # the checkpoint records the exact parameters it was trained with: honour them
            return CropRecipe(name, **{**{k: getattr(base, k) for k in ("margin", "square", "align", "detect",
                                                                        "offset_y")}, **extra})
        return base
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown crop recipe {recipe!r}; known: {', '.join(list_recipes())}")
        return RECIPES[recipe]
    raise TypeError(f"a crop recipe is a name, a CropRecipe or a dict, not {type(recipe).__name__}")


# -------------------------------------------------------------------------------------------------
# cropping


def crop_face(image: np.ndarray, face: Face | None, recipe: str | CropRecipe | Mapping = "ferplus") -> np.ndarray:
    """Crop one face by a recipe; parts outside the image are filled by edge replication.

    Returns the crop at native resolution (H x W x 3 uint8; square for square recipes); resizing
    to the model's input size is :class:`fer_lab.preprocess.Preprocess`'s job.
    """
    recipe = get_recipe(recipe)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
    if face is None or not recipe.detect:
        return np.ascontiguousarray(image)
    x, y, w, h = (float(v) for v in face.box)
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {face.box} has no area")
    cx, cy = x + w / 2.0, y + h / 2.0 + recipe.offset_y * h
    if recipe.square:
        cw = ch = max(w, h) * (1 + 2 * recipe.margin)
    else:
        cw, ch = w * (1 + 2 * recipe.margin), h * (1 + 2 * recipe.margin)
    side_w, side_h = max(1, int(round(cw))), max(1, int(round(ch)))
    if recipe.align and face.landmarks is not None and abs(face.roll_degrees) > 1.0:
        # rotate about the face centre straight into the output frame (one resampling, borders replicated)
        m = cv2.getRotationMatrix2D((cx, cy), face.roll_degrees, 1.0)
        m[0, 2] += side_w / 2.0 - cx
        m[1, 2] += side_h / 2.0 - cy
        return cv2.warpAffine(image, m, (side_w, side_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x0, y0 = int(round(cx - side_w / 2.0)), int(round(cy - side_h / 2.0))
    x1, y1 = x0 + side_w, y0 + side_h
    H, W = image.shape[:2]
    pad = (max(0, -y0), max(0, y1 - H), max(0, -x0), max(0, x1 - W))
    crop = image[max(0, y0):min(H, y1), max(0, x0):min(W, x1)]
    if crop.size == 0:
        raise ValueError(f"face box {face.box} lies outside the {W}x{H} image")
    if any(pad):
        crop = np.pad(crop, ((pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), mode="edge")
    return np.ascontiguousarray(crop)


def extract_faces(image: np.ndarray, recipe: str | CropRecipe | Mapping = "ferplus", *, detect: bool = True,
                  min_size: int | None = None, max_faces: int | None = 16,
                  fallback_whole: bool = False) -> list[tuple[Face | None, np.ndarray]]:
    """Detect faces and crop each by ``recipe``: ``[(face, crop), ...]``, largest face first.

    ``detect=False`` or a recipe with ``detect=False`` ("none", "prealigned") -> ``[(None, image)]``.
    No face found -> ``[]``, or ``[(None, image)]`` when ``fallback_whole`` (the caller should then
    tell the user that the whole image was used).
    """
    recipe = get_recipe(recipe)
    image = _check_rgb(image)
    if not detect or not recipe.detect:
        return [(None, image)]
    faces = detect_faces(image, min_size=min_size, max_faces=max_faces, landmarks=recipe.align)
    if not faces:
        return [(None, image)] if fallback_whole else []
    return [(f, crop_face(image, f, recipe)) for f in faces]


def _check_rgb(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got {desc}; use fer_lab.io.load_image first")
    return image


def draw_faces(image: np.ndarray, faces: list[Face], labels: list[str] | None = None,
               color=(0, 200, 0)) -> np.ndarray:
    """A copy of ``image`` with face boxes (and optional text labels) drawn; pure function."""
    out = _check_rgb(image).copy()
    t = max(1, round(max(out.shape[:2]) / 300))
    for i, f in enumerate(faces):
        x, y, w, h = f.box
        cv2.rectangle(out, (x, y), (x + w, y + h), color, t)
        if f.landmarks is not None:
            for px, py in f.landmarks:
                cv2.circle(out, (int(px), int(py)), t + 1, (255, 200, 0), -1)
        if labels is not None and i < len(labels):
            cv2.putText(out, str(labels[i]), (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, color, t,
                        cv2.LINE_AA)
    return out


def framing_stats(images, **detect_kw) -> dict:
    """How detector boxes sit inside pre-cropped faces (FER+, RAF-DB aligned, ...).

    Runs :func:`detect_faces` on each crop and reports the detection rate, the median box side
    as a fraction of the frame side (``side_ratio``, with its quartiles), the median box-centre
    offset from the frame centre (fractions of the frame side; + = right/down) and the implied
    square-crop ``margin = (1 / side_ratio - 1) / 2`` that reproduces that framing from a box.
    """
    ratios, dx, dy, n = [], [], [], 0
    for img in images:
        img = _check_rgb(img) if isinstance(img, np.ndarray) and img.ndim == 3 else \
            np.repeat(np.asarray(img, np.uint8)[:, :, None], 3, axis=2)
        n += 1
        faces = detect_faces(img, max_faces=1, **detect_kw)
        if not faces:
            continue
        h, w = img.shape[:2]
        side = float(max(h, w))
        x, y, bw, bh = faces[0].box
        ratios.append(max(bw, bh) / side)
        dx.append((x + bw / 2 - w / 2) / side)
        dy.append((y + bh / 2 - h / 2) / side)
    if not ratios:
        return {"n": n, "detected": 0, "rate": 0.0}
    r = np.asarray(ratios)
    med = float(np.median(r))
    return {"n": n, "detected": len(r), "rate": len(r) / max(n, 1), "side_ratio": med,
            "side_ratio_q25": float(np.percentile(r, 25)), "side_ratio_q75": float(np.percentile(r, 75)),
            "center_dx": float(np.median(dx)), "center_dy": float(np.median(dy)),
            "margin": (1.0 / med - 1.0) / 2.0}
