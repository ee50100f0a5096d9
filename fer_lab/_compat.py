"""Old import paths of modules that moved into packages (issue #19), kept working for a while.

``import fer_lab.cam``, ``from fer_lab import viz`` or ``from fer_lab.synthfer import make_synthfer``
still work: a finder on ``sys.meta_path`` answers the old name with the module at its new place (the
same module object, so ``fer_lab.cam.CamExplainer is fer_lab.analysis.cam.CamExplainer`` and
monkeypatching either name patches both) and warns once per old name with a ``FutureWarning``.

FutureWarning rather than DeprecationWarning: the old paths live in notebooks and scripts, whose
authors are the people to tell; Python shows DeprecationWarning by default only for code in
``__main__``, and this warning is raised from inside the import system, so a DeprecationWarning would
be hidden from exactly those readers.  ``fer_lab.inference`` needs no alias: it is the package that
holds the Predictor (``fer_lab.inference.Predictor`` is re-exported there).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: old module name -> new module name
MOVED = {
    "fer_lab.cam": "fer_lab.analysis.cam",
    "fer_lab.distributions": "fer_lab.analysis.distributions",
    "fer_lab.embeddings": "fer_lab.analysis.embeddings",
    "fer_lab.robustness": "fer_lab.analysis.robustness",
    "fer_lab.calibration": "fer_lab.analysis.calibration",
    "fer_lab.viz": "fer_lab.analysis.viz",
    "fer_lab.evaluate": "fer_lab.inference.evaluate",
    "fer_lab.export": "fer_lab.inference.export",
    "fer_lab.synthfer": "fer_lab.data.synthfer",
    "fer_lab.augment": "fer_lab.training.augment",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.new}; import it from there (the old name will be removed)",
                      FutureWarning, stacklevel=2)  # the import statement: warnings skips importlib's frames
        return importlib.import_module(self.new)  # the import system binds the old name to this module

    def exec_module(self, module):
        pass  # already executed under its new name


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): it answers only the old names, and an old name
    must mean the new module even where a stale copy of the old file is still findable (e.g. through
    an editable install of an older checkout)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
