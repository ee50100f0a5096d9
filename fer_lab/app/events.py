"""The app's event functions: plain methods of :class:`AppEngine`, unit-tested without a server.

Every public method is wrapped by :func:`user_errors`: library errors (unreadable image, bad
checkpoint, ...) become ``gr.Error`` with a human message (a toast in the UI, a clean
``AppError`` for API clients); anything unexpected is logged server-side and reported as an
internal error without a traceback.  The worker always survives.

Flow in the UI: image change -> :meth:`AppEngine.new_image` (sets "Use the whole image" from
the image's source, boxes, face list, status) -> on success :meth:`AppEngine.analyze_ui` (crop,
then per model: label, distribution, CAM, timings).  Detection results are cached per uploaded
file so picking another face or CAM method does not re-detect.

UI vs API: the page reports the *expected* outcomes (no face, an unreadable upload) in the status
line (``new_image``, ``analyze_ui``); API clients call :meth:`AppEngine.detect` and
:meth:`AppEngine.analyze`, which raise ``gr.Error`` for them (an ``AppError`` for
``gradio_client``) rather than return an empty result.  docs/app.md has the why.
"""
from __future__ import annotations

import csv
import functools
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np

from ..analysis.cam import CAM_METHODS, overlay_cam
from ..analysis.viz import confusion_heatmap, distribution_bar
from ..checkpoint import CheckpointError
from ..faces import detect_faces, draw_faces
from ..inference import FacePrediction, Predictor
from ..io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from ..report import HELD_OUT_KEY, held_out_markdown
from .examples import Example, ExampleIndex, load_examples
from .hub import ModelHub

__all__ = ["AppEngine", "user_errors", "MAX_FACES", "MAX_BATCH_FILES", "SIDES"]

log = logging.getLogger(__name__)

MAX_FACES = 20          # faces listed per image (largest first); more are reported, not scored
MAX_BATCH_FILES = 32    # images per batch request
MAX_UPLOAD_PIXELS = DEFAULT_MAX_PIXELS  # the library's limit: full-resolution phone photos (48-108 MP) are scored
CACHE_BYTES = 512 * 2**20  # decoded images the detection cache may hold (4 x 12 MP photos is 145 MB)
PREVIEW_SIDE = 2048     # the detected-faces image is sent back at most this long (docs/app.md: 2.9 MB -> 0.37 MB a click)
SIDES = ("baseline", "efficientface")  # column names (defaults: baseline-ferplus, efficientface-ferplus)
DISPLAY_SIZE = 224      # crops and CAM overlays are shown at least this large (models see 48-224 px)
BACKEND_NAMES = {"onnx": "ONNX Runtime", "torch": "PyTorch"}
NO_IMAGE = "Upload an image, take a webcam picture, paste from the clipboard or pick an example."
BOX_COLOR, SELECTED_COLOR = (0, 200, 0), (255, 40, 40)


def _short(msg: str, paths: tuple = ()) -> str:
    """Hide server temp paths (Gradio's upload cache) in user-facing messages."""
    for p in paths:
        if p:
            msg = msg.replace(str(p), Path(str(p)).name)
    return msg


