"""What a run is built from: its model (from a model name and settings, or restored from a
checkpoint) and its data (raw images -> front-end spike times, through the on-disk encoding
cache -> the train / validation / test splits the trainer reads).
"""
from __future__ import annotations

import time

import numpy as np

import data
import models
from checkpoints import check_compatible
from network_trainer import Split
from encoding_cache import EncodingCache
from models.layers import LayoutError
from s1c1 import encode
from utils import UserError, derived_seed, resolve_device


def prepare_splits(config, runtime, dataset, frontend, log, test_only: bool = False) -> tuple[dict, dict]:
    """Encode (through the on-disk cache) and split: train (after --ratio, minus validation,
    plus augmentation), val, test (`config`, `runtime`: a `run_config.RunConfig` and `Runtime`).
    Returns the splits and a summary for config.json.
    `test_only` (evaluation): the train and validation splits keep their labels and sizes but
    not their spike times, which are then neither encoded nor read."""
    cache = EncodingCache(runtime.cache_dir)
    encoded = {}
    for split in ("test",) if test_only else ("train", "test"):
        images = dataset.train_images if split == "train" else dataset.test_images
        source = dataset.source_id(split)
        with cache.lock(f"{dataset.slug}-{split}", frontend):
            array = cache.load(f"{dataset.slug}-{split}", frontend, source, len(images), warn=log)
            if array is None:
                began = time.time()
                array = _encode(images, frontend, runtime, f"encode {dataset.name} {split}")
                array = _save_cache(cache, f"{dataset.slug}-{split}", frontend, source, array, log)
                log(f"encoded {dataset.name} {split}: {len(images)} images in {time.time() - began:.1f}s")
        encoded[split] = array
    labels = dataset.train_labels
    pool = np.arange(len(labels))
    if config.ratio < 1:
        pool = data.stratified_split(labels, config.ratio, derived_seed(config.seed, "ratio"))[0]
    val_size = config.val_size if config.val_size < 1 else int(config.val_size)
    val_local, train_local = data.stratified_split(labels[pool], val_size, derived_seed(config.seed, "val"))
    train_idx, val_idx = pool[train_local], pool[val_local]
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise UserError(f"--ratio {config.ratio} and --val-size {config.val_size} leave {len(train_idx)} "
                        f"training and {len(val_idx)} validation images; both must be >= 1")
    augment = bool(config.augment) and not test_only
    if augment and (dataset.model_settings or dataset.train_images.ndim != 3):
        raise UserError(f"--augment rotates and shifts grey-level images; {dataset.name}'s inputs "
                        f"{tuple(dataset.train_images.shape[1:])} are not such images")
    if test_only:
        splits = {"train": Split(None, labels[train_idx]), "val": Split(None, labels[val_idx])}
    else:
        train_times = np.asarray(encoded["train"][train_idx])
        train_labels = labels[train_idx]
        if augment:
            moved = data.augment_images(dataset.train_images[train_idx], derived_seed(config.seed, "augment"))
            train_times = np.concatenate([train_times, _encode(moved, frontend, runtime, "encode augmented")])
            train_labels = np.concatenate([train_labels, train_labels])
        splits = {"train": Split(train_times, train_labels),
                  "val": Split(np.asarray(encoded["train"][val_idx]), labels[val_idx])}
    splits["test"] = Split(encoded["test"], dataset.test_labels)
    summary = {"name": dataset.name, "classes": dataset.classes,
               "sizes": {k: len(v) for k, v in splits.items()}, "augmented": augment}
    return splits, summary


def _encode(images, frontend, runtime, description):
    from tqdm import tqdm
    with tqdm(total=len(images), desc=description, unit="img", unit_scale=True, leave=False,
              disable=None if runtime.progress is None else not runtime.progress) as bar:
        try:
            return encode(images, frontend, batch_size=500, device=resolve_device(runtime.device),
                          progress=bar.update)
        except ValueError as error:
            raise UserError(f"cannot encode the images: {error}") from error


