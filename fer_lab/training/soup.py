"""Model soups: fine-tunes of one network averaged in weight space (Wortsman et al., ICML 2022).

Checkpoints fine-tuned from a common ancestor often lie in one basin of the loss; the average of their
weights is one network of the same size and speed that can be better than each of them (an ensemble
costs N forward passes, a soup one).  For a network with BatchNorm the averaged running statistics do
not describe the averaged weights' activations, so :func:`recalibrate_batchnorm` recomputes them on
training images (``torch.optim.swa_utils.update_bn``, the SWA recipe).

* :func:`average_state_dicts` — the arithmetic: a weighted mean of matching tensors.
* :func:`make_soup` — checkpoints -> one model (settings checked, metadata kept, nothing recalibrated).
* :func:`soup_on_dataset` — the recipe ``fer-lab soup`` runs: uniform or greedy soup, BatchNorm
  recalibrated on the training split, post-hoc prior correction chosen on validation, every step
  scored on validation (never test).
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

__all__ = ["average_state_dicts", "make_soup", "recalibrate_batchnorm", "soup_on_dataset", "SOUP_METHODS",
           "RECALIBRATE"]

SOUP_METHODS = ("uniform", "greedy")
RECALIBRATE = ("auto", "natural", "balanced", "none")
# settings every ingredient must share: a soup of networks that read different inputs or name
# different classes is not a soup
_SHARED = ("arch", "arch_kwargs", "labels", "grayscale", "mean", "std")


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], coefficients=None) -> dict:
    """The weighted mean of ``states`` (default: uniform), key by key.

    Every state must have the same keys and shapes (else ``ValueError`` naming the first difference).
    Floating-point tensors are averaged in float64 and cast back to their dtype; integer tensors
    (BatchNorm's ``num_batches_tracked``) are taken from the first state.  ``coefficients``: one
    non-negative number per state, normalised to sum 1.
    """
    if not states:
        raise ValueError("average_state_dicts: no state dicts given")
    n = len(states)
    c = np.full(n, 1.0 / n) if coefficients is None else np.asarray(coefficients, dtype=np.float64).ravel()
    if c.shape != (n,):
        raise ValueError(f"{len(c)} coefficients for {n} state dicts")
    if (c < 0).any() or not np.isfinite(c).all() or c.sum() <= 0:
        raise ValueError(f"coefficients must be finite, non-negative and not all zero, got {c.tolist()}")
    c = c / c.sum()
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        missing, extra = sorted(set(first) - set(s)), sorted(set(s) - set(first))
        if missing or extra:
            raise ValueError(f"state dict {i} differs from state dict 0 in its keys: missing {missing[:3]}, "
                             f"extra {extra[:3]} (different architectures?)")
        for k, v in first.items():
            if s[k].shape != v.shape:
                raise ValueError(f"state dict {i}: {k} has shape {tuple(s[k].shape)}, state dict 0 "
                                 f"{tuple(v.shape)} (different architectures or class counts?)")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            acc = sum(float(ci) * s[k].detach().to(torch.float64) for ci, s in zip(c, states))
            out[k] = acc.to(v.dtype)
        else:
            out[k] = v.detach().clone()
    return out


def _describe(w) -> str:
    return getattr(w, "checkpoint_path", None) or str(w)


def _check_ingredients(weights: Sequence, models: Sequence[nn.Module]) -> None:
    """Refuse ingredients whose architecture, class names or preprocessing differ from the first's."""
    ref = models[0].meta
    for w, m in zip(weights[1:], models[1:]):
        for key in _SHARED:
            a, b = getattr(ref, key), getattr(m.meta, key)
            if (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
                raise ValueError(f"cannot average {_describe(w)} with {_describe(weights[0])}: {key} differs "
                                 f"({b!r} vs {a!r})")


def make_soup(weights: Sequence, coefficients=None, *, input_size: int | None = None) -> nn.Module:
    """Average checkpoints (paths, shipped names or loaded models) into one model, in eval mode.

    The ingredients must share architecture, class names and preprocessing (``ValueError``
    otherwise); their input sizes may differ (a convolutional network with global pooling reads any
    size): the soup reads ``input_size`` (default the largest).  The metadata is the first
    ingredient's, without its metrics or prior correction (both belong to that checkpoint, not to
    the soup); ``meta.train_config["soup"]`` lists the ingredients and coefficients, and
    ``meta.train_config["balanced_sampling"]`` says whether every ingredient was trained class-balanced.
    BatchNorm statistics are the plain average: call :func:`recalibrate_batchnorm` before trusting the soup.
    """
    from ..checkpoint import file_sha1, load_model
    from ..meta import attach_meta

    if not weights:
        raise ValueError("make_soup: no checkpoints given")
    models = [w if isinstance(w, nn.Module) else load_model(w) for w in weights]
    _check_ingredients(weights, models)
    ref = models[0].meta
    state = average_state_dicts([m.state_dict() for m in models], coefficients)
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(state)
    soup.__dict__.pop("checkpoint_path", None)  # the copy is not the first ingredient's file
    meta = copy.deepcopy(ref)
    meta.input_size = int(input_size or max(m.meta.input_size for m in models))
    meta.metrics, meta.prior_correction = {}, {}
    ingredients = []
    for w, m in zip(weights, models):
        path = getattr(m, "checkpoint_path", None)
        ingredients.append({"weights": str(_describe(w)), "sha1": file_sha1(path) if path else None,
                            "input_size": m.meta.input_size})
    n = len(models)
    coef = [1.0 / n] * n if coefficients is None else [float(v) / float(np.sum(coefficients)) for v in coefficients]
    # balanced_sampling survives (all ingredients had it, or not): recalibrate="auto" reads it, e.g. for a
    # soup of soups
    meta.train_config = {"soup": {"ingredients": ingredients, "coefficients": coef, "bn_recalibrated": False},
                         "balanced_sampling": all(bool(m.meta.train_config.get("balanced_sampling")) for m in models)}
    attach_meta(soup, meta)
    return soup.eval()


def recalibrate_batchnorm(model: nn.Module, faces, *, labels=None, batch_size: int = 256, device=None,
                          max_images: int | None = None, seed: int = 0) -> int:
    """Recompute every BatchNorm layer's running mean and variance over ``faces`` (uint8 crops, or
    anything :func:`fer_lab.engine.run_model` reads), preprocessed as the model's own inference does:
    the exact average over all batches (momentum None), as ``torch.optim.swa_utils.update_bn``.

    ``labels`` (one class index per face): draw the faces class-balanced instead (as many draws as
    faces, with replacement, ``seed``), the way ``balanced_sampling=true`` fed the network in training.
    The statistics must describe the batches the network was trained on: FER+'s shipped models were
    trained on class-balanced batches, and statistics of the natural class mix (2/3 neutral + happiness)
    move their outputs (measured in docs/results_history.md, (n)).
    ``max_images``: that many faces at random (``seed``), for a quicker estimate.  The model is returned
    to eval mode; returns the number of faces read.  A model without BatchNorm is left as it is (returns 0).
    """
    from torch.optim.swa_utils import update_bn

    from ..engine import face_batches, model_device

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return 0
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if labels is not None or max_images is not None:
        from ..data.faceset import as_face_set

        images = faces if isinstance(faces, np.ndarray) else as_face_set(faces).images
        rng = np.random.default_rng(seed)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64).ravel()
            if len(labels) != len(images):
                raise ValueError(f"{len(labels)} labels for {len(images)} faces")
            counts = np.bincount(labels)
            w = 1.0 / counts[labels]
            idx = np.sort(rng.choice(len(images), min(len(images), max_images or len(images)), replace=True,
                                     p=w / w.sum()))
            faces = np.asarray(images[idx])
        elif max_images < len(images):
            idx = np.sort(rng.choice(len(images), max_images, replace=False))
            faces = np.asarray(images[idx])
    n = 0
    device = model_device(model) if device is None else torch.device(device)

    def counted():
        nonlocal n
        for x in face_batches(model, faces, batch_size=batch_size, device=device):
            n += len(x)
            yield x

    update_bn(counted(), model, device=device)
    model.eval()
    if n == 0:
        raise ValueError("recalibrate_batchnorm: no faces given")
    return n


def soup_on_dataset(weights: Sequence, dataset: str, root=None, *, method: str = "greedy",
                    train_split: str = "train", split: str = "valid", criterion: str = "mean",
                    input_size: int | None = None, recalibrate: str = "auto", max_images: int | None = None,
                    taus=None, dataset_kwargs: dict | None = None, batch_size: int = 256,
                    log=print) -> tuple[nn.Module, dict]:
    """A soup of ``weights`` chosen and corrected on ``split`` (validation; refused for "test").

    Each ingredient is scored first (its own input size, raw probabilities, τ fitted by ``criterion`` on the
    prior of ``train_split``, as ``fer-lab prior`` and the trainer's ``posthoc_prior`` do).
    ``uniform``: all of them averaged.
    ``greedy``: ingredients in the order of their scores, each added to the soup if the soup's score
    does not drop (Wortsman et al.'s greedy soup).  Every soup of two or more ingredients has its
    BatchNorm statistics recomputed on ``train_split`` before it is scored: ``recalibrate`` "natural"
    (the split's class mix), "balanced" (class-balanced draws, :func:`recalibrate_batchnorm`), "auto"
    (balanced when every ingredient was trained with ``balanced_sampling``, else natural) or "none"
    (keep the averaged statistics).  Returns the soup, with its chosen τ stored
    (``meta.prior_correction``), and a record of every step.
    """
    from ..data import build_cache, build_dataset
    from ..engine import run_model
    from ..metrics import PRIOR_TAUS, fit_prior_correction_from_probs

    if method not in SOUP_METHODS:
        raise ValueError(f"method must be one of {SOUP_METHODS}, got {method!r}")
    if split == "test" or train_split == "test":
        raise ValueError("a soup is chosen on validation and its statistics come from training images; "
                         "the test split reports, it does not choose")
    if len(weights) < 2:
        raise ValueError(f"a soup needs at least two checkpoints, got {len(weights)}")
    if recalibrate not in RECALIBRATE:
        raise ValueError(f"recalibrate must be one of {RECALIBRATE}, got {recalibrate!r}")
    from ..checkpoint import load_model

    models = [load_model(w) for w in weights]
    if recalibrate == "auto":
        recalibrate = ("balanced" if all(m.meta.train_config.get("balanced_sampling") for m in models)
                       else "natural")
    size = int(input_size or max(m.meta.input_size for m in models))
    _check_ingredients(weights, models)  # refuse mismatched ingredients before any scoring
    ref = models[0].meta  # what every ingredient shares: labels, crop, grayscale, normalisation
    recipe = ref.crop.get("train_recipe") or ref.crop.get("recipe", "none")
    taus = PRIOR_TAUS if taus is None else tuple(float(t) for t in taus)
    caches: dict = {}

    def split_cache(name: str, px: int):
        """The split's dataset and its crops at ``px``, cropped as evaluation crops them (built once)."""
        if (name, px) not in caches:
            ds = build_dataset(dataset, root, name, num_classes=ref.num_classes, **(dataset_kwargs or {}))
            ref.label_map.check_compatible(ds.label_map, f"checkpoint {weights[0]}", f"dataset {dataset}/{name}")
            caches[name, px] = ds, build_cache(ds, px, recipe=recipe, grayscale=ref.grayscale, progress=False)
        return caches[name, px]

    prior = split_cache(train_split, size)[0].class_prior(ref.labels)

    def score(model: nn.Module) -> dict:
        """τ fitted on ``split`` by ``criterion`` (as fer-lab prior / the trainer's posthoc_prior), and its row."""
        meta = model.meta
        cache = split_cache(split, meta.input_size)[1]
        probs = run_model(model, cache.images, batch_size=batch_size, mean=meta.mean, std=meta.std,
                          input_size=meta.input_size)
        pc = fit_prior_correction_from_probs(probs, np.asarray(cache.labels), prior, criterion, f"{dataset}/{split}",
                                             taus)
        row = next(r for r in pc["sweep"] if r["tau"] == pc["tau"])
        return {"prior_correction": pc, "score": row["score"], "accuracy": row["accuracy"],
                "balanced_accuracy": row["balanced_accuracy"], "tau": pc["tau"]}

    def build(members: list[int]) -> tuple[nn.Module, dict]:
        if len(members) == 1:
            return models[members[0]], scores[members[0]]
        soup = make_soup([models[i] for i in members], input_size=size)
        soup.meta.train_config["soup"]["ingredients"] = [
            {**ing, "weights": str(weights[i])} for ing, i in zip(soup.meta.train_config["soup"]["ingredients"], members)]
        if recalibrate != "none":
            cache = split_cache(train_split, size)[1]
            labels = np.asarray(cache.labels) if recalibrate == "balanced" else None
            n = recalibrate_batchnorm(soup, cache.images, labels=labels, batch_size=batch_size, max_images=max_images)
            soup.meta.train_config["soup"]["bn_recalibrated"] = {"split": f"{dataset}/{train_split}", "images": n,
                                                                 "draw": recalibrate}
        return soup, score(soup)

    scores = []
    for w, m in zip(weights, models):
        s = score(m)
        scores.append(s)
        log(f"ingredient {w}: {split} accuracy {100 * s['accuracy']:.2f}, balanced {100 * s['balanced_accuracy']:.2f}, "
            f"{criterion} score {100 * s['score']:.2f} (tau {s['tau']:g})")
    order = sorted(range(len(models)), key=lambda i: -scores[i]["score"])
    steps = []
    if method == "uniform":
        members = list(range(len(models)))
        soup, best = build(members)
        steps.append({"members": [str(weights[i]) for i in members], **_public(best)})
        log(f"uniform soup of {len(members)}: {_line(best, criterion)}")
    else:
        members = [order[0]]
        soup, best = build(members)
        for i in order[1:]:
            cand, s = build(members + [i])
            kept = s["score"] >= best["score"]
            steps.append({"added": str(weights[i]), "members": [str(weights[j]) for j in members + [i]],
                          "kept": kept, **_public(s)})
            log(f"greedy: + {weights[i]} -> {_line(s, criterion)}: {'kept' if kept else 'dropped'}")
            if kept:
                members, soup, best = members + [i], cand, s
    if len(members) > 1:
        soup.meta.prior_correction = dict(best["prior_correction"])
    record = {"method": method, "criterion": criterion, "split": f"{dataset}/{split}", "input_size": size,
              "recalibrate": recalibrate,
              "ingredients": [{"weights": str(w), **_public(s)} for w, s in zip(weights, scores)],
              "members": [str(weights[i]) for i in members], "steps": steps, **_public(best),
              "single_ingredient": len(members) == 1}
    return soup, record


def _public(s: dict) -> dict:
    return {k: s[k] for k in ("score", "accuracy", "balanced_accuracy", "tau")}


def _line(s: dict, criterion: str) -> str:
    return (f"accuracy {100 * s['accuracy']:.2f}, balanced {100 * s['balanced_accuracy']:.2f}, "
            f"{criterion} score {100 * s['score']:.2f} (tau {s['tau']:g})")
