"""Analysis of trained models: what they look at, how they fail, what their outputs mean.

* :mod:`~fer_lab.analysis.cam`: class activation maps and their faithfulness (deletion/insertion).
* :mod:`~fer_lab.analysis.distributions`: per-image label distributions, co-occurrence, the
  noisy-label audit.
* :mod:`~fer_lab.analysis.embeddings`: pre-logit features, UMAP/PCA maps cached on disk, the
  interactive scatter.
* :mod:`~fer_lab.analysis.robustness`: occlusion and pose perturbations, accuracy curves, subsets.
* :mod:`~fer_lab.analysis.calibration`: reliability diagrams, ECE, Brier score, SLL vs LDL.
* :mod:`~fer_lab.analysis.viz`: the plotly figures the others (and the app) draw.

Models run through :func:`fer_lab.engine.run_model`; nothing here imports training or a surface
(tests/test_layers.py).  The modules are imported one by one (pandas and plotly are slow to import).
"""
