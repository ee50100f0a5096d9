"""Class activation maps for any fer_lab model, with a faithfulness score next to the picture.

One engine for the CLI, notebooks and the app (pytorch-grad-cam 1.5.7 underneath):

* :class:`CamExplainer` owns the grad-cam object and its hooks for one model and releases them
  on ``close()``/``__exit__`` (hooks left on a shared model leak memory and slow every forward).
* :func:`compare_cams` runs several models on the same face crops (the paper's Figure 1:
  baseline vs EfficientFace on frontal / non-frontal / occluded faces) and returns CAMs at each
  image's resolution, overlays, predictions and a deletion/insertion faithfulness score.
* :func:`faithfulness` measures whether a map points at pixels the model actually uses
  (Petsiuk et al., "RISE", BMVC 2018): delete the most salient pixels first and watch the target
  probability fall (deletion AUC, lower is better), or insert them into a blurred face and watch it
  rise (insertion AUC, higher is better).  A map is only "faithful" relative to a reference, so
  :func:`compare_cams` also reports the same AUCs for a random ranking.

Design decisions (documented in docs/analysis.md):

* Gradient methods only need gradients *above* the target layer, so the explainer runs the part
  of the network below it without autograd and re-roots the graph at the target layer's output.
  The backward pass then costs a classifier head instead of a whole network, parameter ``.grad``
  buffers stay empty, and in-place ReLUs below the target layer (torchvision ResNets, the
  official EfficientFace) cannot invalidate the graph.
* A target layer whose output is modified in place *after* the hook (e.g. ``bn2`` inside a ResNet
  block, followed by ``out += identity``) would silently corrupt the saved activations; this is
  refused with a clear error naming the layer.
* Removed pixels are replaced by a Gaussian-blurred copy of the face (not zeros, which push the
  input far off the training distribution); ties in the saliency ranking (CAMs are zero over large
  areas after the ReLU) are broken by a seeded random permutation, not raster order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn

from ..engine import model_device, run_batches
from ..preprocess import preprocess_for, to_rgb_uint8  # preprocess_for: re-exported, part of this API

if TYPE_CHECKING:  # pandas is imported where it is used (it is slow to import)
    import pandas as pd

__all__ = ["CAM_METHODS", "CamExplainer", "compute_cams", "overlay_cam", "compare_cams", "faithfulness_table",
           "faithfulness", "faithfulness_curves", "preprocess_for", "model_label_names", "has_linear_head",
           "linear_head_cams"]


def _cam_classes() -> dict:
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
            "eigencam": pgc.EigenCAM, "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM,
            "eigengradcam": pgc.EigenGradCAM}


#: selectable CAM methods (perturbation methods such as Score-CAM need one forward per channel:
#: 1024 forwards for EfficientFace, far outside an interactive budget, so they are not offered)
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "xgradcam", "hirescam", "eigengradcam")


def has_linear_head(model: nn.Module) -> bool:
    """True when ``logits = Linear(mean over H, W of the CAM target layer's output)``.

    Models declare it (``gap_linear_head = True``: EfficientFace and its variants, the ResNets,
    the tiny test CNN; not MobileNet-V3, whose head has a hidden layer).  For these heads
    Grad-CAM has a closed form (:func:`linear_head_cams`)."""
    return bool(getattr(model, "gap_linear_head", False)) and isinstance(
        getattr(model, "get_classifier", lambda: None)(), nn.Linear)


def linear_head_cams(features: np.ndarray, weight: np.ndarray, targets: Sequence[int],
                     size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM from a forward pass alone, for a global-average-pool + linear head.

    With ``logit_c = sum_k W[c, k] * mean_ij A[k, i, j] + b_c`` the gradient of the logit with
    respect to ``A[k, i, j]`` is ``W[c, k] / (h * w)`` everywhere, so Grad-CAM's channel weights
    (the spatially averaged gradients) are ``W[c] / (h * w)`` and Grad-CAM equals CAM (Zhou et
    al., CVPR 2016) — no backward pass, so ONNX Runtime can serve it.  The ReLU, min-max scaling and
    resize are pytorch-grad-cam's own (``scale_cam_image``; tests compare with GradCAM).

    features: (B, K, h, w) feature maps of the CAM target layer; weight: (C, K) linear weights;
    targets: class per image; size: (width, height) of the output maps.
    """
    features = np.asarray(features, dtype=np.float32)
    weight = np.asarray(weight, dtype=np.float32)
    if features.ndim != 4 or weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"features (B, K, h, w) and weight (C, K) do not match: {features.shape}, {weight.shape}")
    from pytorch_grad_cam.utils.image import scale_cam_image

    h, w = features.shape[2:]
    chan = weight[np.asarray(list(targets), dtype=np.int64)] / np.float32(h * w)  # (B, K)
    cams = np.einsum("bk,bkij->bij", chan, features).astype(np.float32)
    # as BaseCAM.compute_cam_per_layer + aggregate_multi_layers do for one target layer
    cams = scale_cam_image(np.maximum(cams, 0), tuple(size))
    return scale_cam_image(np.maximum(cams, 0))


