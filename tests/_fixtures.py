"""Tiny on-disk datasets in each adapter's native layout, for the tests (no real faces).

Every writer draws random-noise images (seeded) and returns the root it wrote.  With
``defects=True`` the tree also holds the faults an adapter must report rather than crash on:
a malformed row, an unknown label, a missing file, a zero-byte image and a corrupt PNG.
The expected consequences are documented per writer so tests can assert exact numbers.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from fer_lab.labels import CANONICAL

__all__ = ["write_ferplus_folders", "write_ferplus_csv", "write_rafdb", "write_affectnet", "write_caers",
           "write_imagefolder", "write_csv_list", "random_face"]


def random_face(rng: np.random.Generator, size: int = 48, gray: bool = True) -> np.ndarray:
    if gray:
        return rng.integers(0, 256, (size, size), dtype=np.uint8)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage-not-a-png" * 4)


# FER+ vote rows (FER+ column order: neu hap sur sad ang dis fea con unk NF)
FERPLUS_ROWS = [
    [8, 1, 0, 0, 0, 0, 0, 0, 1, 0],   # neutral
    [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],   # happiness
    [0, 0, 5, 5, 0, 0, 0, 0, 0, 0],   # tie surprise/sadness -> surprise (first FER+ column)
    [0, 0, 0, 0, 6, 2, 0, 2, 0, 0],   # anger
    [1, 0, 0, 0, 0, 0, 0, 7, 2, 0],   # contempt (excluded in 7-class)
    [2, 0, 0, 0, 0, 0, 0, 0, 6, 2],   # majority unknown -> excluded by argmax10
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # no emotion votes -> always excluded
    [0, 0, 0, 0, 1, 4, 4, 0, 1, 0],   # tie disgust/fear -> disgust
]


def write_ferplus_folders(root, n_per_row: int = 1, defects: bool = False, seed: int = 0) -> Path:
    """FER+ ``FER2013{Train,Valid,Test}/`` layout; each split holds ``FERPLUS_ROWS`` x n_per_row.

    ``defects`` (train only) appends: line with 11 columns (parse), votes 'x' (parse), a row
    whose PNG is missing (missing), a zero-byte PNG and a corrupt PNG (both readable rows whose
    images fail to decode: found by ``--verify-images`` / the cache build).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    k = 0
    for split in ("Train", "Valid", "Test"):
        folder = root / f"FER2013{split}"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for _ in range(n_per_row):
            for votes in FERPLUS_ROWS:
                name = f"fer{k:07d}.png"
                k += 1
                _save(folder / name, random_face(rng))
                lines.append([name, "(0, 0, 48, 48)", *votes])
        if defects and split == "Train":
            lines.append(["fer9000000.png", "(0, 0, 48, 48)", 1, 2, 3, 4, 0, 0, 0, 0, 0])
            lines.append(["fer9000001.png", "(0, 0, 48, 48)", "x", 9, 0, 0, 0, 0, 0, 0, 0, 0])
            lines.append(["fer9000002.png", "(0, 0, 48, 48)", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # missing
            (folder / "fer9000003.png").write_bytes(b"")
            lines.append(["fer9000003.png", "(0, 0, 48, 48)", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            _corrupt(folder / "fer9000004.png")
            lines.append(["fer9000004.png", "(0, 0, 48, 48)", 0, 10, 0, 0, 0, 0, 0, 0, 0, 0])
        with open(folder / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(lines)
    return root


def write_ferplus_csv(root, n_per_row: int = 1, seed: int = 0) -> Path:
    """Kaggle ``fer2013.csv`` + Microsoft ``fer2013new.csv`` (row-aligned), FERPLUS_ROWS per usage,
    plus one row per usage that FER+ removed (empty Image name)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kag = [["emotion", "pixels", "Usage"]]
    new = [["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
            "fear", "contempt", "unknown", "NF"]]
    k = 0
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for _ in range(n_per_row):
            for votes in FERPLUS_ROWS + [None]:
                px = " ".join(map(str, random_face(rng).ravel()))
                kag.append([6, px, usage])
                new.append([usage, "" if votes is None else f"fer{k:07d}.png",
                            *(votes or [0] * 8 + [10, 0])])
                k += 1
    with open(root / "fer2013.csv", "w", newline="") as f:
        csv.writer(f).writerows(kag)
    with open(root / "fer2013new.csv", "w", newline="") as f:
        csv.writer(f).writerows(new)
    return root


def write_rafdb(root, per_class: int = 2, defects: bool = False, seed: int = 0, dists: bool = False) -> Path:
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/<stem>_aligned.jpg``.

    ``per_class`` images per native label 1..7 in train and test.  ``defects`` adds a
    one-field line, label 9 (unknown), a missing image, a zero-byte and a corrupt image (train).
    ``dists`` writes ``EmoLabel/distribution.txt`` (name + 7 probabilities in native order).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    lines, dist_lines = [], []
    for split in ("train", "test"):
        k = 0
        for lab in range(1, 8):
            for _ in range(per_class):
                k += 1
                name = f"{split}_{k:05d}.jpg"
                _save(root / "Image" / "aligned" / f"{split}_{k:05d}_aligned.jpg", random_face(rng, 100, gray=False))
                lines.append(f"{name} {lab}")
                p = np.full(7, 0.05)
                p[lab - 1] = 0.7
                dist_lines.append(name + " " + " ".join(f"{v:.2f}" for v in p))
    if defects:
        lines += ["train_09001.jpg", "train_09002.jpg 9", "train_09003.jpg 4", "train_09004.jpg 1",
                  "train_09005.jpg 2"]
        (root / "Image" / "aligned" / "train_09004_aligned.jpg").write_bytes(b"")
        _corrupt(root / "Image" / "aligned" / "train_09005_aligned.jpg")
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    if dists:
        (root / "EmoLabel" / "distribution.txt").write_text("\n".join(dist_lines) + "\n")
    return root


AFFECTNET_HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "facial_landmarks", "expression", "valence", "arousal"]


def write_affectnet(root, per_class: int = 2, defects: bool = False, seed: int = 0) -> Path:
    """AffectNet ``training.csv``/``validation.csv`` + ``Manually_Annotated_Images/<dir>/<file>``.

    Expressions 0..10 each ``per_class`` times (8 none, 9 uncertain, 10 non-face are excluded);
    the face box is the central 60x60 of an 80x80 image.  ``defects`` (training.csv): a short row,
    expression 'happy', face_width 'abc', a missing file, a zero-byte and a corrupt image.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_root = root / "Manually_Annotated_Images"
    for csv_name in ("training.csv", "validation.csv"):
        rows = [AFFECTNET_HEADER]
        for expr in range(11):
            for j in range(per_class):
                rel = f"{expr + 1}/{csv_name[0]}{expr:02d}{j:03d}.jpg"
                _save(img_root / rel, random_face(rng, 80, gray=False))
                rows.append([rel, 10, 10, 60, 60, "1.0;2.0", expr, 0.1, -0.2])
        if defects and csv_name == "training.csv":
            rows.append(["1/short.jpg", 10, 10])
            rows.append(["1/word.jpg", 10, 10, 60, 60, "", "happy", 0, 0])
            rows.append(["1/badbox.jpg", 10, 10, "abc", 60, "", 1, 0, 0])
            rows.append(["1/missing.jpg", 10, 10, 60, 60, "", 1, 0, 0])
            (img_root / "1").mkdir(parents=True, exist_ok=True)
            (img_root / "1" / "empty.jpg").write_bytes(b"")
            rows.append(["1/empty.jpg", 10, 10, 60, 60, "", 1, 0, 0])
            _corrupt(img_root / "1" / "corrupt.jpg")
            rows.append(["1/corrupt.jpg", 10, 10, 60, 60, "", 2, 0, 0])
        with open(root / csv_name, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root


CAERS_FOLDERS = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")


def write_caers(root, per_class: int = 2, defects: bool = False, seed: int = 0) -> Path:
    """CAER-S ``train|test/<Emotion>/*.png``; ``defects`` (train): a folder 'Bored' (unknown label),
    a zero-byte and a corrupt PNG, and a non-image file (ignored)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for i, emo in enumerate(CAERS_FOLDERS):
            name = emo.lower() if i % 2 else emo  # mixed case on purpose: disgust, happy, sad lower
            for j in range(per_class):
                _save(root / split / name / f"{j:04d}.png", random_face(rng, 64, gray=False))
    if defects:
        _save(root / "train" / "Bored" / "0000.png", random_face(rng, 64, gray=False))
        (root / "train" / "happy" / "empty.png").write_bytes(b"")
        _corrupt(root / "train" / "sad" / "corrupt.png")
        (root / "train" / "happy" / "notes.txt").write_text("not an image")
    return root


def write_imagefolder(root, per_class: int = 2, num_classes: int = 7, defects: bool = False, seed: int = 0) -> Path:
    """Official EfficientFace layout ``train|test/<k>/*.jpg`` (k canonical index); ``defects``
    (train): folder '9' (unknown label), a zero-byte and a corrupt image."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for k in range(num_classes):
            for j in range(per_class):
                _save(root / split / str(k) / f"{j:04d}.jpg", random_face(rng, 64, gray=False))
    if defects:
        _save(root / "train" / "9" / "0000.jpg", random_face(rng, 64, gray=False))
        (root / "train" / "0" / "empty.jpg").write_bytes(b"")
        _corrupt(root / "train" / "1" / "corrupt.jpg")
    return root


def write_csv_list(root, list_name: str = "list.csv", defects: bool = False, seed: int = 0) -> Path:
    """Generic ``path,label[,split]`` list (labels as names or indices) with images under ``root/imgs``.

    Rows: one per canonical class 0..6 in train (by name) and test (by index).  ``defects`` adds a
    one-column row, label 'bored', a missing file and a corrupt image.  Returns the list path.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = [["path", "label", "split"]]
    for split in ("train", "test"):
        for k in range(7):
            rel = f"imgs/{split}_{k}.png"
            _save(root / rel, random_face(rng, 64, gray=False))
            rows.append([rel, CANONICAL[k] if split == "train" else str(k), split])
    if defects:
        rows.append(["imgs/only_path.png"])
        _save(root / "imgs" / "bored.png", random_face(rng, 64, gray=False))
        rows.append(["imgs/bored.png", "bored", "train"])
        rows.append(["imgs/missing.png", "anger", "train"])
        _corrupt(root / "imgs" / "corrupt.png")
        rows.append(["imgs/corrupt.png", "fear", "train"])
    path = root / list_name
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path
