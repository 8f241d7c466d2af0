"""Checkpoints: magic + sha256 + `torch.save` bytes of tensors and plain data, written atomically
and loaded as data only (`weights_only`), so a damaged or foreign file is a one-line error and no
pickled code ever runs."""
from __future__ import annotations

import hashlib
import io
import json

import torch

import utils            # utils.atomic_write_bytes at call time (fault tests replace it)
from utils import UserError

CHECKPOINT_MAGIC = b"SNNCKPT1"          # 8 bytes, then the payload's sha256, then the payload
CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str, payload: dict) -> None:
    """Checkpoint = magic + sha256 + `torch.save` bytes of tensors and plain data, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    utils.atomic_write_bytes(path, CHECKPOINT_MAGIC + hashlib.sha256(data).digest() + data)


def load_checkpoint(path: str) -> dict:
    """Verify and load a checkpoint as data (`weights_only`: no pickled code is ever executed)."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as error:
        raise UserError(f"cannot read checkpoint {path}: {error.strerror or error}") from error
    if len(blob) < 40 or blob[:8] != CHECKPOINT_MAGIC:
        raise UserError(f"{path} is not a checkpoint of this tool (bad header)")
    if hashlib.sha256(blob[40:]).digest() != blob[8:40]:
        raise UserError(f"checkpoint {path} is corrupted or truncated (checksum mismatch)")
    try:
        payload = torch.load(io.BytesIO(blob[40:]), map_location="cpu", weights_only=True)
    except Exception as error:   # noqa: BLE001 - any unpickling failure means "not our data"
        raise UserError(f"checkpoint {path} cannot be loaded as data: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} has an unsupported format "
                        f"({payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    return payload


def check_compatible(payload: dict, model, model_name: str) -> None:
    """Refuse a checkpoint made for another model, other hyperparameters or another front end."""
    check_same_model(payload, model, model_name)
    ours = json.loads(json.dumps(model.hyperparameters()))
    theirs = _with_new_settings(payload.get("hyperparameters") or {}, ours)
    if theirs != ours:
        keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise UserError(f"checkpoint was made with other hyperparameters ({', '.join(keys)})")
    state = model.state_dict()
    theirs = payload.get("state_dict", {})
    # an empty tensor is a lazily sized buffer (a linear readout before it is fitted)
    if set(theirs) != set(state) or any(theirs[k].shape != state[k].shape and state[k].numel()
                                        for k in state):
        raise UserError("checkpoint weights do not match the model's layers")


def check_same_model(payload: dict, model, model_name: str | None, what: str = "checkpoint") -> None:
    """Refuse a checkpoint made for another model (unless `model_name` is None), number of
    classes or front end; `what` names it in the one-line error."""
    if model_name is not None and payload.get("model") != model_name:
        raise UserError(f"{what} is for model {payload.get('model')!r}, not {model_name!r}")
    if payload.get("num_classes") != model.num_classes:
        raise UserError(f"{what} has {payload.get('num_classes')} classes, the data has {model.num_classes}")
    if payload.get("frontend_key") != model.frontend.key():
        raise UserError(f"{what} was made with other front-end parameters")


def _with_new_settings(theirs: dict, ours: dict) -> dict:
    """A checkpoint's hyperparameters with the settings added since it was written taken from
    `ours` (a model rebuilt from the checkpoint's record holds them at their defaults)."""
    merged = dict(theirs)
    for key, value in ours.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _with_new_settings(merged[key], value)
    return merged


def taken_modules(stages, epochs) -> list:
    """The modules `--init-from` copies: those whose first stage (in training order) that
    learns them is given 0 epochs. deepr2024 with `--epochs 0 0 0 100 0` takes conv1-conv3,
    while its decision layer, which the last stage also learns, trains in the decision stage
    from this run's seed; with `--epochs 0 0 0 0 3` both conv3 and the decision are taken."""
    first = {}
    for stage, count in zip(stages, epochs):
        for module in stage.trained_modules():
            first.setdefault(id(module), (module, stage.epochs(count) == 0))
    return [module for module, taken in first.values() if taken]


def named_layer_paths(model) -> dict[str, str]:
    """Module path of each named layer of `model` (`{"conv3": "blocks.2.main", ...}`): the
    layers whose `name` is a string, as the stages and logs call them."""
    return {module.name: path for path, module in model.named_modules()
            if path and isinstance(getattr(module, "name", None), str)}


def take_modules(payload: dict, model, modules, source=None) -> list[str]:
    """Copy into `model` the weights and buffers of `modules` (see `taken_modules`) from a
    checkpoint with the same front end and classes (`--init-from`); its other settings
    may differ (a threshold, a pooling, the decision's rates), and so may its model where the
    copied layers have the same names (deep2024's conv1-conv3 into deepr2024), but every
    copied tensor must keep its shape. A buffer the checkpoint lacks (a threshold calibration it
    did not make) keeps the model's own value. Returns the copied state keys.

    `source` (the checkpoint's model, rebuilt from its record; optional): a named layer that
    sits at another module path there is taken from that path (deep2024's conv3, a plain
    block, into resnet2024's conv3 inside its residual block)."""
    check_same_model(payload, model, None, "--init-from: the checkpoint")
    names = {id(module): name for name, module in model.named_modules()}
    prefixes = [names[id(module)] for module in modules]
    # our module path -> the checkpoint's, where a taken layer of the same name sits elsewhere
    elsewhere = named_layer_paths(source) if source is not None else {}
    moved = {path: elsewhere[name] for name, path in named_layer_paths(model).items()
             if name in elsewhere and path in prefixes}
    parameters = {name for name, _ in model.named_parameters()}
    ours, theirs = model.state_dict(), payload.get("state_dict", {})
    taken = {}
    for key in ours:
        matching = [p for p in prefixes if p == "" or key.startswith(p + ".")]
        if not matching:
            continue
        prefix = max(matching, key=len)
        their_key = moved[prefix] + key[len(prefix):] if prefix in moved else key
        if their_key not in theirs:
            if key in parameters:
                raise UserError(f"--init-from: the checkpoint has no {their_key}")
            continue
        if theirs[their_key].shape != ours[key].shape:
            raise UserError(f"--init-from: {key} is {tuple(theirs[their_key].shape)} in the checkpoint and "
                            f"{tuple(ours[key].shape)} here (a setting changed the layer's shape)")
        taken[key] = theirs[their_key]
    model.load_state_dict(taken, strict=False)
    return sorted(taken)
