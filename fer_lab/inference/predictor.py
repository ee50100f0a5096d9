"""Photos -> label probabilities: image -> faces -> the crops the model was trained on -> probabilities.

One :class:`Predictor` per checkpoint is shared by ``fer-lab predict``, the Gradio app and the
notebooks, so all of them detect, crop and normalise exactly as the weights' metadata says:

* the crop recipe, resize, grayscale and mean/std come from ``model.preprocess`` (built from
  ``model.meta``; ``"none"``: the whole image is the input; ``"prealigned"``, the authors' files:
  detected faces are cropped with the ``"wide"`` recipe, the whole image is used when detection
  is off);
* all faces of one image go through the network as one batch.

``FacePrediction.latency_ms`` is the model time for the image (preprocessing of the crops plus the
forward pass of the whole batch), the same number for every face of that image; detection time is
reported separately in :class:`ImageResult`.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..labels import CANONICAL
from ..shipped import DEFAULT_WEIGHTS

__all__ = ["Predictor", "FacePrediction", "ImageResult", "DEFAULT_WEIGHTS", "WHOLE_IMAGE_RECIPES",
           "predict_files"]

BACKENDS = ("torch", "onnx", "auto")
# recipes meaning "the network takes the whole image as it is" (no face detection needed)
WHOLE_IMAGE_RECIPES = ("none",)


@dataclass
class FacePrediction:
    """One face (or the whole image when ``box`` is None) scored by one model."""

    box: tuple[int, int, int, int] | None  # x, y, w, h in pixels of the loaded (EXIF-rotated) image
    crop: np.ndarray                         # uint8 S x S x 3: what the model saw, before normalisation
    probs: np.ndarray                        # float32 (C,), sums to 1, order = ``labels``
    labels: tuple[str, ...]
    label: str                               # top label
    score: float                             # its probability
    latency_ms: float                        # preprocessing + forward of this image's batch
    detection_score: float | None = None
    index: int = 0                           # face number within the image (detector order)
    cam: np.ndarray | None = None            # float32 S x S in [0, 1] when asked for (predict_image(cam=...))

    def prob_dict(self, canonical_order: bool = True) -> dict[str, float | None]:
        """Probabilities per label; with ``canonical_order`` every canonical label is a key
        (None for labels the model does not predict, e.g. contempt for a 7-class model)."""
        own = {lab: float(p) for lab, p in zip(self.labels, self.probs)}
        if not canonical_order:
            return own
        return {lab: own.get(lab) for lab in CANONICAL}

    def to_dict(self) -> dict:
        return {"face": self.index, "box": list(self.box) if self.box is not None else None,
                "detection_score": None if self.detection_score is None else round(float(self.detection_score), 4),
                "label": self.label, "score": round(self.score, 6),
                "probs": {k: (None if v is None else round(v, 6)) for k, v in self.prob_dict().items()},
                "latency_ms": round(self.latency_ms, 2)}


@dataclass
class ImageResult:
    """All faces of one image, or the reason the image could not be used."""

    source: str
    faces: list[FacePrediction] = field(default_factory=list)
    error: str | None = None
    size: tuple[int, int] | None = None   # (width, height) after EXIF rotation
    detect_ms: float = 0.0
    whole_image: bool = False              # True when the whole image was scored (no detection)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        d = {"image": self.source}
        if self.error is not None:
            d["error"] = self.error
            return d
        d.update({"size": list(self.size) if self.size else None, "whole_image": self.whole_image,
                  "detect_ms": round(self.detect_ms, 2), "faces": [f.to_dict() for f in self.faces]})
        return d


class Predictor:
    """A loaded model plus its crop recipe and preprocessing; thread-safe for ``predict``.

    Args:
        weights: shipped name (``efficientface-ferplus``), checkpoint path (own ``.safetensors`` or
            the authors' ``.pth.tar``/``.tar``) or a model from :func:`fer_lab.load_model` or
            :func:`fer_lab.create_model` (both carry ``.meta`` and ``.preprocess``).
        device: torch device.
        recipe: override the checkpoint's crop recipe (rarely right: the model was trained on it).
        backend: ``"torch"`` (default), ``"onnx"`` (ONNX Runtime on CPU: the model is exported
            once to a cached file, :func:`fer_lab.inference.export.cached_onnx`, and must pass the parity
            check) or ``"auto"`` (ONNX Runtime when it is installed and the export works, else
            PyTorch; ``.backend`` says which and ``.backend_note`` why not).  With ONNX Runtime,
            Grad-CAM for models with a pooling + linear head is computed in closed form from the
            same forward pass (:func:`fer_lab.analysis.cam.linear_head_cams`); other CAM methods use PyTorch.
        tta_flip: average the probabilities of each crop and its mirror image (2x the model cost;
            the same averaging as ``fer-lab eval --tta-flip``: +0.6 points on FER+ test for the
            shipped EfficientFace, docs/results.md).  CAMs are computed on the unflipped crop, for
            the class the averaged probabilities pick.  Every ``predict*`` method also takes
            ``tta_flip=`` per call (None: this default), so one shared Predictor can serve requests
            with and without it (the app's switch).
        prior_correction: apply the checkpoint's post-hoc prior correction (``meta.prior_correction``,
            a tau chosen on validation when the model was trained, and the calibration temperature
            when one is stored) after the TTA averaging; ``False`` reports the model's raw
            probabilities.  ``.prior_tau`` / ``.temperature`` are the ones in effect (0 / 1 = none).
    """

    def __init__(self, weights: str | os.PathLike | nn.Module = DEFAULT_WEIGHTS, device: str | torch.device = "cpu",
                 recipe: str | None = None, backend: str = "torch", tta_flip: bool = False,
                 prior_correction: bool = True):
        if isinstance(weights, nn.Module):
            model = weights
            for attr in ("meta", "preprocess"):
                if not hasattr(model, attr):
                    raise ValueError(f"a model passed to Predictor needs .{attr} "
                                     "(build it with fer_lab.create_model or fer_lab.load_model)")
            self.name = getattr(model, "checkpoint_path", None) or getattr(model.meta, "arch", "model")
            model = model.to(device).eval()
        else:
            from ..checkpoint import load_model

            model = load_model(weights, device=device)
            self.name = str(weights)
        from ..engine import to_channels_last

        self.model = to_channels_last(model)  # faster on CPU and CUDA, same outputs (fer_lab.engine)
        self.device = torch.device(device)
        self.meta = model.meta
        # an overriding recipe replaces the checkpoint's crop dict (and the margins it records)
        self.preprocess = replace(model.preprocess, crop={"recipe": recipe}) if recipe else model.preprocess
        self.labels: tuple[str, ...] = tuple(model.meta.labels)
        self.recipe_override = recipe
        self.tta_flip = bool(tta_flip)
        self.prior_correction = dict(getattr(model.meta, "prior_correction", None) or {}) if prior_correction else {}
        self.prior_tau = float(self.prior_correction.get("tau", 0.0))
        self.temperature = float(self.prior_correction.get("temperature") or 1.0)
        self.recipe = self.preprocess.recipe
        self.crop_recipe()  # unknown recipe names fail here, not on the first image
        # CAM hooks live on the shared model and would see a concurrent forward: one use at a time
        self._lock = threading.Lock()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend, self.backend_note, self.onnx = "torch", None, None
        self._fc_weight = None  # linear head weights for closed-form Grad-CAM from ORT outputs
        if backend != "torch":
            self._use_onnx(required=backend == "onnx")

    def _use_onnx(self, required: bool) -> None:
        try:
            if self.device.type != "cpu":
                raise RuntimeError(f"the ONNX Runtime backend runs on CPU, not {self.device}")
            from ..analysis.cam import has_linear_head
            from .export import OnnxModel, cached_onnx

            self.onnx = OnnxModel(cached_onnx(self.model), threads=torch.get_num_threads())
            if self.onnx.has_features and has_linear_head(self.model):
                self._fc_weight = self.model.get_classifier().weight.detach().cpu().numpy().astype(np.float32)
            self.backend = "onnx"
        except Exception as e:
            if required:
                raise RuntimeError(f"ONNX Runtime backend unavailable for {self.name}: {type(e).__name__}: {e}") from e
            self.onnx, self._fc_weight = None, None
            self.backend_note = f"ONNX Runtime not used ({type(e).__name__}: {str(e).splitlines()[0][:200]})"

    def __repr__(self) -> str:
        return (f"Predictor({self.name!r}, arch={self.meta.arch!r}, input={self.meta.input_size}, "
                f"recipe={self.recipe!r}, labels={len(self.labels)})")

    @property
    def whole_image_only(self) -> bool:
        """True when the checkpoint's recipe takes the whole image (``"none"``)."""
        return self.recipe in WHOLE_IMAGE_RECIPES

    def crop_recipe(self, detect: bool = True):
        """The :class:`fer_lab.faces.CropRecipe` used for this model's faces (``preprocess.crop_recipe``)."""
        return self.preprocess.crop_recipe(detect)

    def detect(self, image: np.ndarray, max_faces: int | None = None) -> list:
        """Faces in a loaded image (largest first), with eye landmarks when the recipe aligns."""
        from ..faces import detect_faces

        return detect_faces(image, max_faces=max_faces, landmarks=self.crop_recipe().align)

    def extract(self, image: np.ndarray, detect: bool = True, faces: Sequence | None = None,
                max_faces: int | None = None):
        """Loaded image -> list of (Face or None, raw crop), using this model's recipe.

        ``faces``: detections to reuse (from :meth:`detect` or :func:`fer_lab.faces.detect_faces`)
        so that several models on one image share one detection pass; ``[]`` = no face found.
        """
        from ..faces import crop_face, detect_eyes

        recipe = self.crop_recipe(detect)
        if not detect or not recipe.detect:
            return [(None, crop_face(image, None, recipe))]
        if faces is None:
            faces = self.detect(image, max_faces=max_faces)
        elif max_faces is not None:
            faces = sorted(faces, key=lambda f: -f.area)[:max_faces]
        out = []
        for f in faces:
            if recipe.align and f.landmarks is None:
                f = replace(f, landmarks=detect_eyes(image, f.box))
            out.append((f, crop_face(image, f, recipe)))
        return out

    # ------------------------------------------------------------------ model
    @torch.inference_mode()
    def predict_crops(self, crops: Sequence[np.ndarray],
                      tta_flip: bool | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """Raw face crops -> (model-view crops uint8 N x S x S x 3, probs float32 N x C, ms)."""
        if len(crops) == 0:
            return (np.zeros((0, self.preprocess.input_size, self.preprocess.input_size, 3), np.uint8),
                    np.zeros((0, len(self.labels)), np.float32), 0.0)
        t0 = time.perf_counter()
        if self.onnx is None:  # PyTorch: the shared batched engine, then the prior correction
            from ..engine import run_model
            from ..metrics import apply_prior_correction

            seen = self.preprocess.resize_all(crops)
            with self._lock:
                probs = run_model(self.model, seen, tta_flip=self._tta(tta_flip), batch_size=len(seen),
                                  device=self.device, preprocess=self.preprocess)
            probs = apply_prior_correction(probs, self.prior_correction)
        else:
            seen, x = self._batch(crops)
            with self._lock:
                probs = self._postprocess(self._probs(x), x, tta_flip)
        return seen, probs.astype(np.float32), (time.perf_counter() - t0) * 1000.0

    def _tta(self, tta_flip: bool | None) -> bool:
        return self.tta_flip if tta_flip is None else bool(tta_flip)

    def _probs(self, x: torch.Tensor) -> np.ndarray:
        """Softmax of a preprocessed batch from ONNX Runtime or the PyTorch model (the engine's forward)."""
        from ..engine import model_outputs

        if self.onnx is None:
            return model_outputs(self.model, x).cpu().numpy()
        return torch.softmax(torch.from_numpy(self.onnx.run(x)[0]).float(), dim=1).numpy()

    @torch.inference_mode()
    def _postprocess(self, probs, x: torch.Tensor, tta_flip: bool | None = None) -> np.ndarray:
        """``probs`` of ``x``, averaged with those of its mirror image when flip TTA is on
        (``tta_flip``, or the Predictor's default when None), then prior-corrected."""
        from ..engine import flip_average
        from ..metrics import apply_prior_correction

        if self._tta(tta_flip):
            probs = flip_average(self._probs, x, np.asarray(probs))
        return apply_prior_correction(probs, self.prior_correction)

    def _batch(self, crops) -> tuple[np.ndarray, torch.Tensor]:
        """(model-view uint8 crops, the network's input): the model's own ``Preprocess`` for both
        backends, so ONNX Runtime sees exactly the pixels ``run_model`` gives the PyTorch model."""
        seen = self.preprocess.resize_all(crops)
        return seen, self.preprocess.normalize(torch.from_numpy(seen)).to(self.device)

    def _closed_form_cam(self, method: str) -> bool:
        return self.onnx is not None and method == "gradcam" and self._fc_weight is not None

    def predict_crops_with_cams(self, crops: Sequence[np.ndarray], method: str = "gradcam",
                                tta_flip: bool | None = None):
        """Raw face crops -> (model-view crops, probs, CAMs N x S x S for the predicted classes, ms):
        probabilities and maps from one forward pass (plus the head's backward in PyTorch).

        With flip TTA the probabilities are averaged with the mirror image's; where that changes a
        crop's top class, its CAM is recomputed for the new one (the map always explains the label
        reported)."""
        from ..analysis.cam import CAM_METHODS, CamExplainer

        if method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
        t0 = time.perf_counter()
        seen, x = self._batch(crops)
        with self._lock:
            if self._closed_form_cam(method):
                logits, cams = self._ort_cams(x, None)
                probs = torch.softmax(torch.from_numpy(logits).float(), 1).numpy()
            else:
                with CamExplainer(self.model, method) as explain:
                    cams = explain(x)
                    probs = explain.last_probs
            plain_top = np.asarray(probs).argmax(1)
            probs = self._postprocess(probs, x, tta_flip)
            top = probs.argmax(1)
            changed = np.flatnonzero(top != plain_top)
            if changed.size:  # TTA / prior correction moved the top class: explain the class reported
                cams = np.array(cams, copy=True)
                cams[changed] = self._cams_locked(x[changed], method, top[changed].tolist())
        return seen, probs.astype(np.float32), cams, (time.perf_counter() - t0) * 1000.0

    def predict(self, image, detect: bool = True, faces: Sequence | None = None,
                max_faces: int | None = None, tta_flip: bool | None = None) -> list[FacePrediction]:
        """Score every face of ``image`` (path, bytes, PIL, array; see :func:`fer_lab.io.load_image`).

        ``detect=False`` scores the whole image (cropped by the recipe's whole-image rule).
        Returns an empty list when detection finds no face.  ``max_faces`` keeps the largest
        (default: all).
        """
        return self.predict_image(image, detect=detect, faces=faces, max_faces=max_faces, tta_flip=tta_flip).faces

    def predict_image(self, image, detect: bool = True, faces: Sequence | None = None,
                      max_faces: int | None = None, source: str | None = None, cam: str | None = None,
                      tta_flip: bool | None = None) -> ImageResult:
        """Like :meth:`predict` but returns the :class:`ImageResult` (size, detection time).

        ``cam``: a CAM method name; each face then also gets ``.cam`` (the map for its top class,
        from the same pass that gives the probabilities; ``latency_ms`` covers both).
        ``tta_flip``: flip TTA for this call (None: the Predictor's default)."""
        from ..io import load_image

        img = image if _is_rgb_uint8(image) else load_image(image)
        t0 = time.perf_counter()
        pairs = self.extract(img, detect=detect, faces=faces, max_faces=max_faces)
        detect_ms = (time.perf_counter() - t0) * 1000.0
        if cam is not None and pairs:
            seen, probs, cams, ms = self.predict_crops_with_cams([c for _, c in pairs], cam, tta_flip=tta_flip)
        else:
            seen, probs, ms = self.predict_crops([c for _, c in pairs], tta_flip=tta_flip)
            cams = [None] * len(seen)
        out = []
        for i, ((face, _), crop, p, m) in enumerate(zip(pairs, seen, probs, cams)):
            k = int(np.argmax(p))
            box = None if face is None else tuple(int(v) for v in face.box)
            out.append(FacePrediction(box=box, crop=crop, probs=p, labels=self.labels, label=self.labels[k],
                                      score=float(p[k]), latency_ms=ms,
                                      detection_score=None if face is None else float(face.score), index=i,
                                      cam=m))
        whole = bool(pairs) and pairs[0][0] is None
        return ImageResult(source=source or _describe(image), faces=out, size=(img.shape[1], img.shape[0]),
                           detect_ms=detect_ms, whole_image=whole)

    # ------------------------------------------------------------------ CAM
    def cams(self, crops: Sequence[np.ndarray], method: str = "gradcam", targets: Sequence[int] | None = None):
        """Class-activation maps (N x S x S float32 in [0, 1]) for model-view crops.

        ``targets``: class index per crop (default: the predicted class).
        """
        x = self.preprocess(list(crops)).to(self.device)
        with self._lock:
            return self._cams_locked(x, method, targets)

    def _cams_locked(self, x: torch.Tensor, method: str, targets) -> np.ndarray:
        """CAMs of a preprocessed batch; the caller holds ``self._lock``."""
        from ..analysis.cam import compute_cams

        if self._closed_form_cam(method):
            return self._ort_cams(x, targets)[1]
        return compute_cams(self.model, x, method, targets)

    def _ort_cams(self, x: torch.Tensor, targets) -> tuple[np.ndarray, np.ndarray]:
        """(logits, Grad-CAMs) from one ONNX Runtime pass; targets None = the predicted classes."""
        from ..analysis.cam import _resolve_targets, linear_head_cams

        logits, feats = self.onnx.run(x)
        t = _resolve_targets(targets, x.shape[0], logits.shape[1])
        s = self.preprocess.input_size
        return logits, linear_head_cams(feats, self._fc_weight, logits.argmax(1) if t is None else t, (s, s))


def _is_rgb_uint8(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3


def _describe(image) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    return type(image).__name__


def predict_files(predictor: Predictor, sources: Iterable[str | os.PathLike], detect: bool = True,
                  max_faces: int | None = None) -> list[ImageResult]:
    """Score many images; an unreadable image becomes an ``ImageResult`` with ``error`` set."""
    from ..io import ImageLoadError

    results = []
    for src in sources:
        try:
            results.append(predictor.predict_image(src, detect=detect, max_faces=max_faces, source=str(src)))
        except (ImageLoadError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
            results.append(ImageResult(source=str(src), error=str(e)))
    return results
