"""Fuzzing the CLI and the data path: every input ends in a result or a one-line error.

Hypothesis draws flag combinations and values (valid and not) and small datasets with NaN or
infinite pixels, no images, odd sizes and labels out of range. The default suite runs a few
dozen examples; set FUZZ_EXAMPLES for a longer run.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
import models
import train

pytestmark = pytest.mark.cli       # end-to-end runs of the CLI (deselect: -m 'not cli')

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

numbers = st.one_of(st.integers(-3, 40).map(str), st.sampled_from(["0.5", "1e9", "nan", "inf", "-inf", "x", ""]))
OPTIONS = {
    "--model": st.sampled_from(models.list_models() + ["nope", "MOZAFARI2018"]),
    "--epochs": st.lists(numbers, min_size=0, max_size=7),
    "--batch-size": numbers,
    "--ratio": st.one_of(st.floats(-1, 2).map(str), numbers),
    "--val-size": st.one_of(st.floats(-1, 300).map(str), numbers),
    "--patience": numbers,
    "--seed": st.one_of(numbers, st.sampled_from(["9223372036854775808", "-1"])),
    "--threads": st.sampled_from(["1", "2", "0", "-1", "x"]),
    "--activation-maps": st.sampled_from(["0", "1", "-2", "x"]),
    "--device": st.sampled_from(["cpu", "auto", "cuda:7", "tpu", ""]),
    "--augment": st.none(),
    "--dataset": st.sampled_from(["synthetic", "synthetic", "nope", ""]),
    "--eval-only": st.sampled_from(["/nonexistent.ckpt", ""]),
    "--resume": st.sampled_from(["/nonexistent-run"]),
    "--list-models": st.none(),
}


def outcome(capsys, argv):
    """A run either returns its metrics or exits 2 after one line on stderr; nothing else."""
    try:
        result = train.main(argv)
    except SystemExit as exit_info:
        err = capsys.readouterr().err
        assert exit_info.code == 2, (argv, exit_info.code, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        return "error"
    capsys.readouterr()
    assert isinstance(result, dict)
    return "ok"


@SETTINGS
@given(choice=st.lists(st.sampled_from(sorted(OPTIONS)), max_size=6, unique=True), data_=st.data())
def test_cli_fuzz(tmp_path_factory, capsys, choice, data_):
    root = tmp_path_factory.mktemp("fuzz")
    argv = ["--dry-run", "--no-progress", "--out-dir", str(root), "--cache-dir", str(root / "cache")]
    if "--dataset" not in choice:
        argv += ["--dataset", "synthetic"]
    for flag in choice:
        value = data_.draw(OPTIONS[flag], label=flag)
        argv += [flag] if value is None else [flag] + (value if isinstance(value, list) else [value])
    outcome(capsys, argv)


def image_sets():
    size = st.sampled_from([(28, 28), (5, 5), (16, 20), (9, 9)])
    return st.tuples(size, st.integers(0, 40), st.integers(0, 12), st.sampled_from(["uint8", "float", "nan", "inf"]),
                     st.booleans())


@SETTINGS
@given(spec=image_sets(), seed=st.integers(0, 2 ** 16))
def test_data_fuzz(tmp_path_factory, capsys, monkeypatch, spec, seed):
    (height, width), train_count, test_count, kind, bad_labels = spec
    rng = np.random.RandomState(seed)

    def images(count):
        pixels = rng.rand(count, height, width)
        if kind == "uint8":
            return (pixels * 255).astype(np.uint8)
        if kind in ("nan", "inf") and count:
            pixels[rng.randint(count), rng.randint(height), rng.randint(width)] = np.nan if kind == "nan" else np.inf
        return pixels.astype(np.float32)

    labels = lambda count: rng.randint(0, 12 if bad_labels else 3, count).astype(np.int64)
    dataset = data.Dataset("fuzz", images(train_count), labels(train_count), images(test_count),
                           labels(test_count), classes=["a", "b", "c"])
    monkeypatch.setitem(data.DATASETS, "fuzz", lambda root, download: dataset)
    root = tmp_path_factory.mktemp("datafuzz")
    outcome(capsys, ["--dataset", "fuzz", "--dry-run", "--no-progress", "--batch-size", "4",
                     "--out-dir", str(root), "--cache-dir", str(root / "cache"), "--val-size", "0.3"])
