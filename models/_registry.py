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


def create_model(name: str, num_classes: int = 10, **overrides):
    """Build a registered model; `None` overrides are dropped so model defaults stay in force."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return _MODELS[name](num_classes=num_classes, **overrides)


def model_description(name: str) -> str:
    doc = (_MODELS[name].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
