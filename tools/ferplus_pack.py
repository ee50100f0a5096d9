"""Dev tool: pack / unpack a FER+ folder as lossless PNG mosaics, to carry it to a GPU machine.

    python tools/ferplus_pack.py pack ../shared/data/ferplus .devdata/ferplus_packed
    python tools/ferplus_pack.py unpack .devdata/ferplus_packed /tmp/ferplus

The packed folder is derived from research-only images: keep it in an ignored folder
(.devdata/ is in .gitignore) and never commit it.  Unpacking recreates the native FER+ layout
(FER2013Train|Valid|Test/*.png + label.csv) bit-exactly, so the normal ``ferplus`` adapter reads it.
"""
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("FER2013Train", "FER2013Valid", "FER2013Test")
COLS = 64


def pack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = list(csv.reader(open(src / split / "label.csv")))
        imgs = np.stack([np.asarray(Image.open(src / split / r[0]).convert("L")) for r in rows])
        n, h, w = imgs.shape
        nrows = -(-n // COLS)
        pad = np.zeros((nrows * COLS, h, w), np.uint8)
        pad[:n] = imgs
        mosaic = pad.reshape(nrows, COLS, h, w).transpose(0, 2, 1, 3).reshape(nrows * h, COLS * w)
        Image.fromarray(mosaic).save(dst / f"{split}.png", optimize=True)
        shutil.copy(src / split / "label.csv", dst / f"{split}.label.csv")
        print(split, n, (dst / f"{split}.png").stat().st_size // 1024, "KiB")


def unpack(src: Path, dst: Path) -> None:
    for split in SPLITS:
        rows = list(csv.reader(open(src / f"{split}.label.csv")))
        mosaic = np.asarray(Image.open(src / f"{split}.png"))
        h = w = 48
        nrows = mosaic.shape[0] // h
        tiles = mosaic.reshape(nrows, h, COLS, w).transpose(0, 2, 1, 3).reshape(-1, h, w)
        out = dst / split
        out.mkdir(parents=True, exist_ok=True)
        for r, tile in zip(rows, tiles):
            Image.fromarray(tile).save(out / r[0])
        shutil.copy(src / f"{split}.label.csv", out / "label.csv")
        print(split, len(rows))


if __name__ == "__main__":
    {"pack": pack, "unpack": unpack}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
