"""The model zoo. Importing this package registers every model."""
from ._registry import (create_model, list_models, model_description, recorded_settings, register_model,
                        setting_changes)
from .readout import ReadoutChoice
from . import (chevalier2019, deep2024, deeper2024, deepr2024, inception2024,  # noqa: F401
               itsadeepizza2023, kheradpisheh2018, lagacherie2024, majority2024, mozafari2018,
               mozafari2018_shallow, resnet2024, tavanaei2017)

__all__ = ["ReadoutChoice", "create_model", "list_models", "model_description", "recorded_settings",
           "register_model", "setting_changes"]
