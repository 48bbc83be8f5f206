"""The model registry: `create_model(name, num_classes=...)` for every supported backbone."""

from trainer.models import efficientnet_lite as _efficientnet_lite  # noqa: F401
from trainer.models import keras_apps as _keras_apps  # noqa: F401  (registers models)
from trainer.models import tiny as _tiny  # noqa: F401  (registers models)
from trainer.models.registry import (
    BuiltModel,
    ModelInfo,
    check_weights,
    create_model,
    list_models,
    model_info,
)

__all__ = [
    "BuiltModel",
    "ModelInfo",
    "check_weights",
    "create_model",
    "list_models",
    "model_info",
]
