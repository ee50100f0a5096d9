"""Preprocessing that travels with the weights.

A model's metadata (input size, mean/std, grayscale, crop recipe; from its checkpoint, or the
registry defaults for a freshly created model) builds the transform; training (the cache builder
and the evaluation transform) and inference (``fer-lab predict``, the app) call the same
functions, so the model sees identical crops and pixels in both.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["Preprocess", "preprocess_for", "resize_square", "to_rgb_uint8", "normalize_uint8", "PREALIGNED_RECIPES",
           "PREALIGNED_PHOTO_RECIPE"]

# the authors' files were trained on pre-aligned face crops; for photos we crop detected faces
PREALIGNED_RECIPES = ("prealigned",)
# the authors' crops (RetinaFace-aligned RAF-DB/AffectNet faces) include hair and chin
PREALIGNED_PHOTO_RECIPE = "wide"


def to_rgb_uint8(img) -> np.ndarray:
    """PIL image or array (HxW, HxWx1/3/4; uint8/uint16/float in [0,1]) -> HxWx3 uint8."""
    if isinstance(img, Image.Image):
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            img = Image.fromarray((arr / max(arr.max(), 1.0) * 255).astype(np.uint8))
        return np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"cannot interpret an array of shape {arr.shape} as an image")
    return np.ascontiguousarray(arr)


def resize_square(img: np.ndarray, size: int, grayscale: bool = False) -> np.ndarray:
    """HxWx3 uint8 face crop -> size x size x 3 uint8 (bilinear, antialiased; optional gray)."""
    pil = Image.fromarray(to_rgb_uint8(img))
    if grayscale:
        pil = pil.convert("L").convert("RGB")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.BILINEAR)
    return np.asarray(pil)


def normalize_uint8(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """B x H x W x 3 (or B x 3 x H x W) uint8 tensor -> normalised float B x 3 x H x W."""
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 batch, got {batch.dtype}")
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    x = batch.float().div_(255.0)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


@dataclass(frozen=True)
class Preprocess:
    """Face crop -> the model's input: crop recipe, resize, grayscale, normalisation.

    ``crop`` is the metadata's crop dict (``ModelMeta.crop``: recipe name plus the parameters
    recorded at training time); :meth:`crop_recipe` turns it into a :class:`fer_lab.faces.CropRecipe`.
    """

    input_size: int = 224
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    grayscale: bool = False
    crop: dict = field(default_factory=lambda: {"recipe": "none"}, hash=False)

    @classmethod
    def from_meta(cls, meta) -> "Preprocess":
        return cls(int(meta.input_size), tuple(meta.mean), tuple(meta.std), bool(meta.grayscale),
                   dict(meta.crop or {"recipe": "none"}))

    @property
    def recipe(self) -> str:
        """The crop recipe's name (``"none"``: the input already is a face crop)."""
        return self.crop.get("recipe", "none")

    def crop_recipe(self, detect: bool = True):
        """The :class:`fer_lab.faces.CropRecipe` that frames a detected face for this model.

        ``"prealigned"`` (the authors' files) has no recipe of its own: with detection, faces in
        photos are cropped with ``"wide"`` framing; without, the whole image is the input.
        """
        from .faces import get_recipe

        if self.recipe in PREALIGNED_RECIPES and detect:
            return get_recipe(PREALIGNED_PHOTO_RECIPE)
        return get_recipe(self.crop)  # honours margins etc. recorded at training time

    def resize(self, face) -> np.ndarray:
        """One face crop -> uint8 S x S x 3 (resized, gray for grayscale models): what the model sees."""
        return resize_square(to_rgb_uint8(face), self.input_size, self.grayscale)

    def resize_all(self, faces) -> np.ndarray:
        """Face crops -> uint8 N x S x S x 3, each through :meth:`resize`."""
        return np.stack([self.resize(f) for f in faces])

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 B x S x S x 3 (or B x 3 x S x S) tensor on any device -> normalised float B x 3 x S x S
        with this model's mean/std."""
        return normalize_uint8(batch, self.mean, self.std)

    def __call__(self, faces) -> torch.Tensor:
        """One face crop or a list of them -> normalised float batch B x 3 x S x S
        (:meth:`resize_all`, then :meth:`normalize`)."""
        if isinstance(faces, (np.ndarray, Image.Image)):
            faces = [faces]
        return self.normalize(torch.from_numpy(self.resize_all(faces)))


def preprocess_for(model: torch.nn.Module, input_size: int | None = None) -> Preprocess:
    """``model.preprocess`` (every model from ``create_model`` or ``load_model`` carries one),
    with ``input_size`` overriding the size only (EfficientFace family: any multiple of 16)."""
    pre = getattr(model, "preprocess", None)
    if pre is None:
        raise ValueError(f"{type(model).__name__} carries no .preprocess; "
                         "build it with fer_lab.create_model or fer_lab.load_model")
    if input_size is not None and int(input_size) != pre.input_size:
        pre = replace(pre, input_size=int(input_size))
    return pre