def model_label_names(model: nn.Module) -> list[str]:
    """Class names for the model's outputs, in order (``model.label_map``)."""
    lm = getattr(model, "label_map", None)
    if lm is None:
        raise ValueError(f"{type(model).__name__} carries no .label_map; "
                         "build it with fer_lab.create_model or fer_lab.load_model")
    return list(lm)


def _num_classes(model: nn.Module) -> int:
    if hasattr(model, "get_classifier"):
        from ..models import num_outputs

        return num_outputs(model)
    return int(getattr(model, "num_classes"))


def _resolve_targets(targets, batch_size: int, num_classes: int) -> list[int] | None:
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)):
        targets = [int(targets)] * batch_size
    targets = [int(t) for t in np.asarray(targets).reshape(-1)]
    if len(targets) != batch_size:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch_size}")
    bad = [t for t in targets if not 0 <= t < num_classes]
    if bad:
        raise ValueError(f"target class {bad[0]} out of range for a {num_classes}-class model")
    return targets


def _check_batch(batch) -> torch.Tensor:
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"expected a normalised float tensor B x 3 x S x S, got {type(batch).__name__}; "
                        "use preprocess_for(model)(faces) to build one from uint8 crops")
    if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
        raise ValueError(f"expected a normalised float batch B x 3 x S x S, got {tuple(batch.shape)} {batch.dtype}")
    return batch


