"""`--dataset folder:PATH`: an image tree in torchvision's ImageFolder layout, read as grey levels.

Either `PATH/train/CLASS/*` and `PATH/test/CLASS/*`, or `PATH/CLASS/*` split stratified into
train and test by the run's seed. `folder_name` makes the canonical name runs record (absolute
path, resize, split seed), from which `--resume` and `--eval-only` rebuild the same splits;
`data.load_dataset` is the entry point.
"""
from __future__ import annotations

import os
import re

import numpy as np

from data import Dataset, stratified_split
from utils import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".webp")
FOLDER_TEST_FRACTION = 0.2


def folder_name(path: str, image_size: tuple | None = None, split_seed: int = 0,
                holdout_group: int | None = None) -> str:
    """The canonical name of a folder dataset: `folder:ABSPATH` plus the options that change
    its images or split (`#size=HxW`; `holdout=K` when group K of every class is the test part,
    else `split-seed=S` when the folder has no train/test parts), so that `--eval-only` and
    `--resume` rebuild exactly the same splits from it."""
    path = os.path.abspath(os.path.expanduser(path))
    options = []
    if image_size:
        options.append(f"size={image_size[0]}x{image_size[1]}")
    if holdout_group is not None:
        options.append(f"holdout={holdout_group}")
    elif not os.path.isdir(os.path.join(path, "train")):
        options.append(f"split-seed={split_seed}")
    return f"folder:{path}" + ("#" + ",".join(options) if options else "")


def parse_image_size(text: str) -> tuple[int, int]:
    """"64" -> (64, 64); "64x48" -> (64, 48) (height x width)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1 or max(size) > 4096:
        raise UserError(f"image size must be N or HxW with 1 <= N <= 4096, got {text!r}")
    return size


def load_folder(name: str) -> Dataset:
    """An image tree in torchvision's ImageFolder layout, read as grey levels: either
    `PATH/train/CLASS/*` and `PATH/test/CLASS/*`, or `PATH/CLASS/*` split stratified into
    train and a 20 % test part by the split seed, or (`holdout=K`) `PATH/CLASS/GROUP/*` with
    every class's K-th group (in natural order; an object, as in ETH-80) as the test part and
    the other groups as training. `name` is `folder_name`'s canonical form."""
    path, _, options = name[len("folder:"):].partition("#")
    settings = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
    size = parse_image_size(settings["size"]) if "size" in settings else None
    if not os.path.isdir(path):
        raise UserError(f"dataset folder {path} does not exist or is not a folder")
    if "holdout" in settings:
        classes, (train_files, train_labels), (test_files, test_labels) = \
            _holdout_split(path, int(settings["holdout"]))
    elif os.path.isdir(os.path.join(path, "train")):
        if not os.path.isdir(os.path.join(path, "test")):
            raise UserError(f"dataset folder {path} has train/ but no test/ folder")
        classes, (train_files, train_labels) = _class_files(os.path.join(path, "train"))
        test_classes, (test_files, test_labels) = _class_files(os.path.join(path, "test"))
        missing = sorted(set(classes) - set(test_classes))
        if missing:
            raise UserError(f"dataset folder {path}: class {missing[0]!r} has no images in test/ "
                            f"(every class needs test images)")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise UserError(f"dataset folder {path}: test/ has class {unknown[0]!r}, which train/ lacks")
        test_labels = np.array([classes.index(test_classes[c]) for c in test_labels], dtype=np.int64)
    else:
        classes, (files, labels) = _class_files(path)
        few = [classes[c] for c in np.unique(labels) if (labels == c).sum() < 2]
        if few:
            raise UserError(f"dataset folder {path}: class {few[0]!r} has one image; splitting off a "
                            f"test part needs >= 2 per class (or give train/ and test/ folders)")
        test, train = stratified_split(labels, FOLDER_TEST_FRACTION, int(settings.get("split-seed", 0)))
        untested = [classes[c] for c in range(len(classes)) if not (labels[test] == c).any()]
        if untested:
            raise UserError(f"dataset folder {path}: class {untested[0]!r} has too few images for a "
                            f"20 % test part (>= 3 needed); add images or give train/ and test/ folders")
        train_files, train_labels = [files[i] for i in train], labels[train]
        test_files, test_labels = [files[i] for i in test], labels[test]
    train_images = _read_images(train_files, size)
    test_images = _read_images(test_files, size)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise UserError(f"dataset folder {path}: train and test images differ in size "
                        f"({train_images.shape[1:]} vs {test_images.shape[1:]}); give --image-size HxW")
    return Dataset(name, train_images, train_labels, test_images, test_labels, classes=classes)


