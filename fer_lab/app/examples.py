"""The app's license-clean example images (``data/examples``), their captions and settings.

An example is recognised by its content (size + SHA-1), not by how it arrived: clicking it in the
examples table and uploading the same file give the same settings, and every other image starts
from the defaults (face detection on).  That is what lets the "Use the whole image" checkbox
follow the image source without knowing which UI event brought the image in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import file_sha1
from ..io import IMAGE_EXTENSIONS
from ..shipped import examples_dir
from ..data.synthfer import EXAMPLES as SYNTH_EXAMPLES

__all__ = ["Example", "ExampleIndex", "EXAMPLES_DIR", "load_examples", "example_images", "example_caption"]

EXAMPLES_DIR = examples_dir()  # the checkout's data/examples, or the installed package data
# data/examples/README.md describes these two; they carry no expression ground truth
PHOTO_CAPTIONS = {
    "astronaut.png": "Real photo, one face (no ground truth)",
    "group.jpg": "Four faces, multi-face test (no ground truth)",
}


@dataclass(frozen=True)
class Example:
    path: str
    caption: str
    whole_image: bool  # synthfer drawings are face crops already: score them whole (Haar misses some)


def example_caption(name: str) -> str:
    """A short line for the examples table (it truncates near 50 characters): the expected label
    (the synthfer mixture's argmax; both labels for a near tie) and the nuisances, or what a photo
    is for."""
    for file, mixture, occluder, yaw in SYNTH_EXAMPLES:
        if file == name:
            (top, w1), *rest = sorted(mixture.items(), key=lambda kv: -kv[1])
            if rest and rest[0][1] >= 0.8 * w1:  # a near tie: either label is right
                text = f"Expected: {top} {w1:.0%} or {rest[0][0]} {rest[0][1]:.0%}"
            elif rest:
                text = f"Expected: {top} ({w1:.0%}; {rest[0][0]} {rest[0][1]:.0%})"
            else:
                text = f"Expected: {top}"
            extras = ([occluder] if occluder else []) + ([f"turned {yaw:+.0f}°"] if yaw else [])
            return text + (" · " + ", ".join(extras) if extras else "")
    return PHOTO_CAPTIONS.get(name, name)


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """The example images in ``folder`` (sorted by name) with captions; none if it is missing."""
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [Example(str(p), example_caption(p.name), p.name.startswith("synth")) for p in paths]


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    """License-clean example images shipped in data/examples (never FER+ images)."""
    return [e.path for e in load_examples(folder)]


class ExampleIndex:
    """Finds the example an image file is a copy of (Gradio serves examples from its own cache)."""

    def __init__(self, examples: list[Example]):
        self._by_key = {(os.path.getsize(e.path), file_sha1(e.path)): e for e in examples}
        self._sizes = {size for size, _ in self._by_key}

    def find(self, path) -> Example | None:
        try:
            size = os.path.getsize(path)
            # hash only files that could match: an upload costs one stat() otherwise
            return self._by_key.get((size, file_sha1(path))) if size in self._sizes else None
        except (OSError, TypeError):
            return None