class CamExplainer:
    """CAMs for one model; owns the grad-cam object and all hooks until :meth:`close`.

    >>> with CamExplainer(model, "gradcam") as explain:
    ...     cams = explain(batch)            # (B, S, S) float32 in [0, 1], predicted classes
    ...     probs = explain.last_probs       # (B, C) softmax of the same forward pass
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", target_layer: nn.Module | str | None = None):
        if method not in CAM_METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose one of {CAM_METHODS}")
        from ..models import get_cam_target_layer

        if target_layer is None:
            target_layer = get_cam_target_layer(model)
        elif isinstance(target_layer, str):
            target_layer = model.get_submodule(target_layer)
        if not isinstance(target_layer, nn.Module):
            raise TypeError("target_layer must be a module, a submodule name or None")
        self.model, self.method, self.target_layer = model, method, target_layer
        self.num_classes = _num_classes(model)
        self.last_probs: np.ndarray | None = None
        self._outer_grad = True
        self._active = False  # hooks act only inside __call__
        self._leaf: torch.Tensor | None = None
        self._leaf_version = 0
        # registered before grad-cam's hooks so theirs see the re-rooted tensor
        self._handles = [model.register_forward_pre_hook(self._pre_forward),
                         target_layer.register_forward_hook(self._reroot)]
        self._cam = _cam_classes()[method](model=model, target_layers=[target_layer])
        self._closed = False

    # -- hooks ---------------------------------------------------------------------------
    def _pre_forward(self, module, args):
        if not self._active:
            return
        self._outer_grad = torch.is_grad_enabled()
        self._leaf = None
        torch.set_grad_enabled(False)  # below the target layer: no graph

    def _reroot(self, module, args, output):
        if not self._active:
            return None
        torch.set_grad_enabled(self._outer_grad)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"CAM target layer {type(module).__name__} must return a tensor")
        if self._outer_grad:
            output = output.detach().requires_grad_(True)
        self._leaf, self._leaf_version = output, output._version
        return output

    # -- API -----------------------------------------------------------------------------
    def __call__(self, batch: torch.Tensor, targets: Sequence[int] | int | None = None) -> np.ndarray:
        """CAMs (B, S, S) float32 in [0, 1] at the batch's resolution; targets None = predicted."""
        if self._closed:
            raise RuntimeError("this CamExplainer is closed")
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        batch = _check_batch(batch).to(model_device(self.model))
        was_training = self.model.training
        self.model.eval()
        targets = _resolve_targets(targets, batch.shape[0], self.num_classes)
        grad_state = torch.is_grad_enabled()
        self._active = True
        try:
            with torch.enable_grad():
                # targets=None: grad-cam explains the argmax of the same forward pass
                cams = self._cam(batch, targets=None if targets is None
                                 else [ClassifierOutputTarget(t) for t in targets])
                logits = self._cam.outputs.detach()
        except RuntimeError as e:
            if "in-place" in str(e) or "inplace" in str(e):
                raise ValueError(self._inplace_message()) from None
            raise
        finally:
            self._active = False
            torch.set_grad_enabled(grad_state)
            self._release_graph()
            self.model.train(was_training)
        self.last_probs = torch.softmax(logits.float(), 1).cpu().numpy()
        self.last_targets = list(targets) if targets is not None else self.last_probs.argmax(1).tolist()
        return np.ascontiguousarray(cams, dtype=np.float32)

    def _inplace_message(self) -> str:
        return (f"the CAM target layer ({type(self.target_layer).__name__}) has its output modified in "
                "place further down the network (e.g. a BatchNorm followed by `out += identity` or an "
                "in-place ReLU); its saved activations would be corrupted. Target the enclosing block "
                "instead (the model's default cam_target_layer is safe).")

    def _release_graph(self) -> None:
        leaf = self._leaf
        self._leaf = None
        if leaf is not None and leaf._version != self._leaf_version:
            raise ValueError(self._inplace_message())
        self._cam.outputs = None
        self._cam.activations_and_grads.clear()
        for p in self.model.parameters():  # only the head's params get grads; drop them
            p.grad = None

    def close(self) -> None:
        if not self._closed:
            self._cam.activations_and_grads.release()
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._closed = True

    def __enter__(self) -> "CamExplainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compute_cams(model: nn.Module, batch: torch.Tensor, method: str = "gradcam",
                 targets: Sequence[int] | int | None = None, target_layer=None) -> np.ndarray:
    """One-shot CAMs (B, S, S) in [0, 1]; hooks are removed before returning."""
    with CamExplainer(model, method, target_layer) as explain:
        return explain(batch, targets)


