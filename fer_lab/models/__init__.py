"""Model zoo: EfficientFace family, LDG ResNets and benchmark peers, created by name."""
from .registry import create_model, list_models, model_default_cfg, num_outputs, register_model
from . import efficientface, resnet, mobilenet, tiny, peers  # noqa: F401  (register builders)
from .efficientface import EfficientFace, LocalFeatureExtractor, ChannelSpatialModulator
from .resnet import LDGResNet
from .peers import MiniXception

__all__ = ["create_model", "list_models", "model_default_cfg", "num_outputs", "register_model", "EfficientFace",
           "LocalFeatureExtractor", "ChannelSpatialModulator", "LDGResNet", "MiniXception", "get_cam_target_layer"]


def get_cam_target_layer(model):
    """The module whose activations Grad-CAM should use: ``model.cam_target_layer`` (the
    registry's ``cam_layer`` for models from :func:`create_model`)."""
    name = getattr(model, "cam_target_layer", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} does not name a CAM target layer")
    return model.get_submodule(name)
