"""Model registry: `@register_model` factories, `create_model`, `list_models` (timm-style)."""
from __future__ import annotations

from typing import Callable

_MODELS: dict[str, Callable] = {}


def register_model(factory: Callable) -> Callable:
    """Register a factory under its function name; it takes `num_classes` and keyword overrides."""
    if factory.__name__ in _MODELS:
        raise ValueError(f"model {factory.__name__!r} is registered twice")
    _MODELS[factory.__name__] = factory
    return factory


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, readout: str | None = None,
                 readout_C: float | None = None, **overrides):
    """Build a registered model; `None` overrides are dropped so model defaults stay in force.

    `readout` ("rstdp", "svm" or "logistic") sets the decision: the model's R-STDP layer or a
    linear readout of the same features (`readout_C`: its C, else chosen on the validation
    split). Models whose own decision is a readout (kheradpisheh2018) keep it by default."""
    from .readout import attach_readout
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model = _MODELS[name](num_classes=num_classes, **overrides)
    if readout is not None or readout_C is not None:
        current = (model.readout or {}).get("readout", "rstdp")
        model = attach_readout(model, readout or current, readout_C)
    return model


def model_description(name: str) -> str:
    doc = (_MODELS[name].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
