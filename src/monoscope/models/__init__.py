"""Subject models: the registry, the demo CNN and its training."""

from monoscope.models.registry import (
    MODEL_FAMILIES,
    MissingWeightsError,
    ModelConfig,
    SubjectModel,
    get_layer,
    layer_channels,
    load_model,
    read_state_dict,
)

__all__ = [
    "MODEL_FAMILIES",
    "MissingWeightsError",
    "ModelConfig",
    "SubjectModel",
    "get_layer",
    "layer_channels",
    "load_model",
    "read_state_dict",
]
