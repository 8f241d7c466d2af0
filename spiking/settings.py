"""Checked settings: frozen, keyword-only configuration dataclasses whose fields say which values
they accept, checked whenever an instance is made (`dataclasses.replace` included), so a bad
value fails where the model is built, in one line, not as a traceback deep in training.

    @settings
    class HiddenSpec:
        kwta: int = setting(5, low=1, high=MAX_COUNT)
        threshold: float = setting(15.0, low=0)
        mode: str = setting("usable", choices=("faithful", "usable"))

Every number must be finite, also inside tuples (which hold numbers, or tuples of them);
`low` / `high` bound numbers (inclusive; for a tuple, each number in it), `above` is an
exclusive lower bound, `choices` lists the accepted values; simple annotations (`int`,
`float | None`, `str`...) are checked too. A class may add a `check(self)` method for
constraints between fields (it raises ValueError). Errors name the field
(`kwta must be >= 1, got 0`); `models._registry.resolve_overrides` prefixes the group
(`conv1.kwta ...`).
"""
from __future__ import annotations

import dataclasses
import math
import numbers

MAX_COUNT = 4096            # maps, neurons, winners, kernel sizes, pads: far above any sensible net
MAX_TIME_STEPS = 254        # spike times are uint8 and T itself means "never"


def setting(default=dataclasses.MISSING, *, low=None, high=None, above=None, choices=None,
            absent=dataclasses.MISSING):
    """A dataclass field with its accepted values (see the module docstring); without a
    default, a required one. `absent`: for a setting added after runs were recorded whose
    default differs from what those runs computed, the value that reproduces them (a record
    without the field is read as holding it; `models.recorded_settings`)."""
    metadata = {"low": low, "high": high, "above": above, "choices": choices}
    if absent is not dataclasses.MISSING:
        metadata["absent"] = absent
    return dataclasses.field(default=default, metadata=metadata)


def settings(cls):
    """`@dataclass(frozen=True, kw_only=True)` whose instances check their fields when made."""
    def __post_init__(self):
        check_settings(self)
    cls.__post_init__ = __post_init__
    return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


def check_settings(config) -> None:
    """Raise ValueError naming the first field of a settings dataclass with a value it does not
    accept, then run the class's own `check()` (constraints between fields)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        check_type(field.name, value, field.type)
        _check(field.name, value, field.metadata)
    own = getattr(config, "check", None)
    if own is not None:
        own()


_TYPES = {"int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,), "str": (str,),
          "tuple": (tuple,), "None": (type(None),)}


def check_type(name: str, value, annotation) -> None:
    """Raise ValueError unless the value matches a simple annotation ("int", "float | None"...;
    others are not checked). An int is a float; a bool is not an int."""
    names = [part.strip() for part in str(annotation).split("|")]
    if not all(part in _TYPES for part in names):
        return
    allowed = tuple(t for part in names for t in _TYPES[part])
    if isinstance(value, bool) and "bool" not in names or not isinstance(value, allowed):
        raise ValueError(f"{name} takes {' or '.join(names)}, got {value!r}")


def _check(name: str, value, rules) -> None:
    choices = rules.get("choices")
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return
    if isinstance(value, bool) or value is None or dataclasses.is_dataclass(value):
        return
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value}")
        low, high, above = rules.get("low"), rules.get("high"), rules.get("above")
        if above is not None and not value > above:
            raise ValueError(f"{name} must be > {above}, got {value}")
        if low is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{name} must be <= {high}, got {value}")
    elif isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (numbers.Real, tuple, list)):
                raise ValueError(f"{name} holds numbers, got {item!r} in {value!r}")
            _check(name, item, rules)


def require(condition: bool, message: str) -> None:
    """For `check()` methods: raise ValueError(message) unless `condition`."""
    if not condition:
        raise ValueError(message)