def user_errors(fn):
    """Turn library errors into ``gr.Error`` messages; never leak a traceback to the user."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        paths = tuple(a for a in args if isinstance(a, (str, os.PathLike)))
        paths += tuple(p for a in args if isinstance(a, (list, tuple)) for p in a if isinstance(p, str))
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ImageLoadError, CheckpointError, FileNotFoundError, ValueError, TypeError) as e:
            raise gr.Error(_short(str(e), paths), print_exception=False) from None
        except MemoryError:
            raise gr.Error("The server ran out of memory on this input; try a smaller image.",
                           print_exception=False) from None
        except Exception as e:  # a bug: log it for the operator, keep the message clean
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Internal error ({type(e).__name__}); the server log has the details.",
                           print_exception=False) from None

    return wrapper


class _Detection:
    __slots__ = ("image", "faces", "total", "ms")

    def __init__(self, image, faces, total, ms):
        self.image, self.faces, self.total, self.ms = image, faces, total, ms


def for_preview(img: np.ndarray | None, side: int = PREVIEW_SIDE) -> np.ndarray | None:
    """Shrink a full photo for the page (area interpolation) so its longer side is at most ``side``; boxes drawn
    on the full image before shrinking keep their place. Scoring always uses the full-resolution image."""
    if img is None or max(img.shape[:2]) <= side:
        return img
    import cv2

    h, w = img.shape[:2]
    f = side / max(h, w)
    return cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def for_display(img: np.ndarray | None, size: int = DISPLAY_SIZE) -> np.ndarray | None:
    """Upscale a model-size crop (112 px for the shipped EfficientFace, 96 px for the shipped baseline)
    for the page: bicubic, square."""
    if img is None or img.shape[0] >= size:
        return img
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


class AppEngine:
    """State shared by all sessions: the models (loaded once) and a small detection cache."""

    def __init__(self, hub: ModelHub | None = None, allow_local_paths: bool | None = None,
                 max_pixels: int = MAX_UPLOAD_PIXELS, cache_size: int = 4, cache_bytes: int = CACHE_BYTES,
                 examples: list[Example] | None = None):
        self.hub = hub if hub is not None else ModelHub()
        # the shipped examples by default; new_image recognises them by content
        self.examples = load_examples() if examples is None else examples
        self._example_index = ExampleIndex(self.examples)
        # a server path text box makes sense on your own machine, not on a public Space
        self.allow_local_paths = (not os.environ.get("SPACE_ID")) if allow_local_paths is None else allow_local_paths
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple, _Detection] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._cache_lock = threading.Lock()
        # returned images are written here under unique names; Gradio copies them atomically into
        # its cache (numpy outputs are re-written in place by Gradio, which races when two requests
        # produce the same picture, e.g. two users on one example image)
        self.out_dir = Path(tempfile.mkdtemp(prefix="fer_lab_app_"))
        self._last_prune = 0.0

    # ------------------------------------------------------------------ helpers
    def model_choices(self) -> list[str]:
        return self.hub.names()

    def warmup(self) -> None:
        """One forward + CAM per loaded model, so the first user does not pay for lazy imports."""
        face = np.full((64, 64, 3), 128, np.uint8)
        for name in self.hub.names():
            p = self.hub.get(name)
            p.predict_crops([face])
            p.predict_crops_with_cams([face], CAM_METHODS[0])

    def _save(self, image: np.ndarray | None, fmt: str = "png") -> str | None:
        """Write an output image to a fresh file; returns its path (what the gr.Image outputs get)."""
        if image is None:
            return None
        from PIL import Image

        self._prune()
        fd, path = tempfile.mkstemp(suffix=f".{fmt}", dir=self.out_dir)
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(image).save(f, format="JPEG" if fmt == "jpeg" else fmt.upper(),
                                        **({"quality": 90} if fmt == "jpeg" else {"compress_level": 1}))
        return path

    def _prune(self, max_age_s: float = 900.0) -> None:
        now = time.time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        for p in self.out_dir.glob("*"):
            try:
                if now - p.stat().st_mtime > max_age_s:
                    p.unlink()
            except OSError:
                pass

    def _load(self, path) -> np.ndarray:
        if path is None:
            raise gr.Error(NO_IMAGE, print_exception=False)
        path = _as_path(path)
        return load_image(path, max_pixels=self.max_pixels)

    def _detection(self, path, whole_image: bool) -> _Detection:
        path = _as_path(path)
        try:
            st = os.stat(path)
            key = (str(path), st.st_mtime_ns, st.st_size, bool(whole_image))
        except OSError:
            key = None
        with self._cache_lock:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        img = self._load(path)
        t0 = time.perf_counter()
        faces = [] if whole_image else detect_faces(img, max_faces=None)
        det = _Detection(img, faces[:MAX_FACES], len(faces), (time.perf_counter() - t0) * 1000.0)
        if key is not None:
            with self._cache_lock:
                self._cache[key] = det
                # a few full-resolution phone photos (a 108 MP one is 324 MB decoded) must not pile up: bounded by
                # count and by bytes, the newest entry always kept
                while len(self._cache) > 1 and (len(self._cache) > self._cache_size or
                                                sum(d.image.nbytes for d in self._cache.values()) > self._cache_bytes):
                    self._cache.popitem(last=False)
        return det

    def _predictors(self, names) -> list[Predictor | None]:
        out = []
        for name in names:
            out.append(self.hub.get(name) if name else None)
        if not any(out):
            msg = self.hub.startup_message() or "No model selected."
            raise gr.Error(msg.replace("**", ""), print_exception=False)
        return out

    # ------------------------------------------------------------------ events
    @user_errors
    def detect(self, image, whole_image: bool = False):
        """Find faces: (image with numbered boxes, face-picker update, status markdown)."""
        if image is None:
            return None, gr.update(choices=[], value=None), NO_IMAGE
        det = self._detection(image, whole_image)
        h, w = det.image.shape[:2]
        if whole_image:
            return self._save(for_preview(det.image), "jpeg"), gr.update(choices=[], value=None), \
                f"Scoring the whole image ({w}x{h})."
        if not det.faces:
            return self._save(for_preview(det.image), "jpeg"), gr.update(choices=[], value=None), \
                _no_face_status(w, h)
        choices = [(_face_label(i, f), i) for i, f in enumerate(det.faces)]
        status = _found(det)
        if det.total > 1:
            status += " Pick a face in the list; boxes are numbered."
        annotated = draw_faces(det.image, det.faces, [str(i + 1) for i in range(len(det.faces))], BOX_COLOR)
        return self._save(for_preview(annotated), "jpeg"), gr.update(choices=choices, value=0), status

    @user_errors
    def new_image(self, image):
        """UI: the input image changed (upload, webcam, clipboard, example click, cleared).

        "Use the whole image" follows the image: on for the synthfer examples (face crops
        already), off for anything else, so a photo uploaded after an example is detected again.
        Returns (input image update, whole-image flag, example caption, then :meth:`detect`'s
        three outputs).  An unreadable file is removed from the input (no broken-image preview)
        and its reason goes to the status line instead of an error toast; ``None`` (the input
        was cleared, possibly by that removal) leaves the status line as it is.
        """
        if image is None:
            return gr.update(), False, "", None, gr.update(choices=[], value=None), gr.update()
        example = self._example_index.find(_as_path(image))
        whole = bool(example and example.whole_image)
        try:
            detected = self.detect(image, whole)
        except gr.Error as e:
            return (None, False, "", None, gr.update(choices=[], value=None),
                    f"**This file was not used:** {e.message}")
        return (gr.update(), whole, example.caption if example else "", *detected)

    @user_errors
    def analyze(self, image, face=0, whole_image: bool = False, cam_method: str = "gradcam",
                baseline_model: str | None = None, efficientface_model: str | None = None,
                tta_flip: bool = False):
        """One face through both models. Returns (annotated image, crop, status, then per model
        label markdown, distribution figure, CAM overlay, timing markdown, and a JSON summary).

        ``tta_flip``: average each model's probabilities with those of the mirrored crop (2x model
        cost; the CAM explains the averaged top class).  No face found (and ``whole_image`` off)
        is a ``gr.Error``: an API client must not mistake it for a result."""
        return self._analyze(image, face, whole_image, cam_method, baseline_model, efficientface_model,
                             tta_flip, ui=False)

    @user_errors
    def analyze_ui(self, image, face=0, whole_image: bool = False, cam_method: str = "gradcam",
                   baseline_model: str | None = None, efficientface_model: str | None = None,
                   tta_flip: bool = False):
        """:meth:`analyze` for the page: no face found is an expected state, not an error (the
        picture, the no-face status and empty model columns; an error toast would cover the
        status); no image clears the outputs but leaves the status to :meth:`new_image`."""
        return self._analyze(image, face, whole_image, cam_method, baseline_model, efficientface_model,
                             tta_flip, ui=True)

    def _analyze(self, image, face, whole_image, cam_method, baseline_model, efficientface_model, tta_flip,
                 *, ui: bool):
        if image is None:
            return _empty_analysis(gr.update() if ui else NO_IMAGE)
        if cam_method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {cam_method!r}; choose one of {', '.join(CAM_METHODS)}")
        predictors = self._predictors([baseline_model, efficientface_model])
        det = self._detection(image, whole_image)
        if whole_image:
            face_obj, index = None, None
        else:
            if not det.faces:
                h, w = det.image.shape[:2]
                if ui:
                    return _empty_analysis(_no_face_status(w, h), self._save(for_preview(det.image), "jpeg"),
                                           {"face": None, "box": None, "faces_found": 0,
                                            "detect_ms": round(det.ms, 1), "models": {}})
                raise gr.Error(f"No face found in this {w}x{h} image. Set whole_image (the 'Use the whole "
                               "image' checkbox) to score the whole picture.", print_exception=False)
            index = _face_index(face, len(det.faces))
            face_obj = det.faces[index]
        annotated = det.image if face_obj is None else _highlight(det.image, det.faces, index)
        summary = {"face": index, "box": None if face_obj is None else list(face_obj.box),
                   "faces_found": det.total, "detect_ms": round(det.ms, 1), "tta_flip": bool(tta_flip),
                   "models": {}}
        columns, crop = [], None
        for side, name, p in zip(SIDES, (baseline_model, efficientface_model), predictors):
            if p is None:
                columns += [f"*No model selected for the {side} column.*", None, None, ""]
                continue
            res = p.predict_image(det.image, detect=not whole_image,
                                  faces=None if face_obj is None else [face_obj], cam=cam_method,
                                  tta_flip=bool(tta_flip))
            fp: FacePrediction = res.faces[0]
            crop = fp.crop if crop is None or side == "efficientface" else crop
            shown = for_display(fp.crop)
            columns += [f"### {fp.label} ({fp.score:.0%})\n`{p.name}`",
                        distribution_bar(fp.probs, fp.labels, name=side),
                        self._save(overlay_cam(shown, fp.cam)),
                        f"model{' x2 (flip TTA)' if tta_flip else ''} + {cam_method} {fp.latency_ms:.1f} ms "
                        f"({BACKEND_NAMES[p.backend]}) · "
                        f"detection {det.ms:.0f} ms"]
            summary["models"][side] = {"weights": name, "label": fp.label, "score": round(fp.score, 6),
                                       "probs": {k: round(float(v), 6) for k, v in zip(fp.labels, fp.probs)},
                                       "input_size": int(p.meta.input_size), "recipe": p.recipe,
                                       "backend": p.backend, "model_cam_ms": round(fp.latency_ms, 2),
                                       "prior_tau": p.prior_tau, "temperature": p.temperature}
        if face_obj is None:
            status = f"Scored the whole image ({det.image.shape[1]}x{det.image.shape[0]})."
        else:
            status = f"{_found(det)} Showing face {index + 1} of {det.total}."
        return (self._save(for_preview(annotated), "jpeg"), self._save(for_display(crop)), status, *columns, summary)

    @user_errors
    def batch(self, files, whole_image: bool = False, baseline_model: str | None = None,
              efficientface_model: str | None = None, tta_flip: bool = False):
        """Several images -> (table of per-face predictions for both models, CSV file path).
        ``tta_flip``: flip TTA for every face (the CSV says so in its ``tta_flip`` column)."""
        import pandas as pd

        paths = [_as_path(f) for f in (files or [])]
        if not paths:
            raise gr.Error("Upload one or more images for the batch.", print_exception=False)
        if len(paths) > MAX_BATCH_FILES:
            raise gr.Error(f"{len(paths)} files; the batch limit is {MAX_BATCH_FILES}.", print_exception=False)
        names = (baseline_model, efficientface_model)
        predictors = self._predictors(names)
        rows = []
        for path in paths:
            base = {"image": Path(path).name}
            try:
                img = load_image(path, max_pixels=self.max_pixels)
            except (ImageLoadError, FileNotFoundError) as e:
                rows.append({**base, "error": _short(str(e), (path,))})
                continue
            faces = [] if whole_image else detect_faces(img, max_faces=MAX_FACES)
            if not whole_image and not faces:
                rows.append({**base, "error": "no face found"})
                continue
            per_side = {}
            for side, p in zip(SIDES, predictors):
                if p is not None:
                    per_side[side] = p.predict_image(img, detect=not whole_image, faces=faces or None,
                                                     tta_flip=bool(tta_flip)).faces
            n = len(next(iter(per_side.values())))
            for i in range(n):
                row = {**base, "face": i + 1, "tta_flip": bool(tta_flip)}
                some = next(iter(per_side.values()))[i]
                row["box"] = "whole image" if some.box is None else " ".join(map(str, some.box))
                for side, preds in per_side.items():
                    fp = preds[i]
                    row[f"{side}_model"] = names[SIDES.index(side)]
                    row[f"{side}_label"] = fp.label
                    row[f"{side}_score"] = round(fp.score, 4)
                    row[f"{side}_prior_tau"] = predictors[SIDES.index(side)].prior_tau
                    row[f"{side}_temperature"] = predictors[SIDES.index(side)].temperature
                    for lab, v in fp.prob_dict().items():
                        row[f"{side}_p_{lab}"] = None if v is None else round(v, 4)
                if len(per_side) == 2:
                    row["agree"] = per_side[SIDES[0]][i].label == per_side[SIDES[1]][i].label
                rows.append(row)
        table = pd.DataFrame(rows)
        out_dir = Path(tempfile.mkdtemp(prefix="fer_lab_batch_"))
        csv_path = out_dir / "fer_lab_predictions.csv"
        table.to_csv(csv_path, index=False, quoting=csv.QUOTE_MINIMAL)
        shown = [c for c in ("image", "face", "box", *[f"{s}_{k}" for s in SIDES for k in ("label", "score")],
                             "agree", "error") if c in table.columns]
        return table[shown], str(csv_path)

    @user_errors
    def model_report(self, name: str | None = None):
        """The Models tab: a model's stored held-out evaluation (markdown) and its confusion heat map.

        Returns (markdown, plotly figure or None); the shipped weights carry their FER2013Test
        evaluation as served (prior correction included), so this needs no data set.
        """
        name = name or self.hub.default_for(len(SIDES) - 1)
        if not name:
            return "No model loaded.", None
        p = self.hub.get(name)
        rec = (p.meta.metrics or {}).get(HELD_OUT_KEY)
        text = held_out_markdown(name, p.meta.metrics)
        if not rec or not rec.get("confusion"):
            return text, None
        fig = confusion_heatmap(rec["confusion"], rec["labels"],
                                title=f"{name}: {rec['split']}, row = true class (recall on the diagonal)")
        return text, fig

    @user_errors
    def load_checkpoint(self, file=None, path: str | None = None, side: str = "efficientface"):
        """Load a checkpoint (upload or, locally, a server path) and select it in one column.

        Returns (status markdown, baseline dropdown update, efficientface dropdown update).
        """
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if file is not None:
            src = _as_path(file)
            key = self.hub.add_checkpoint(src, display_name=_orig_name(file))
        elif path and str(path).strip():
            if not self.allow_local_paths:
                raise gr.Error("Loading from a server path is disabled here; upload the file instead.",
                               print_exception=False)
            key = self.hub.add_checkpoint(Path(str(path).strip()).expanduser())
        else:
            raise gr.Error("Choose a checkpoint file (.safetensors, .pth.tar, .tar) or enter a path.",
                           print_exception=False)
        p = self.hub.get(key)
        choices = self.hub.names()
        notes = getattr(p, "notes", [])
        status = (f"Loaded **{key}**: {p.meta.arch}, {len(p.labels)} classes ({', '.join(p.labels)}), "
                  f"input {p.meta.input_size}px, crop recipe `{p.recipe}`.")
        if p.meta.source.startswith("official"):
            status += (" This is an authors' file without fer_lab metadata: RAF-DB normalisation and "
                       "224px crops are assumed.")
        if notes:
            status += " Note: " + " ".join(notes)
        ups = [gr.update(choices=choices, value=key) if s == side else gr.update(choices=choices) for s in SIDES]
        return (status, *ups)


# ---------------------------------------------------------------------- small pure helpers
def _as_path(f) -> str:
    """Gradio hands files as paths (type='filepath') or FileData-like objects with .path/.name."""
    if isinstance(f, (str, os.PathLike)):
        return str(f)
    if isinstance(f, dict) and "path" in f:
        return str(f["path"])
    for attr in ("path", "name"):
        if isinstance(getattr(f, attr, None), str):
            return getattr(f, attr)
    raise TypeError(f"expected a file path, got {type(f).__name__}")


def _orig_name(f) -> str | None:
    if isinstance(f, dict):
        return f.get("orig_name")
    name = getattr(f, "orig_name", None)
    if name:
        return name
    # Gradio keeps the original file name as the last path component of its upload cache
    return Path(_as_path(f)).name


def _found(det: _Detection) -> str:
    s = f"Found {det.total} face{'s' if det.total != 1 else ''} ({det.ms:.0f} ms)."
    if det.total > MAX_FACES:
        s += f" Listing the {MAX_FACES} largest."
    return s


def _face_label(i: int, face) -> str:
    x, y, w, h = face.box
    return f"Face {i + 1}: {w}x{h} px at ({x}, {y})"


def _face_index(face, n: int) -> int:
    if face is None or face == "":
        return 0
    try:
        i = int(face)
    except (TypeError, ValueError):
        digits = "".join(ch for ch in str(face).split(":")[0] if ch.isdigit())
        if not digits:
            raise ValueError(f"face must be an index 0..{n - 1}, got {face!r}") from None
        i = int(digits) - 1
    if not 0 <= i < n:
        raise ValueError(f"face index {i} out of range: {n} face{'s' if n != 1 else ''} found (0..{n - 1})")
    return i


def _highlight(image: np.ndarray, faces, index: int) -> np.ndarray:
    labels = [str(i + 1) for i in range(len(faces))]
    out = draw_faces(image, faces, labels, BOX_COLOR)
    return draw_faces(out, [faces[index]], [labels[index]], SELECTED_COLOR)


def _no_face_status(w: int, h: int) -> str:
    return (f"**No face found** in this {w}x{h} image. Tick *Use the whole image* to score the whole "
            "picture (works best on a tightly cropped face).")


def _empty_analysis(status, annotated=None, summary=None):
    return (annotated, None, status, *(["", None, None, ""] * len(SIDES)), summary or {})

