"""Datasets (raw images and labels), stratified splits and label-preserving augmentation.

Image folders live in `image_folders`, event-camera recordings in `event_recordings`;
`load_dataset` reaches all of them by name.

Every image dataset is returned as uint8 arrays `[N, H, W]` (grey levels 0..255) with int64
labels; the front end turns them into spike times. `iris` is tabular (float features [N, 4]).
`digits` (scikit-learn's bundled 8x8 digits), `iris` and `synthetic` (procedural bars, for
tests) need no download.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from utils import UserError


@dataclass
class Dataset:
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list = field(default_factory=list)
    # settings the models need for these inputs (event data: the binning front end, 2 channels);
    # the user's --set overrides them
    model_settings: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def slug(self) -> str:
        """The name as a file-name part ("folder-NAME-HASH" for a folder dataset, "tonic-CLASS")."""
        if ":" not in self.name:
            return self.name
        kind, rest = self.name.split(":", 1)
        last = rest.split("#")[0].rstrip("/").rsplit("/", 1)[-1]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in last)[:40]
        if kind != "folder":
            return f"{kind}-{safe}"
        return f"folder-{safe}-{hashlib.sha256(self.name.encode()).hexdigest()[:8]}"

    def source_id(self, split: str) -> str:
        """A fingerprint of one split's raw data (validates the encoding cache)."""
        images, labels = ((self.train_images, self.train_labels) if split == "train"
                          else (self.test_images, self.test_labels))
        digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
        return f"{self.name}:{split}:{len(images)}:{digest.hexdigest()[:16]}"

    def check(self) -> "Dataset":
        """Reject data the pipeline cannot use, with a message saying what is wrong."""
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("test", self.test_images, self.test_labels)):
            if len(images) == 0:
                raise UserError(f"dataset {self.name}: the {split} split is empty")
            if len(images) != len(labels):
                raise UserError(f"dataset {self.name}: {split} has {len(images)} images but "
                                f"{len(labels)} labels")
            if images.ndim == 2:
                if images.shape[1] < 1:
                    raise UserError(f"dataset {self.name}: {split} has no features")
            elif images.ndim not in (3, 4) or min(images.shape[-2:]) < 1:
                raise UserError(f"dataset {self.name}: {split} images must be [N, H, W], [N, C, H, W] "
                                f"or tabular [N, F], got {images.shape}")
            if images.dtype != np.uint8 and not np.isfinite(images).all():
                raise UserError(f"dataset {self.name}: {split} images contain NaN or infinite pixels")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise UserError(f"dataset {self.name}: {split} labels must lie in [0, {self.num_classes}), "
                                f"got {labels.min()}..{labels.max()}")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise UserError(f"dataset {self.name}: train and test images differ in size "
                            f"({self.train_images.shape[1:]} vs {self.test_images.shape[1:]})")
        return self


# torchvision's folder layout of the IDX files (read directly: importing torchvision also imports
# its model zoo, about 1.7 s of every run's start-up)
IDX_FILES = {"mnist": ("MNIST", "train-{}-idx{}-ubyte", "t10k-{}-idx{}-ubyte"),
             "fashion-mnist": ("FashionMNIST", "train-{}-idx{}-ubyte", "t10k-{}-idx{}-ubyte"),
             "emnist": ("EMNIST", "emnist-digits-train-{}-idx{}-ubyte", "emnist-digits-test-{}-idx{}-ubyte")}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzipped): big-endian magic (0, 0, type 0x08 = uint8, rank), the
    rank's sizes as big-endian uint32, then the data."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    rank = raw[3]
    if len(raw) < 4 + 4 * rank:
        raise UserError(f"{path} is truncated: its header is incomplete")
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=rank, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: {data.size} bytes for shape {shape}")
    return data.reshape(shape)


