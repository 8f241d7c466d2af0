"""Model registry: `@register_model` factories, `create_model`, `list_models` (timm-style)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import numbers
from typing import Any, Callable

import torch

_MODELS: dict[str, Callable] = {}


def register_model(factory: Callable) -> Callable:
    """Register a factory under its function name; it takes `num_classes` and keyword overrides."""
    if factory.__name__ in _MODELS:
        raise ValueError(f"model {factory.__name__!r} is registered twice")
    _MODELS[factory.__name__] = factory
    return factory


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, *, readout_choice=None, settings: dict | None = None,
                 keep_none: bool = False, **more_settings):
    """Build a registered model; `None` settings are dropped so model defaults stay in force
    (`keep_none`: they set the field to None, as a recorded `recorded_settings` value does).

    `settings` (and keyword `more_settings`) set fields of the model's config dataclass; a dotted
    key reaches into a nested one (`{"conv1.threshold": 20}`, `{"frontend.time_steps": 30}`).
    Values are checked against the defaults' types (an int is accepted for a float, a list for a
    tuple) and against each field's accepted range (`spiking.settings`): a bad value raises
    ValueError or TypeError.

    `readout_choice` (`models.readout.ReadoutChoice`, the CLI's `--readout` / `--readout-c` /
    `--readout-values`) sets the decision when the model is built: the model's R-STDP layer
    ("rstdp") or a linear readout ("svm", "logistic") of the same features, with its C (None:
    chosen on the validation split) and the values it reads ("spiked" or "latency").
    Factories that take a `readout` argument (the conv family) build it; models whose config
    names its readout (lagacherie2024's `readout`, `readout_C`) take it as those settings; the
    others have no decision to replace."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    factory = _MODELS[name]
    settings = {k: v for k, v in {**(settings or {}), **more_settings}.items() if keep_none or v is not None}
    extra = {}
    if settings or readout_choice is not None:
        defaults = _default_config(factory, num_classes)
        names = {f.name for f in dataclasses.fields(defaults)}
        if readout_choice is not None and "readout" in names:
            if readout_choice.kind == "rstdp":
                raise ValueError("this model has no R-STDP decision layer; use --readout svm or logistic")
            if readout_choice.values is not None:
                raise ValueError("this model's readout reads its own features; readout values are for "
                                 "the conv models' spike maps")
            settings = {**settings, **({"readout": readout_choice.kind} if readout_choice.kind else {}),
                        **({"readout_C": readout_choice.C} if readout_choice.C is not None else {})}
        elif readout_choice is not None:
            if "readout" not in inspect.signature(factory).parameters:
                raise ValueError("this model has no decision stage to replace")
            extra = {"readout": readout_choice}
        settings = resolve_overrides(defaults, settings)
    model = factory(num_classes=num_classes, **extra, **settings)
    counts = model.config.default_epochs
    if not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise ValueError(f"default_epochs takes whole counts >= 0, one per stage, got {counts!r}")
    return model


def recorded_settings(name: str, hyperparameters: dict, num_classes: int = 10) -> dict[str, Any]:
    """The dotted settings that rebuild model `name` as a run recorded it (`hyperparameters`:
    its `hyperparameters()` after a JSON round trip), whatever today's defaults are: every
    config field the record holds, nested groups by their fields ({"conv1.threshold": 15, ...}).
    Fields added since the record was written keep their defaults; recorded keys that are not
    config fields (a family model's readout, chosen by its `ReadoutChoice`) are left out. A
    field added since, whose setting names an `absent` value (`spiking.settings.setting`), takes
    that value: what the recorded run computed before the field existed."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")

    def walk(config, record: dict, prefix: str) -> dict:
        found = {}
        for field in dataclasses.fields(config):
            if field.name not in record:
                if "absent" in field.metadata:
                    found[prefix + field.name] = field.metadata["absent"]
                continue
            current, value = getattr(config, field.name), record[field.name]
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                found.update(walk(current, value, prefix + field.name + "."))
            else:
                found[prefix + field.name] = value
        return found
    return walk(_default_config(_MODELS[name], num_classes), hyperparameters, "")


def setting_changes(name: str, hyperparameters: dict, num_classes: int = 10) -> dict[str, Any]:
    """The recorded settings (`recorded_settings`) that differ from model `name`'s defaults
    today, values as JSON holds them: what a run changed, or what a default has changed since.
    The schedule's defaults (`default_epochs`, ...) are left out: a run records what it ran."""
    defaults = json.loads(json.dumps(dataclasses.asdict(_default_config(_MODELS[name], num_classes))))
    ours = recorded_settings(name, defaults, num_classes)
    return {key: value for key, value in recorded_settings(name, hyperparameters, num_classes).items()
            if ours.get(key) != value and not key.startswith("default_")}


@functools.lru_cache(maxsize=None)
def _default_config(factory: Callable, num_classes: int):
    """A factory's default config (frozen), from a probe model built once and without
    consuming the caller's seeded RNG, so a seeded model's weights are the ones a run without
    settings would draw. Keyed by the factory itself: a replaced factory gets its own."""
    with torch.random.fork_rng(devices=[]):
        return factory(num_classes=num_classes).config


def resolve_overrides(config, overrides: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": v, "c": w} against a config dataclass -> top-level replacements {"a": config.a
    with b = v, "c": w}, each value coerced to the type of the default it replaces."""
    nested: dict[str, dict] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[head] = value
    fields = {f.name: f for f in dataclasses.fields(config)}
    result = {}
    for key in list(top) + [k for k in nested if k not in top]:
        if key not in fields:
            raise ValueError(f"unknown setting {key!r}; the settings are {', '.join(sorted(fields))}")
        current = getattr(config, key)
        if key in nested:
            if not dataclasses.is_dataclass(current):
                raise ValueError(f"setting {key!r} has no fields ({key}.{next(iter(nested[key]))})")
            base = top[key] if key in top else current
            try:
                result[key] = dataclasses.replace(base, **resolve_overrides(base, nested[key]))
            except ValueError as error:     # name the group: "conv1.kwta must be >= 1, got 0"
                named = str(error).split(" ")[0] in {f.name for f in dataclasses.fields(base)}
                raise ValueError(f"{key}.{error}" if named else f"{key}: {error}") from None
        else:
            value = top[key]
            if value is None and "none" in (fields[key].metadata.get("choices") or ()):
                value = "none"      # `--set merge=none` reads as None; this setting's choice is the word
            result[key] = _coerce(key, current, value)
    return result


def _coerce(key: str, current: Any, value: Any) -> Any:
    if current is None or value is None or dataclasses.is_dataclass(value):
        return value        # None only arrives from a record (`keep_none`); the checks judge it
    if dataclasses.is_dataclass(current):
        names = ", ".join(f"{key}.{f.name}" for f in dataclasses.fields(current))
        raise ValueError(f"setting {key!r} is a group; set one of its fields: {names}")
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(current, (int, float)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(current, int) and not float(value).is_integer():
                raise ValueError(f"setting {key!r} takes a whole number, got {value!r}")
            return type(current)(value)
    elif isinstance(current, tuple):
        if isinstance(value, (list, tuple)):
            return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    elif isinstance(current, str):
        if isinstance(value, str):
            return value
    else:
        return value
    raise ValueError(f"setting {key!r} takes a {type(current).__name__} like {current!r}, got {value!r}")


def model_description(name: str) -> str:
    doc = (_MODELS[name].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""