def natural_key(name: str) -> list:
    """Sort key ordering numbers by value: apple1, apple2, ..., apple10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _holdout_split(path: str, group: int):
    """(classes, (train files, labels), (test files, labels)) of `PATH/CLASS/GROUP/*`: group
    `group` of every class (its sub-folders in natural order: apple1, apple2, ..., apple10) is
    the test part."""
    if os.path.isdir(os.path.join(path, "train")):
        raise UserError(f"dataset folder {path}: --holdout-group needs PATH/CLASS/GROUP/*; this folder has "
                        f"train/ and test/ parts already")
    classes, (files, labels) = _class_files(path)
    train_files, train_labels, test_files, test_labels = [], [], [], []
    for index, name in enumerate(classes):
        folder = os.path.join(path, name)
        groups = sorted((entry for entry in os.listdir(folder)
                         if not entry.startswith(".") and os.path.isdir(os.path.join(folder, entry))),
                        key=natural_key)
        if group >= len(groups) or len(groups) < 2:
            raise UserError(f"dataset folder {path}: --holdout-group {group} needs {max(2, group + 1)} "
                            f"group sub-folders in every class; {name!r} has {len(groups)}")
        held = os.path.join(folder, groups[group]) + os.sep
        for file, label in zip(files, labels):
            if label != index:
                continue
            if file.startswith(held):
                test_files.append(file)
                test_labels.append(label)
            elif os.path.dirname(file) == folder:
                raise UserError(f"dataset folder {path}: {file} lies in its class folder, outside every "
                                f"group sub-folder (--holdout-group holds out whole groups)")
            else:
                train_files.append(file)
                train_labels.append(label)
        if not any(label == index for label in test_labels):
            raise UserError(f"dataset folder {path}: group {groups[group]!r} of class {name!r} has no images")
    return (classes, (train_files, np.array(train_labels, dtype=np.int64)),
            (test_files, np.array(test_labels, dtype=np.int64)))


def _class_files(root: str) -> tuple[list, tuple[list, np.ndarray]]:
    """(class names sorted, (image files, labels)) of `root/CLASS/...` (files in sub-folders
    count; other files and hidden entries are ignored)."""
    classes, files, labels = [], [], []
    for entry in sorted(os.listdir(root)):
        folder = os.path.join(root, entry)
        if entry.startswith(".") or not os.path.isdir(folder):
            continue
        found = sorted(os.path.join(here, f) for here, _, names in os.walk(folder) for f in names
                       if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
        if found:
            files += found
            labels += [len(classes)] * len(found)
            classes.append(entry)
    if not classes:
        raise UserError(f"dataset folder {root} has no class folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}) in it")
    if len(classes) == 1:
        raise UserError(f"dataset folder {root} has one class ({classes[0]!r}): classifying needs >= 2")
    return classes, (files, np.array(labels, dtype=np.int64))


def _read_images(files: list, size: tuple | None) -> np.ndarray:
    """Grey-level uint8 [N, H, W]; resized (bilinear) to `size` (H, W) when given, else all
    images must share one size."""
    from PIL import Image
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert("L")
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except Exception as error:      # PIL raises many kinds for a bad file
            raise UserError(f"cannot read image {file}: {error}") from None
        if images and array.shape != images[0].shape:
            raise UserError(f"images differ in size ({images[0].shape[0]}x{images[0].shape[1]} in "
                            f"{files[0]}, {array.shape[0]}x{array.shape[1]} in {file}); give --image-size HxW")
        images.append(array)
    return np.stack(images)