def _idx_dataset(name: str, root: str) -> Dataset | None:
    """The dataset from its raw IDX files under `root` (torchvision's layout), or None when
    they are not there."""
    folder, train, test = IDX_FILES[name]
    arrays = []
    for pattern in (train, test):
        for kind, rank in (("images", 3), ("labels", 1)):
            base = os.path.join(root, folder, "raw", pattern.format(kind, rank))
            path = next((p for p in (base, base + ".gz") if os.path.exists(p)), None)
            if path is None:
                return None
            arrays.append(read_idx(path))
    train_images, train_labels, test_images, test_labels = arrays
    if name == "emnist":       # EMNIST images are stored transposed
        train_images, test_images = (np.ascontiguousarray(a.transpose(0, 2, 1)) for a in (train_images, test_images))
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(c) for c in range(10)]
    return Dataset(name, np.ascontiguousarray(train_images), train_labels.astype(np.int64),
                   np.ascontiguousarray(test_images), test_labels.astype(np.int64), classes=classes)


def _torchvision(name: str, root: str, download: bool, **kwargs) -> Dataset:
    found = _idx_dataset(name, root)
    if found is not None:
        return found
    import torchvision.datasets as tvd
    klass = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "emnist": tvd.EMNIST}[name]
    splits = {}
    for split in ("train", "test"):
        try:
            ds = klass(root=root, train=split == "train", download=False, **kwargs)
        except RuntimeError:
            if not download:
                raise UserError(f"{name} not found under {root} (torchvision layout) and "
                                f"--no-download was given") from None
            try:
                ds = klass(root=root, train=split == "train", download=True, **kwargs)
            except Exception as error:  # noqa: BLE001 - network and HTTP failures of many kinds
                raise UserError(f"{name} not found under {root} and the download failed "
                                f"({type(error).__name__}); point --data-root at a torchvision "
                                f"layout, e.g. --data-root ../shared/data") from None
        images = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        if name == "emnist":       # EMNIST images are stored transposed
            images = images.transpose(0, 2, 1)
        targets = ds.targets.numpy() if isinstance(ds.targets, torch.Tensor) else np.asarray(ds.targets)
        splits[split] = (np.ascontiguousarray(images, dtype=np.uint8), targets.astype(np.int64))
    classes = [str(c) for c in range(10)] if name != "fashion-mnist" else list(ds.classes)
    return Dataset(name, *splits["train"], *splits["test"], classes=classes)


