"""Front end (S1C1), encoding cache, datasets and splits."""
import json
import os

import numpy as np
import pytest
import torch

import data
from encoding_cache import EncodingCache
from s1c1 import FrontEnd, S1C1, encode
from spiking import encoding, functional as sf
from spiking.filters import DoGKernel, Filter


def test_s1c1_shape_and_golden_properties():
    images = data.load_dataset("synthetic").train_images[:8]
    times = encode(images, FrontEnd(), batch_size=3)
    assert times.shape == (8, 6, 28, 28) and times.dtype == np.uint8 and times.max() <= 15
    for sample in times:
        spikes_per_step = [(sample <= t).sum() for t in range(15)]
        assert spikes_per_step[0] > 0 and np.all(np.diff(spikes_per_step) == spikes_per_step[0])


def test_s1c1_equals_the_spec_pipeline_written_out():
    images = torch.from_numpy(data.load_dataset("synthetic").test_images[:4]).float().unsqueeze(1) / 255
    config = FrontEnd()
    bank = Filter([DoGKernel(*k) for k in config.kernels], padding=6, thresholds=50)
    wave = encoding.intensity_to_latency(sf.local_normalization(bank(images * 255), 8), 15, to_spike=True)
    expected = (15 - wave.sum(1)).to(torch.uint8)
    assert torch.equal(S1C1(config)(images), expected)


def test_frontend_key_changes_with_every_parameter():
    base = FrontEnd()
    assert base.key() == FrontEnd().key()
    for change in ({"threshold": 40.0}, {"time_steps": 20}, {"padding": 5}, {"normalization_radius": 4},
                   {"kernels": ((7, 1.0, 2.0), (7, 2.0, 1.0))}):
        assert FrontEnd(**change).key() != base.key()


def test_encoding_cache_round_trip_and_rebuilds_stale_or_damaged(tmp_path):
    cache = EncodingCache(str(tmp_path))
    array = np.random.RandomState(0).randint(0, 16, (5, 6, 4, 4)).astype(np.uint8)
    config = FrontEnd()
    saved = cache.save("toy-train", config, "src", array)
    assert np.array_equal(saved, array)
    assert np.array_equal(cache.load("toy-train", config, "src", 5), array)
    messages = []
    assert cache.load("toy-train", FrontEnd(threshold=1.0), "src", 5, warn=messages.append) is None
    assert cache.load("toy-train", config, "other-source", 5, warn=messages.append) is None
    data_path, _ = cache.paths("toy-train", config)
    with open(data_path, "r+b") as handle:       # flip one byte of the payload
        handle.seek(-1, 2)
        byte = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert cache.load("toy-train", config, "src", 5, warn=messages.append) is None
    # other parameters live under another key (no file); a manifest naming other ones is refused
    _, meta_path = cache.paths("toy-train", config)
    meta = json.load(open(meta_path))
    json.dump({**meta, "frontend": {**meta["frontend"], "threshold": 1.0}}, open(meta_path, "w"))
    assert cache.load("toy-train", config, "src", 5, warn=messages.append) is None
    assert len(messages) == 3 and "other source data" in messages[0]
    assert "checksum" in messages[1] and "other front-end parameters" in messages[2]
    os.truncate(data_path, 100)
    assert cache.load("toy-train", config, "src", 5, warn=messages.append) is None


def test_stratified_split_is_seeded_proportional_and_disjoint():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    chosen, rest = data.stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [10, 5, 3, 2]
    assert len(np.intersect1d(chosen, rest)) == 0 and len(chosen) + len(rest) == 200
    again, _ = data.stratified_split(labels, 0.1, seed=3)
    other, _ = data.stratified_split(labels, 0.1, seed=4)
    assert np.array_equal(chosen, again) and not np.array_equal(chosen, other)
    counted, _ = data.stratified_split(labels, 40, seed=0)
    assert np.bincount(labels[counted]).tolist() == [20, 10, 6, 4]


def test_augmentation_is_seeded_label_preserving_small_motion():
    images = data.load_dataset("synthetic").train_images[:20]
    moved = data.augment_images(images, seed=1)
    assert moved.shape == images.shape and moved.dtype == np.uint8
    assert np.array_equal(moved, data.augment_images(images, seed=1))
    assert not np.array_equal(moved, images)
    # small motions: the ink mass barely moves (no flips, no large rotations)
    rows = np.arange(28)
    centre = lambda im: (im.sum(1) @ rows / im.sum(), im.sum(0) @ rows / im.sum())
    for a, b in zip(images, moved):
        assert np.abs(np.subtract(centre(a.astype(float)), centre(b.astype(float)))).max() < 3.5


def test_digits_dataset_offline_and_checked():
    digits = data.load_dataset("digits")
    assert digits.train_images.shape[1:] == (28, 28) and digits.num_classes == 10
    assert len(digits.train_images) + len(digits.test_images) == 1797
    assert digits.train_images[:, :3].max() == 0                 # MNIST-like empty border


@pytest.mark.parametrize("mutate,message", [
    (lambda d: setattr(d, "train_labels", d.train_labels + 20), "labels must lie in"),
    (lambda d: setattr(d, "train_images", d.train_images[:0]), "empty"),
    (lambda d: setattr(d, "test_images", d.test_images[:, :20, :20]), "differ in size"),
    (lambda d: setattr(d, "train_images", np.full((300, 28, 28), np.nan)), "NaN"),
])
def test_dataset_check_rejects_bad_data(mutate, message):
    from utils import UserError
    dataset = data.load_dataset("synthetic")
    mutate(dataset)
    with pytest.raises(UserError, match=message):
        dataset.check()


def _write_idx(path, array, compress=False):
    import gzip
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as handle:
        handle.write(blob)


def test_idx_files_are_read_without_torchvision_in_its_layout(tmp_path):
    """MNIST-style data comes straight from the IDX files in torchvision's folder layout (plain
    or gzipped); EMNIST's are transposed; a missing or damaged file says so."""
    rng = np.random.RandomState(0)
    images = {split: rng.randint(0, 256, (n, 28, 28)).astype(np.uint8) for split, n in (("train", 12), ("t10k", 5))}
    labels = {split: rng.randint(0, 10, len(images[split])).astype(np.uint8) for split in images}
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in images:
        _write_idx(str(raw / f"{split}-images-idx3-ubyte"), images[split])
        _write_idx(str(raw / f"{split}-labels-idx1-ubyte.gz"), labels[split], compress=True)
    dataset = data.load_dataset("mnist", str(tmp_path), download=False)
    assert np.array_equal(dataset.train_images, images["train"]) and np.array_equal(dataset.test_images, images["t10k"])
    assert dataset.train_labels.dtype == np.int64 and np.array_equal(dataset.test_labels, labels["t10k"])
    emnist = tmp_path / "EMNIST" / "raw"
    emnist.mkdir(parents=True)
    for split, name in (("train", "train"), ("t10k", "test")):
        _write_idx(str(emnist / f"emnist-digits-{name}-images-idx3-ubyte"), images[split])
        _write_idx(str(emnist / f"emnist-digits-{name}-labels-idx1-ubyte"), labels[split])
    transposed = data.load_dataset("emnist", str(tmp_path), download=False)
    assert np.array_equal(transposed.train_images, images["train"].transpose(0, 2, 1))
    assert data._idx_dataset("fashion-mnist", str(tmp_path)) is None          # not there
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (12).to_bytes(4, "big"))
    with pytest.raises(data.UserError, match="truncated"):
        data.load_dataset("mnist", str(tmp_path), download=False)
