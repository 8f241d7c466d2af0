"""Event-camera recordings (tonic): `--dataset nmnist` or `tonic:CLASS`.

Each recording becomes first-event maps (`first_event_maps`: uint8 [2, H, W], OFF and ON), which
the events front end (`frontends.EventBins`) bins into time steps; the dataset asks the model
for that front end and two input channels (`EVENT_SETTINGS`). `data.load_dataset` is the entry
point.
"""
from __future__ import annotations

import os

import numpy as np

from data import Dataset
from utils import UserError

EVENT_SETTINGS = {"frontend.kind": "events", "conv1.in_channels": 2}


def first_event_maps(events: np.ndarray, sensor_size: tuple, duration: float | None = None) -> np.ndarray:
    """One recording's events (a structured array with fields x, y, t, p, as tonic gives them)
    -> uint8 [2, H, W]: for each pixel and polarity (channel 0: OFF, p <= 0; channel 1: ON) the
    time of its first event as a level floor(254.999 * (t - t0) / duration) in 0..254, where t0
    is the recording's first event and `duration` (default: its last event - t0) the span mapped
    onto the levels; events after t0 + duration are dropped; 255: no event. `sensor_size` is
    tonic's (width, height, polarities)."""
    width, height = int(sensor_size[0]), int(sensor_size[1])
    maps = np.full((2, height, width), 255, dtype=np.uint8)
    if len(events) == 0:
        return maps
    t = events["t"].astype(np.float64)
    t0 = t.min()
    span = (t.max() - t0) if duration is None else float(duration)
    keep = t - t0 <= span
    levels = np.zeros(len(t), dtype=np.int64) if span <= 0 else \
        np.floor(254.999 * (t - t0) / span).astype(np.int64)
    channel = (events["p"].astype(np.int64) > 0).astype(np.int64)
    x, y = events["x"].astype(np.int64), events["y"].astype(np.int64)
    if ((x < 0) | (x >= width) | (y < 0) | (y >= height)).any():
        raise ValueError(f"events outside the {width}x{height} sensor")
    flat = np.full(2 * height * width, 255, dtype=np.int64)
    np.minimum.at(flat, ((channel * height + y) * width + x)[keep], levels[keep])
    return flat.reshape(2, height, width).astype(np.uint8)


def events_dataset(name: str, train, test, classes=None) -> Dataset:
    """A Dataset of first-event maps from two tonic-style datasets (indexable, `len`, items
    (events, label), a `sensor_size`)."""
    splits = []
    for part in (train, test):
        sensor = getattr(part, "sensor_size", None)
        if sensor is None:
            raise UserError(f"dataset {name}: its recordings name no sensor_size")
        maps, labels = [], []
        for index in range(len(part)):
            try:
                events, label = part[index]
                maps.append(first_event_maps(events, sensor))
                labels.append(int(label))
            except (ValueError, KeyError, TypeError, IndexError) as error:
                raise UserError(f"dataset {name}: recording {index} is not (events with fields x, y, t, p, "
                                f"label) on a {sensor} sensor: {type(error).__name__}: {error}") from None
        splits += [np.stack(maps) if maps else np.zeros((0, 2, 1, 1), np.uint8), np.array(labels, dtype=np.int64)]
    labels = np.concatenate([splits[1], splits[3]])
    classes = [str(c) for c in (classes or range(int(labels.max()) + 1 if len(labels) else 0))]
    return Dataset(name, *splits, classes=classes, model_settings=dict(EVENT_SETTINGS))


def load_tonic(name: str, root: str, download: bool) -> Dataset:
    """`tonic:CLASS` (a dataset class of `tonic.datasets`, e.g. NMNIST) read through tonic, which
    downloads it into `root` when it is missing and the network allows."""
    try:
        import tonic
    except ImportError:
        raise UserError("event datasets need tonic: pip install -r requirements-events.txt") from None
    cls = getattr(tonic.datasets, name.split(":", 1)[1], None)
    if cls is None:
        raise UserError(f"tonic has no dataset {name.split(':', 1)[1]!r} (tonic.datasets lists them)")
    if not download and not os.path.isdir(os.path.join(root, cls.__name__)):
        raise UserError(f"{name}: {os.path.join(root, cls.__name__)} does not exist and --no-download is set; "
                        f"drop --no-download to let tonic fetch it, or copy it there")
    try:
        train, test = cls(save_to=root, train=True), cls(save_to=root, train=False)
    except TypeError as error:
        raise UserError(f"{name}: tonic's {cls.__name__} has no train/test split this loader can ask for "
                        f"({error}); it reads datasets constructed as CLASS(save_to=ROOT, train=True/False)") from None
    except Exception as error:
        raise UserError(f"{name}: tonic could not read or download it into {root} ({type(error).__name__}: "
                        f"{str(error)[:200]}); where the network allows, run python -c \"import tonic; "
                        f"tonic.datasets.{cls.__name__}(save_to='{root}')\" and copy {root} here") from None
    return events_dataset(name, train, test, getattr(cls, "classes", None))
