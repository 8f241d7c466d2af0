"""The model zoo. Importing this package registers every model."""
from ._registry import create_model, list_models, model_description, register_model
from . import (deep2024, deeper2024, deepr2024, inception2024, kheradpisheh2018,  # noqa: F401
               majority2024, mozafari2018, resnet2024)

__all__ = ["create_model", "list_models", "model_description", "register_model"]
