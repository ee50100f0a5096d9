"""Running a trained model: photos, dataset splits and deployment files.

* :mod:`fer_lab.inference.predictor`: :class:`Predictor` (image -> faces -> the crops the model was
  trained on -> probabilities, optionally CAMs; PyTorch or ONNX Runtime), shared by ``fer-lab
  predict``, the app and the notebooks.  Its public names are re-exported here, so
  ``from fer_lab.inference import Predictor`` is the usual import.
* :mod:`fer_lab.inference.evaluate`: metrics of a checkpoint on a dataset split (``fer-lab eval``)
  and the post-hoc prior correction chosen on validation (``fer-lab prior``).
* :mod:`fer_lab.inference.export`: ONNX export with the preprocessing metadata inside, parity check,
  int8, the ONNX Runtime runner and the cached runtime export the ONNX backend uses.

The batched forward pass all of them (and training and analysis) share is :mod:`fer_lab.engine`.
"""
from .predictor import (BACKENDS, DEFAULT_WEIGHTS, WHOLE_IMAGE_RECIPES, FacePrediction, ImageResult, Predictor,
                        predict_files)

__all__ = ["Predictor", "FacePrediction", "ImageResult", "DEFAULT_WEIGHTS", "WHOLE_IMAGE_RECIPES", "BACKENDS",
           "predict_files"]
