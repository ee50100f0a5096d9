"""Safe image loading for datasets, the CLI and the Gradio app.

Everything that reads a user's image goes through :func:`load_image`, which always returns an
``H x W x 3`` uint8 RGB array or raises :class:`ImageLoadError` (a ``ValueError``) with a
message a user can act on.

Decisions (kept in one place so datasets and the app agree):

* EXIF orientation is applied (phone photos are stored sideways; a detector on the raw pixels
  misses the face).  Malformed EXIF is ignored rather than failing the load.
* Transparency (RGBA, LA, P with a transparent index) is composited on **white**, which is
  what image viewers show; dropping alpha would expose arbitrary colours under transparent
  pixels (often black), which changes the background the model sees.
* 16-bit images are scaled by 1/257 (full 0..65535 range -> 0..255), never by the per-image
  max, so that a dark 16-bit image stays dark.  32-bit float images (mode ``F``) are taken as
  [0, 1] when their maximum is <= 1, else clipped to [0, 255].
* Animated GIF/WebP/APNG: the first frame.
* Limits: files larger than ``max_bytes`` and images with more than ``max_pixels`` pixels are
  refused *before* decoding, from the header.  PIL's global ``Image.MAX_IMAGE_PIXELS`` and
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` are never modified (the app is multi-threaded); PIL's
  bomb warning is silenced only around ``Image.open`` (our own, stricter check follows), and its
  hard error (above 2x its global limit, ~179 MP, so ``max_pixels`` cannot go beyond that) is
  reported as :class:`ImageLoadError`.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

__all__ = ["ImageLoadError", "load_image", "image_files", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_BYTES",
           "IMAGE_EXTENSIONS"]

# full-resolution phone photos pass: 48-50 MP (8064x6048, 8160x6120) and 108 MP (12000x9000) sensor modes; 200 MP
# modes (16320x12240) and PIL's own hard bomb limit (~179 MP) do not (the message says to downscale)
DEFAULT_MAX_PIXELS = 120_000_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_DOWNSCALE = "(a guard against decompression bombs): downscale it; a face needs only ~100-200 px"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
if "avif" in features.modules and features.check_module("avif"):  # Pillow >= 11.3 wheels decode AVIF
    IMAGE_EXTENSIONS += (".avif",)

HEIF_EXTENSIONS = (".heic", ".heif", ".hif")
HEIF_ADVICE = ("share or export as JPEG (iPhone: Settings > Camera > Formats > Most Compatible), or convert "
               "(e.g. heif-convert)")
HEIF_HINT = f"HEIC/HEIF (the iPhone camera's default format), which fer_lab does not decode: {HEIF_ADVICE}"

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]


class ImageLoadError(ValueError):
    """The input is not a usable image (empty, corrupt, not an image, too large, ...)."""


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Load ``src`` (path, bytes, file-like, PIL image or array) as an H x W x 3 uint8 RGB array."""
    if isinstance(src, np.ndarray):
        return _array_to_rgb(src, max_pixels)
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels, "image")
        return _pil_to_rgb(src, "image")
    data, name = _read_bytes(src, max_bytes)
    if not data:
        raise ImageLoadError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns above its global limit; we decide by our own limit instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            _check_pixels(img.size, max_pixels, name)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            return _pil_to_rgb(img, name)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        # PIL refuses above ~179 MP inside Image.open, before our own check: say it the same way
        m = re.search(r"\((\d+) pixels\)", str(e))
        if m:
            raise ImageLoadError(f"{name} is {int(m.group(1)) / 1e6:.1f} MP; the limit is {max_pixels / 1e6:.1f} MP "
                                 f"{_DOWNSCALE}") from None
        raise ImageLoadError(f"{name} refused as a decompression bomb: {e}") from None
    except UnidentifiedImageError:
        if _is_heif(data):
            raise ImageLoadError(f"{name} is {HEIF_HINT}") from None
        raise ImageLoadError(f"{name} is not an image in a format PIL can read "
                             f"(expected one of {', '.join(IMAGE_EXTENSIONS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        raise ImageLoadError(f"{name} is truncated or corrupt: {e}") from None


def _is_heif(data: bytes) -> bool:
    """ISO base media file with a HEIF/HEIC brand (what iPhones save): ``....ftypheic`` and relatives."""
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                                                    b"msf1")


def image_files(sources) -> tuple[list[str], list[str]]:
    """Expand folders into the image files directly inside them: ``(files, skipped)``.

    Files named directly are kept as given, in order (a missing or unreadable one gets its own error when it is
    loaded). A folder contributes its files with an :data:`IMAGE_EXTENSIONS` suffix (any case), sorted by name;
    hidden files (``.DS_Store``, macOS ``._IMG_0001.JPG`` companions) are left out silently, and every other file
    is returned in ``skipped`` (HEIC photos among them: see :data:`HEIF_HINT`). Not recursive. A folder
    without any image raises :class:`ImageLoadError`.
    """
    files, skipped = [], []
    for src in sources:
        path = Path(src)
        if not path.is_dir():
            files.append(str(src))
            continue
        entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        found = [str(p) for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [str(p) for p in entries if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not found:
            raise ImageLoadError(f"{path} is a folder without image files (expected names ending in "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
        files += found
    return files, skipped


def _read_bytes(src, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        name = "image data"
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such image file: {path}")
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageLoadError(f"{name} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.1f} MB")
        data = path.read_bytes()
    elif hasattr(src, "read"):
        name = str(getattr(src, "name", "image stream"))
        data = src.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(f"{name} is a text stream; open the file in binary mode ('rb')")
        data = bytes(data)
    else:
        raise TypeError(f"cannot load an image from {type(src).__name__}; "
                        "pass a path, bytes, a binary file object, a PIL image or an array")
    if len(data) > max_bytes:
        raise ImageLoadError(f"{name} is larger than the {max_bytes / 2**20:.1f} MB limit")
    return data, name


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageLoadError(f"{name} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageLoadError(f"{name} is {w}x{h} = {w * h / 1e6:.1f} MP; the limit is {max_pixels / 1e6:.1f} MP "
                             f"{_DOWNSCALE}")


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make an otherwise fine photo unreadable
        pass
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
            gray = arr  # some decoders hand back 8-bit data in an int32 container
        else:
            gray = arr / 257.0
        return _gray_to_rgb(np.clip(gray, 0, 255).round().astype(np.uint8))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return _gray_to_rgb(np.clip(arr, 0, 255).round().astype(np.uint8))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("PA", "La"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _array_to_rgb(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    """Arrays follow the same rules as files: uint16 / 257, float in [0, 1], alpha on white."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageLoadError(f"cannot interpret an array of shape {arr.shape} as an image "
                             "(expected H x W, H x W x 1, H x W x 3 or H x W x 4)")
    _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, "array")
    if arr.dtype == np.uint8:
        out = arr
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif arr.dtype == np.bool_:
        out = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageLoadError("array image contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        out = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype.kind in "iu":
        out = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ImageLoadError(f"unsupported array dtype {arr.dtype}")
    if out.ndim == 2:
        return _gray_to_rgb(out)
    if out.shape[2] == 4:
        alpha = out[:, :, 3:4].astype(np.float32) / 255.0
        rgb = out[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(rgb.round().astype(np.uint8))
    return np.ascontiguousarray(out)
