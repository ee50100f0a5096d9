"""fer_lab: a workbench for lightweight facial expression recognition around EfficientFace."""
__version__ = "0.1.0"

from ._compat import install as _install_moved_module_aliases  # noqa: E402
from .labels import CANONICAL, LabelMap, LabelMapMismatch, canonical  # noqa: E402
from .models import create_model, list_models, register_model  # noqa: E402

_install_moved_module_aliases()  # the moved modules answer to their old paths too, with a FutureWarning (_compat.py)


def load_model(path_or_name, **kwargs):
    """Load fer_lab's own, the authors' or a shipped checkpoint (see :mod:`fer_lab.checkpoint`)."""
    from .checkpoint import load_model as _load

    return _load(path_or_name, **kwargs)


__all__ = ["__version__", "CANONICAL", "LabelMap", "LabelMapMismatch", "canonical", "create_model",
           "list_models", "register_model", "load_model"]
