"""One batched inference engine: face crops -> the model's probabilities or pre-logit features.

Every surface that runs a model over many faces calls :func:`run_model`: ``fer-lab eval``
(:func:`fer_lab.inference.evaluate.evaluate`), the trainer's validation (``predict_arrays``), the
analysis modules (distributions, embeddings, robustness, calibration) and
:class:`fer_lab.inference.Predictor`'s PyTorch path.  Inputs that are not plain crops (the
trainer's augmented teacher views, the CAM faithfulness curves' perturbed batches) are normalised
batches built by their owner and go through :func:`run_batches`, the loop :func:`run_model` itself
runs.  Flip test-time augmentation is :func:`flip_average`, shared with the Predictor's ONNX
Runtime and CAM paths, so "TTA" means one thing everywhere.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .preprocess import Preprocess, preprocess_for

__all__ = ["run_model", "run_batches", "flip_average", "model_outputs", "model_device", "to_channels_last",
           "is_channels_last"]


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store ``model``'s 4-D weights channels-last (NHWC), in place; returns it.

    For the models the library owns (loaded by ``Predictor``, ``evaluate``, the trainer and its teachers),
    on CPU as on CUDA: on this project's 2-core x86 machine a training step of the FER+ models costs
    0.70-0.83x and batched inference 0.70-0.91x the CPU time of the NCHW layout, on AVX2 and on the
    generic (SSE4.1) kernels, with outputs equal to ~2e-9 (docs/performance.md, tools/bench_layout.py).  ``state_dict()`` then
    holds strided tensors; :func:`fer_lab.checkpoint.save_model` writes them contiguous."""
    return model.to(memory_format=torch.channels_last)


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's first 4-D weight is stored channels-last (then its inputs should be too)."""
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


def flip_average(fn: Callable, x: torch.Tensor, out=None):
    """``fn(x)`` averaged with ``fn`` of the horizontally mirrored batch (flip TTA).

    ``x`` is a normalised B x 3 x H x W batch; ``out`` is ``fn(x)`` when the caller already has it
    (e.g. probabilities from a CAM pass).  Works for tensors and NumPy arrays alike.
    """
    first = fn(x) if out is None else out
    return (first + fn(torch.flip(x, dims=[-1]))) / 2


def model_outputs(model: nn.Module, x: torch.Tensor, *, features: bool = False,
                  temperature: float = 1.0) -> torch.Tensor:
    """Softmax probabilities (float32) of a normalised batch, or its pre-logit features
    ``forward_head(forward_features(x), pre_logits=True)``."""
    if features:
        return model.forward_head(model.forward_features(x), pre_logits=True).float()
    return torch.softmax(model(x).float() / temperature, dim=1)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-free module)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _resolve_preprocess(model, preprocess, mean, std, input_size) -> Preprocess:
    if preprocess is None:
        if mean is not None and std is not None and input_size is not None:
            return Preprocess(int(input_size), tuple(mean), tuple(std))
        preprocess = preprocess_for(model, input_size)
    if mean is not None or std is not None or (input_size is not None and int(input_size) != preprocess.input_size):
        preprocess = Preprocess(int(input_size or preprocess.input_size), tuple(mean or preprocess.mean),
                                tuple(std or preprocess.std), preprocess.grayscale)
    return preprocess


@torch.inference_mode()
def run_model(model: nn.Module, faces, *, tta_flip: bool = False, features: bool = False,
              batch_size: int = 256, device: torch.device | str | None = None, amp: bool = False,
              temperature: float = 1.0, preprocess: Preprocess | None = None, mean=None, std=None,
              input_size: int | None = None) -> np.ndarray:
    """Run ``model`` over face crops in batches -> N x C probabilities (or N x D features), float32.

    Args:
        faces: a uint8 N x S x S x 3 array (a cache memmap is read one batch at a time), a
            :class:`fer_lab.data.FaceSet`, a list of HxWx3 crops, or anything
            :func:`fer_lab.data.as_face_set` reads.  Crops whose size differs from the input size
            (and all crops of a grayscale model) are resized with the model's preprocessing; an
            array already at the input size goes to the network as it is.
        tta_flip: average with the mirrored batch (:func:`flip_average`).
        features: pre-logit features instead of probabilities (averaged over both views with TTA).
        device: where the batches go (default: the model's device); the model is not moved.
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        preprocess / mean / std / input_size: the normalisation; default the model's own
            (``model.preprocess`` of a loaded checkpoint, else its registry defaults), any of
            ``mean``/``std``/``input_size`` overriding it.

    The model runs in eval mode and is put back into its previous mode afterwards.
    """
    device = model_device(model) if device is None else torch.device(device)
    batches = face_batches(model, faces, batch_size=batch_size, device=device, preprocess=preprocess, mean=mean,
                           std=std, input_size=input_size)
    return run_batches(model, batches, tta_flip=tta_flip, features=features, device=device, amp=amp,
                       temperature=temperature)


def face_batches(model: nn.Module, faces, *, batch_size: int = 256, device: torch.device | str | None = None,
                 preprocess: Preprocess | None = None, mean=None, std=None,
                 input_size: int | None = None) -> Iterator[torch.Tensor]:
    """The normalised B x 3 x S x S batches :func:`run_model` feeds ``model`` for ``faces`` (same
    arguments), one at a time: for loops that run the network themselves, e.g.
    :func:`fer_lab.training.soup.recalibrate_batchnorm`.  Argument errors are raised here, not at the
    first batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(faces, np.ndarray):
        if faces.ndim != 4 or faces.shape[-1] != 3:
            raise ValueError(f"expected an N x H x W x 3 uint8 array of faces, got shape {faces.shape}")
        images = faces
    else:
        from .data.faceset import as_face_set

        images = as_face_set(faces).images
    if input_size is None and preprocess is None and mean is not None and isinstance(images, np.ndarray):
        input_size = images.shape[1]
    pre = _resolve_preprocess(model, preprocess, mean, std, input_size)
    device = model_device(model) if device is None else torch.device(device)
    ready = (isinstance(images, np.ndarray) and images.dtype == np.uint8 and not pre.grayscale
             and images.shape[1] == images.shape[2] == pre.input_size)

    def batches():
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            # np.array copies: memmap slices are read-only and torch wants writable memory
            u8 = np.array(chunk) if ready else pre.resize_all(chunk)
            yield pre.normalize(torch.from_numpy(u8).to(device))

    return batches()


@torch.inference_mode()
def run_batches(model: nn.Module, batches: Iterable[torch.Tensor], *, tta_flip: bool = False,
                features: bool = False, device: torch.device | str | None = None, amp: bool = False,
                temperature: float = 1.0) -> np.ndarray:
    """Run ``model`` over normalised float batches (B x 3 x S x S) -> their outputs concatenated,
    float32 (N x C probabilities or N x D features).

    The loop of :func:`run_model`, for callers that build the network's input themselves (augmented
    or perturbed views); ``batches`` may be a generator, consumed one batch at a time.  Options as
    in :func:`run_model`; the model runs in eval mode and is put back into its previous mode.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = model_device(model) if device is None else torch.device(device)
    autocast = amp and device.type == "cuda"

    def forward(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model_outputs(model, x, features=features, temperature=temperature)

    was_training = model.training
    model.eval()
    outs = []
    nhwc = device.type == "cuda" or is_channels_last(model)
    try:
        for x in batches:
            x = x.to(device)
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            out = flip_average(forward, x) if tta_flip else forward(x)
            outs.append(out.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)