def _save_cache(cache, name, frontend, source, array, log):
    try:
        return cache.save(name, frontend, source, array)
    except OSError as error:
        log(f"warning: cannot write the encoding cache in {cache.root} ({error.strerror}); "
            f"continuing without it")
        return array


# ---------------------------------------------------------------- the model

def readout_choice(kind, C, values=None):
    """`--readout` / `--readout-c` / `--readout-values` as a `models.ReadoutChoice`, or None when
    none is given."""
    return None if kind is None and C is None and values is None else models.ReadoutChoice(kind, C, values)


def build_model(name: str, num_classes: int, settings: dict, choice, dataset=None, keep_none: bool = False):
    """`models.create_model` with a bad setting or readout reported in one line (`keep_none`:
    the settings are a record's, whose None values are values)."""
    try:
        return models.create_model(name, num_classes=num_classes, readout_choice=choice, settings=settings,
                                   keep_none=keep_none)
    except (ValueError, TypeError) as error:
        if dataset is not None and dataset.model_settings and not _takes(name, dataset.model_settings):
            needs = ", ".join(f"{k}={v}" for k, v in dataset.model_settings.items())
            raise UserError(f"{name}: {dataset.name} needs a model that takes {needs} ({error})") from None
        raise UserError(f"{name}: {error}") from None


def _takes(name: str, settings: dict) -> bool:
    try:
        models.create_model(name, settings=settings)
        return True
    except (ValueError, TypeError):
        return False


def check_input_size(model, dataset) -> None:
    """Refuse images too small for the model's layers before any work (one line, no traceback)."""
    size = "x".join(str(v) for v in dataset.train_images.shape[1:])
    try:
        shape = model.frontend.output_shape(tuple(dataset.train_images.shape[1:]))
        shapes = model.node_shapes(shape)
    except LayoutError as error:
        raise UserError(str(error)) from None
    except ValueError as error:
        raise UserError(f"{dataset.name} inputs ({size}) do not fit this model: {error}") from None
    if any(min(s) < 1 for s in shapes):
        sizes = " -> ".join("x".join(str(v) for v in s) for s in shapes)
        raise UserError(f"{dataset.name} inputs ({size}) are too small for this model: node shapes {sizes}")


def build_recorded(name: str, num_classes: int, record: dict, overrides: dict, choice, dataset=None,
                   more: dict | None = None):
    """`build_model` of a recorded model (a checkpoint, or a run's config.json) as it was
    trained, so that a model default changed since then does not change it: from its recorded
    hyperparameters (whose None values are values), or from its overrides when the record
    predates them; `more`: settings on top (bench/layer_study.py's --set)."""
    if not record.get("hyperparameters"):
        return build_model(name, num_classes, {**overrides, **(more or {})}, choice, dataset)
    settings = {**models.recorded_settings(name, record["hyperparameters"], num_classes), **(more or {})}
    return build_model(name, num_classes, settings, choice, dataset, keep_none=True)


def restore_model(payload: dict):
    """The trained model a checkpoint holds (its model, settings, readout and weights)."""
    name = payload.get("model")
    if name not in models.list_models():
        raise UserError(f"checkpoint names an unknown model {name!r}")
    overrides = dict(payload.get("overrides") or {})
    choice = payload.get("readout_choice")
    if "readout_choice" not in payload:
        # checkpoints written before readout choices were kept apart from the settings
        choice = {"kind": overrides.pop("readout", None), "C": overrides.pop("readout_C", None)}
    choice = readout_choice(**choice) if choice else None
    if not isinstance(payload.get("num_classes"), int) or payload["num_classes"] < 1:
        raise UserError(f"checkpoint has no valid number of classes ({payload.get('num_classes')!r})")
    model = build_recorded(name, payload["num_classes"], payload, overrides, choice)
    check_compatible(payload, model, name)
    model.load_state_dict(payload["state_dict"])
    return model
