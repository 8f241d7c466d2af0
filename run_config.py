"""A run's configuration, in two frozen parts.

- `RunConfig`: what the run computes (model, data, settings, schedule, seed). It is written once
  into the run folder's `config.json` (key "run") and read back, unchanged, by `--resume`,
  `compare.py` and sweeps; `--eval-only` writes the one it evaluates with.
- `Runtime`: where and how it executes (device, threads, processes, folders, progress). A
  resumed run takes the saved runtime and may change any field marked resumable by giving its
  flag again (`RESUMABLE_FLAGS`, derived from the fields, not listed by hand).

Both are built from train.py's parsed flags (`from_namespace`); the field names are the flags'
`dest` names, so a new flag is added to the parser and to one of the two classes.
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field

from spiking.settings import check_type
from utils import UserError


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: str = "mozafari2018"
    dataset: str = "mnist"              # canonical once loaded (a folder's absolute path and split)
    image_size: str | None = None       # folder datasets: "HxW"
    holdout_group: int | None = None    # folder datasets: test on every class's K-th group folder
    epochs: tuple | None = None         # one count per stage; None: the model's own
    init_from: str | None = None        # a checkpoint whose layers the stages given 0 epochs take
    readout: str | None = None          # None: the model's own decision
    readout_c: float | None = None
    readout_values: str | None = None   # None: "spiked"
    also_readout: str | None = None     # also fit this linear readout beside an R-STDP decision
    settings: tuple = ()                # the --set items, as given ("conv1.threshold=20", ...)
    batch_size: int | None = None       # None: the model's own
    batch_update: str = "exact"
    ratio: float = 1.0
    augment: bool = False
    val_size: float = 0.1
    patience: int | None = None
    smoothing: int | None = None
    seed: int = 0
    dry_run: bool = False
    tensorboard: bool = False
    activation_maps: int = 0

    def overrides(self) -> dict:
        """The --set items as {key: value} (`parse_settings`)."""
        return parse_settings(self.settings)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    device: str = field(default="auto", metadata={"resumable": True})
    threads: int | None = field(default=None, metadata={"resumable": True})
    nproc: int = field(default=1, metadata={"resumable": True})
    progress: bool | None = field(default=None, metadata={"resumable": True})
    cache_dir: str = field(default="cache", metadata={"resumable": True})
    data_root: str = field(default="data", metadata={"resumable": True})
    no_download: bool = field(default=False, metadata={"resumable": True})
    probe_samples: int = field(default=5000, metadata={"resumable": True})
    out_dir: str = "runs"               # a new run's folder: fixed once the run exists
    run_name: str | None = None


RESUMABLE = frozenset(f.name for f in dataclasses.fields(Runtime) if f.metadata.get("resumable"))


def from_namespace(args) -> tuple[RunConfig, Runtime]:
    """train.py's parsed flags as (RunConfig, Runtime); lists become tuples."""
    def pick(cls):
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)
    return pick(RunConfig), pick(Runtime)


def resumable_flags(parser) -> dict:
    """{flag: field} for every option of `parser` whose destination is a resumable runtime field."""
    return {flag: action.dest for action in parser._actions if action.dest in RESUMABLE
            for flag in action.option_strings}


def to_json(config: RunConfig, runtime: Runtime) -> dict:
    return {"run": dataclasses.asdict(config), "runtime": dataclasses.asdict(runtime)}


def from_json(saved: dict) -> tuple[RunConfig, Runtime]:
    """The (RunConfig, Runtime) a config.json holds. Folders written before the split kept every
    flag under "args"; their fields are read from there. A value of the wrong type raises
    ValueError."""
    if "run" in saved:
        run, runtime = saved["run"], saved.get("runtime") or {}
    else:
        run = runtime = saved["args"]

    def build(cls, values):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kept = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
        for name, value in kept.items():    # a hand-edited file: one line, not a traceback later
            check_type(name, value, fields[name].type)
        return cls(**kept)
    return build(RunConfig, run), build(Runtime, runtime)


def parse_settings(items) -> dict:
    """["a=1", "b.c=(2, 3)", "d=own"] -> {"a": 1, "b.c": (2, 3), "d": "own"}: values are Python
    literals (true/false/none accepted in any case), else strings."""
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not all(part.isidentifier() for part in key.split(".")):
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set conv1.threshold=20")
        text = text.strip()
        words = {"true": True, "false": False, "none": None}
        if text.lower() in words:
            value = words[text.lower()]
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        settings[key] = value
    return settings
