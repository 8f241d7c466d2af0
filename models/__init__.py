"""The model zoo. Importing this package registers every model."""
from ._registry import create_model, list_models, model_description, register_model
from . import mozafari2018  # noqa: F401  (registers)

__all__ = ["create_model", "list_models", "model_description", "register_model"]