def overlay_cam(image_rgb_uint8: np.ndarray, cam: np.ndarray, alpha: float = 0.5,
                colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Draw ``cam`` (any resolution, values in [0, 1]) over the face as a heat map -> HxWx3 uint8.

    ``alpha`` is the heat map's weight.  Pure drawing: no model, no normalisation of the map.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = to_rgb_uint8(image_rgb_uint8)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"cam must be a 2-D map, got shape {cam.shape}")
    h, w = img.shape[:2]
    if cam.shape != (h, w):
        cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
    cam = np.clip(np.nan_to_num(cam), 0.0, 1.0)
    return show_cam_on_image(img.astype(np.float32) / 255.0, cam, use_rgb=True, colormap=colormap,
                             image_weight=1.0 - alpha)


# ---------------------------------------------------------------------------------------------
# faithfulness
# ---------------------------------------------------------------------------------------------
def _blur(batch: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    s = batch.shape[-1]
    k = max(3, (s // 8) | 1)
    return gaussian_blur(batch, [k, k], [k / 3.0, k / 3.0])


def faithfulness_curves(model: nn.Module, batch: torch.Tensor, cams: np.ndarray, targets: Sequence[int] | int,
                        steps: int = 16, mode: str = "deletion", substrate: str = "blur",
                        seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Target-class probability after removing (deletion) / inserting (insertion) the top
    k/steps most salient pixels, k = 0..steps -> (B, steps + 1).

    ``substrate``: what removed pixels become: "blur" (Gaussian-blurred face, default) or "mean"
    (zeros in normalised space = the training mean colour).
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if substrate not in ("blur", "mean"):
        raise ValueError(f"substrate must be 'blur' or 'mean', got {substrate!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    batch = _check_batch(batch).detach().to(model_device(model))
    b, _, h, w = batch.shape
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim == 2:
        cams = cams[None]
    if cams.shape[0] != b:
        raise ValueError(f"got {cams.shape[0]} CAMs for a batch of {b}")
    if cams.shape[1:] != (h, w):
        cams = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in cams])
    targets = _resolve_targets(targets, b, _num_classes(model))
    if targets is None:
        raise ValueError("faithfulness needs explicit targets (the classes the CAMs explain)")
    base = _blur(batch) if substrate == "blur" else torch.zeros_like(batch)
    n = h * w
    rng = np.random.default_rng(seed)
    # rank pixels by saliency, ties broken by a seeded random permutation
    order = np.empty((b, n), dtype=np.int64)
    for i in range(b):
        perm = rng.permutation(n)
        order[i] = perm[np.argsort(-cams[i].reshape(-1)[perm], kind="stable")]
    rank = np.empty_like(order)
    rows = np.arange(b)[:, None]
    rank[rows, order] = np.arange(n)[None, :]
    rank_t = torch.from_numpy(rank).view(b, 1, h, w).to(batch.device)
    counts = [round(n * k / steps) for k in range(steps + 1)]
    # (image, step) pairs, image-major, evaluated in chunks of batch_size by the engine
    jobs = [(i, k) for i in range(b) for k in range(steps + 1)]

    def perturbed():
        for s in range(0, len(jobs), batch_size):
            chunk = jobs[s:s + batch_size]
            idx = torch.tensor([i for i, _ in chunk], device=batch.device)
            cnt = torch.tensor([counts[k] for _, k in chunk], device=batch.device).view(-1, 1, 1, 1)
            top = rank_t[idx] < cnt  # True on the k most salient pixels
            keep_src = ~top if mode == "deletion" else top
            yield torch.where(keep_src, batch[idx], base[idx])

    probs = run_batches(model, perturbed(), device=batch.device)  # (B * (steps + 1), C)
    return probs[np.arange(len(jobs)), np.repeat(targets, steps + 1)].reshape(b, steps + 1)


def _auc(curves: np.ndarray) -> np.ndarray:
    y = np.asarray(curves, dtype=np.float64)
    return ((y[:, 1:] + y[:, :-1]) / 2).mean(axis=1).astype(np.float32)  # trapezoid on x in [0, 1]


def faithfulness(model: nn.Module, batch: torch.Tensor, cams: np.ndarray, targets: Sequence[int] | int,
                 steps: int = 16, mode: str = "deletion", substrate: str = "blur", seed: int = 0) -> np.ndarray:
    """Per-image area under the deletion (lower = more faithful) or insertion (higher = more
    faithful) curve of the target-class probability, x normalised to [0, 1] -> (B,) float32."""
    return _auc(faithfulness_curves(model, batch, cams, targets, steps, mode, substrate, seed))


# ---------------------------------------------------------------------------------------------
# side-by-side comparison
# ---------------------------------------------------------------------------------------------
def _resolve_named_target(target, names: list[str]):
    if target is None or (isinstance(target, str) and target == "predicted"):
        return None
    if isinstance(target, str):
        from ..labels import normalise_name

        name = normalise_name(target)
        if name not in names:
            raise ValueError(f"target {target!r} is not among this model's classes {names}")
        return names.index(name)
    return int(target)


def compare_cams(models: Mapping[str, nn.Module], images: Sequence[np.ndarray], method: str = "gradcam",
                 target: int | str | None = None, *, input_size: int | None = None, alpha: float = 0.5,
                 faithfulness_steps: int | None = 16, faithfulness_random: bool = True, seed: int = 0) -> dict:
    """CAMs of several models on the same face crops (the paper's Figure 1).

    Args:
        models: name -> model (loaded checkpoints or ``create_model`` models).
        images: HxWx3 uint8 face crops (any size; each model applies its own preprocessing).
        target: None / "predicted" (each model's own top class), a class index, or a class name
            (resolved through each model's label map, so 7- and 8-class models can be compared).
        input_size: override every model's input size (e.g. 112 for speed).
        faithfulness_steps: deletion/insertion steps per image; None skips the faithfulness
            computation (2 x B x (steps + 1) extra forwards, 4 x with the random reference).
        faithfulness_random: also score a seeded random ranking (the reference a CAM must beat).

    Returns name -> {"cams": (B, H, W) float32 at the images' resolution (a list of HxW arrays if
    the crops differ in size), "overlays": list of uint8 HxWx3, "probs": (B, C), "pred": (B,),
    "targets": (B,), "labels": class names, "faithfulness": {"deletion", "insertion",
    "deletion_random", "insertion_random": (B,) AUCs, "score": mean(insertion - deletion)}}.
    """
    if not models:
        raise ValueError("compare_cams needs at least one model")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    faces = [to_rgb_uint8(im) for im in images]
    if not faces:
        raise ValueError("compare_cams needs at least one image")
    same_size = len({f.shape for f in faces}) == 1
    out = {}
    for name, model in models.items():
        pre = preprocess_for(model, input_size)
        names = model_label_names(model)
        batch = pre(faces).to(model_device(model))
        with CamExplainer(model, method) as explain:
            cams = explain(batch, _resolve_named_target(target, names))
            probs, tgts = explain.last_probs, np.asarray(explain.last_targets)
        per_image = [cv2.resize(c, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)
                     if c.shape != f.shape[:2] else c for c, f in zip(cams, faces)]
        per_image = [np.clip(c, 0, 1).astype(np.float32) for c in per_image]
        res = {"cams": np.stack(per_image) if same_size else per_image,
               "overlays": [overlay_cam(f, c, alpha) for f, c in zip(faces, per_image)],
               "probs": probs, "pred": probs.argmax(1), "targets": tgts, "labels": names,
               "method": method, "input_size": pre.input_size}
        if faithfulness_steps:
            fa = {}
            rand = np.random.default_rng(seed).random(cams.shape).astype(np.float32)
            for mode in ("deletion", "insertion"):
                fa[mode] = faithfulness(model, batch, cams, tgts, faithfulness_steps, mode, seed=seed)
                if faithfulness_random:
                    fa[f"{mode}_random"] = faithfulness(model, batch, rand, tgts, faithfulness_steps, mode, seed=seed)
            fa["score"] = float(np.mean(fa["insertion"] - fa["deletion"]))
            if faithfulness_random:
                fa["score_random"] = float(np.mean(fa["insertion_random"] - fa["deletion_random"]))
            res["faithfulness"] = fa
        out[name] = res
    return out


def faithfulness_table(result: Mapping[str, dict]) -> pd.DataFrame:
    """One row per model of a :func:`compare_cams` result (run with faithfulness): mean deletion
    AUC (lower is better), insertion AUC (higher), the random map's AUCs, ``score`` =
    mean(insertion - deletion) and ``beats_random`` = score - score_random."""
    import pandas as pd

    rows = []
    for name, r in result.items():
        fa = r.get("faithfulness")
        if fa is None:
            raise ValueError(f"{name!r} has no faithfulness scores: run compare_cams with faithfulness_steps")
        row = {"model": name, "method": r.get("method"), "n": len(fa["deletion"]),
               "deletion": float(np.mean(fa["deletion"])), "insertion": float(np.mean(fa["insertion"])),
               "score": fa["score"]}
        if "score_random" in fa:
            row.update(deletion_random=float(np.mean(fa["deletion_random"])),
                       insertion_random=float(np.mean(fa["insertion_random"])),
                       score_random=fa["score_random"], beats_random=fa["score"] - fa["score_random"])
        rows.append(row)
    return pd.DataFrame(rows)