def _digits() -> Dataset:
    """scikit-learn's 8x8 digits, upscaled (bilinear) to 20x20 and centred in 28x28 like MNIST.

    There is no official test split: a fixed stratified 20 % (seed 0, whatever --seed says)."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False)
    images = F.pad(images, (4, 4, 4, 4)).clamp(0, 1).squeeze(1)
    images = (images * 255).round().to(torch.uint8).numpy()
    labels = bunch.target.astype(np.int64)
    test, train = stratified_split(labels, 0.2, seed=0)
    return Dataset("digits", images[train], labels[train], images[test], labels[test],
                   classes=[str(c) for c in range(10)])


def _iris() -> Dataset:
    """scikit-learn's bundled Iris: 150 rows of 4 features (cm), 3 classes. A fixed stratified
    20 % test split (seed 0, 30 rows), as for `digits`."""
    from sklearn.datasets import load_iris
    bunch = load_iris()
    features = bunch.data.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    test, train = stratified_split(labels, 0.2, seed=0)
    return Dataset("iris", features[train], labels[train], features[test], labels[test],
                   classes=[str(name) for name in bunch.target_names])


def _synthetic(per_class: int = 30, test_per_class: int = 10, classes: int = 10) -> Dataset:
    """Procedural 28x28 images: class c is a thick bar at angle c * 180/classes degrees through a
    jittered centre, with noise. Deterministic; for tests and dry runs."""
    rng = np.random.RandomState(0)
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float64)

    def draw(label):
        angle = np.pi * label / classes
        cy, cx = 14 + rng.uniform(-2, 2, size=2)
        distance = np.abs((rows - cy) * np.cos(angle) - (cols - cx) * np.sin(angle))
        along = np.abs((rows - cy) * np.sin(angle) + (cols - cx) * np.cos(angle))
        image = ((distance < 1.8) & (along < 9)).astype(np.float64)
        image = np.clip(image + rng.uniform(0, 0.15, size=image.shape), 0, 1)
        return (image * 255).astype(np.uint8)

    def make(count):
        labels = np.repeat(np.arange(classes), count)
        return np.stack([draw(label) for label in labels]), labels.astype(np.int64)

    train_images, train_labels = make(per_class)
    test_images, test_labels = make(test_per_class)
    return Dataset("synthetic", train_images, train_labels, test_images, test_labels,
                   classes=[str(c) for c in range(classes)])


def _nmnist(root: str, download: bool) -> Dataset:
    import event_recordings
    return event_recordings.load_tonic("tonic:NMNIST", root, download)


DATASETS = {
    "mnist": lambda root, download: _torchvision("mnist", root, download),
    "emnist": lambda root, download: _torchvision("emnist", root, download, split="digits"),
    "fashion-mnist": lambda root, download: _torchvision("fashion-mnist", root, download),
    "digits": lambda root, download: _digits(),
    "iris": lambda root, download: _iris(),
    "synthetic": lambda root, download: _synthetic(),
    "nmnist": lambda root, download: _nmnist(root, download),
}


def load_dataset(name: str, root: str = "data", download: bool = True, image_size: tuple | None = None,
                 split_seed: int = 0, holdout_group: int | None = None) -> Dataset:
    """A dataset by name: one of DATASETS, `tonic:CLASS` (`event_recordings`) or `folder:PATH`
    (`image_folders`; `image_size` (H, W) resizes its images, `split_seed` splits a folder
    without train/ and test/ parts, `holdout_group` K tests on every class's K-th group folder;
    a canonical folder name, as runs record it, carries them)."""
    import event_recordings     # imported here: both build on this module's Dataset
    import image_folders
    if name.startswith("folder:"):
        if "#" not in name:
            name = image_folders.folder_name(name[len("folder:"):], image_size, split_seed, holdout_group)
        return image_folders.load_folder(name).check()
    if image_size is not None or holdout_group is not None:
        raise UserError(f"{'--image-size' if image_size is not None else '--holdout-group'} applies to "
                        f"folder:PATH datasets only")
    if name.startswith("tonic:"):
        return event_recordings.load_tonic(name, root, download).check()
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name](root, download).check()


# ---------------------------------------------------------------- splits

def stratified_split(labels: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (chosen, rest), stratified by label and seeded.

    `size < 1` is a fraction of every class; `size >= 1` is a total count shared out in
    proportion to the class sizes. Both parts come back sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed % 2 ** 32)
    total = len(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        share = size if size < 1 else size * len(members) / total
        take = int(round(share * len(members))) if size < 1 else int(round(share))
        chosen.append(members[:min(take, len(members))])
    chosen = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(total), chosen)
    return chosen, rest


# ---------------------------------------------------------------- augmentation

def augment_images(images: np.ndarray, seed: int, max_degrees: float = 10.0,
                   max_shift: float = 2.0) -> np.ndarray:
    """One randomly rotated (+-max_degrees) and shifted (+-max_shift px) copy of each image.

    Label-preserving for digits: no flips. Bilinear resampling, zero fill. Seeded.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = torch.from_numpy(np.asarray(images)).float().unsqueeze(1) / 255.0
    count, _, height, width = batch.shape
    angle = (torch.rand(count, generator=generator) * 2 - 1) * np.deg2rad(max_degrees)
    shift = (torch.rand(count, 2, generator=generator) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 2] = shift[:, 0] * 2 / width
    theta[:, 1, 2] = shift[:, 1] * 2 / height
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (moved.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
