"""Every `--set` value is checked where the model is built: a bad value is a one-line error
(ValueError or TypeError from `create_model`, which the CLI reports without a traceback), and a
value the model accepts trains and predicts without an exception."""
import dataclasses
import json
import math

import pytest
import torch

import models
from spiking.settings import check_settings, setting, settings
from tests.test_models import node0, raw_shape, stage_input
from tests.test_train import cache_dir  # noqa: F401  (the session fixture)


def leaves(config, prefix=""):
    """(dotted key, default) of every non-group field of a settings dataclass, recursively."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value


def bad_values(default):
    """Values a careless or curious user might try for a setting with this default."""
    if isinstance(default, bool):
        return [2, "maybe"]
    if isinstance(default, int):
        return [-1, 0, 10 ** 6, 2.5, "x"]
    if isinstance(default, float) or default is None:
        return [-1.0, 0.0, math.nan, math.inf, 1e12, "x"]
    if isinstance(default, str):
        return ["bogus", 3]
    if isinstance(default, tuple):
        return [(), (-1.0,), (1.5,), (math.nan, 1.0), ("x", 1.0), (None,), "x", 5]
    return ["x"]


def smoke(model, num_classes=3, gen=None):
    """One training step of every stage on 6 random samples, then a prediction."""
    gen = gen or torch.Generator().manual_seed(0)
    for stage in model.stages:
        labels = torch.arange(6) % num_classes
        stage.configure(exact=True, seed=0)
        stage.start_epoch(6)
        stage.step(stage_input(model, stage, 6, gen), labels)
        try:
            stage.end_epoch(lambda: (stage_input(model, stage, 4, gen).numpy(), (torch.arange(4) % num_classes).numpy()))
        except ValueError:          # e.g. a readout without spiking samples: the trainer's one line
            pass
    model.start_evaluation("test")
    prediction = model.predict(node0(model, 3, gen))
    assert prediction.classes.shape == (3,)


@pytest.mark.parametrize("name", models.list_models())
def test_every_setting_rejects_bad_values_in_one_line_or_works(name):
    defaults = models.create_model(name, num_classes=3).config
    accepted = []
    for key, default in leaves(defaults):
        for value in bad_values(default):
            try:
                with torch.random.fork_rng(devices=[]):
                    model = models.create_model(name, num_classes=3, **{key: value})
            except (ValueError, TypeError) as error:
                message = str(error)
                assert message and "\n" not in message, (key, value, message)
                continue
            accepted.append((key, value))
            try:
                # the input size is the run's: check it as the CLI does, then train
                shape = model.frontend.output_shape(tuple(raw_shape(model)))
                shapes = model.node_shapes(shape)
            except ValueError:
                continue
            if any(min(s) < 1 for s in shapes):
                continue
            try:
                smoke(model)
            except Exception as error:      # noqa: BLE001 - any exception here is the bug
                raise AssertionError(f"{name} --set {key}={value!r} was accepted but fails: "
                                     f"{type(error).__name__}: {error}") from error


def test_settings_dataclass_checks_ranges_choices_and_its_own_rule():
    @settings
    class Example:
        count: int = setting(2, low=1, high=8)
        rates: tuple = setting((0.1, 0.2), low=0)
        mode: str = setting("a", choices=("a", "b"))
        scale: float = 1.0

        def check(self):
            if self.count == 7:
                raise ValueError("count 7 is unlucky")

    assert Example().count == 2
    for changes, message in (({"count": 0}, "count must be >= 1, got 0"),
                             ({"count": 9}, "count must be <= 8, got 9"),
                             ({"rates": (0.1, -0.2)}, "rates must be >= 0, got -0.2"),
                             ({"mode": "c"}, "mode must be one of 'a', 'b', got 'c'"),
                             ({"scale": math.inf}, "scale must be a finite number"),
                             ({"count": 7}, "unlucky")):
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(Example(), **changes)
    check_settings(Example(count=8))


def test_a_nested_bad_value_names_its_group():
    with pytest.raises(ValueError, match=r"^conv1\.kwta must be >= 1, got 0$"):
        models.create_model("mozafari2018", **{"conv1.kwta": 0})
    with pytest.raises(ValueError, match=r"^conv2\.threshold must be >= 0, got -5.0$"):
        models.create_model("mozafari2018", **{"conv2.threshold": -5})


@pytest.mark.cli
def test_the_reported_set_and_readout_crashes_are_one_line_errors_or_work(tmp_path, cache_dir, capsys):
    """The review's tracebacks: a setting named like the CLI's readout arguments, and values the
    layers reject, now end in one line (or, where the setting exists, simply work)."""
    import train
    from tests.test_train import expect_error
    base = ["--dataset", "synthetic", "--out-dir", str(tmp_path), "--cache-dir", cache_dir, "--no-progress"]
    expect_error(capsys, base + ["--model", "chevalier2019", "--set", "readout=svm"], "unknown setting 'readout'")
    expect_error(capsys, base + ["--model", "chevalier2019", "--readout", "svm"], "no decision stage to replace")
    expect_error(capsys, base + ["--set", "conv1.kwta=0"], "conv1.kwta must be >= 1, got 0")
    expect_error(capsys, base + ["--set", "conv1.threshold=-5"], "conv1.threshold must be >= 0, got -5.0")
    expect_error(capsys, base + ["--set", "frontend.time_steps=300"], "frontend.time_steps must be <= 254")
    expect_error(capsys, base + ["--set", "decision.upper_bound=0.1"], "decision: the weight bounds must satisfy")
    # one layer's maps changed without the next layer's in_channels: found before any work
    expect_error(capsys, base + ["--set", "conv2.out_channels=100"],
                 "decision reads 250 input maps, but its input has 100 (--set decision.in_channels=100)")
    expect_error(capsys, base + ["--set", "conv2.in_channels=7"], "conv2 reads 7 input maps, but its input has 30")
    expect_error(capsys, base + ["--model", "inception2024", "--set", "conv2.out_channels=100"],
                 "conv3a reads 75 input maps, but its input has 100 (--set branch.in_channels=100)")
    expect_error(capsys, base + ["--model", "majority2024", "--set", "conv2.out_channels=100"],
                 "decision_k3 reads 250 input maps, but its input has 100 (--set head.in_channels=100)")
    expect_error(capsys, base + ["--model", "lagacherie2024", "--readout", "rstdp"], "no R-STDP decision layer")
    # `--set KEY=none` is a value, not "keep the default" (it was dropped: merge=none built the
    # concat model and then failed on its decision's channels)
    expect_error(capsys, base + ["--set", "conv1.threshold=none"], "conv1.threshold takes float, got None")
    expect_error(capsys, base + ["--model", "deeper2024", "--set", "merge=none"],
                 "merge=none gives the decision 200 input channels: set decision.in_channels=200")
    metrics = train.main(base + ["--model", "lagacherie2024", "--set", "readout_C=0.5", "--dry-run",
                                 "--run-name", "lagacherie"])
    config = json.loads((tmp_path / "lagacherie" / "config.json").read_text())
    assert config["hyperparameters"]["readout_C"] == 0.5 and 0 <= metrics["accuracy"] <= 1
    # --readout-c reaches a model whose config names its readout, and eval-only rebuilds it
    metrics = train.main(base + ["--model", "lagacherie2024", "--readout", "svm", "--readout-c", "0.25",
                                 "--dry-run", "--run-name", "svm"])
    config = json.loads((tmp_path / "svm" / "config.json").read_text())
    assert (config["hyperparameters"]["readout"], config["hyperparameters"]["readout_C"]) == ("svm", 0.25)
    evaluated = train.main(["--eval-only", str(tmp_path / "svm" / "checkpoints" / "best.ckpt"),
                            "--out-dir", str(tmp_path), "--run-name", "eval", "--cache-dir", cache_dir,
                            "--no-progress"])
    assert evaluated["accuracy"] == metrics["accuracy"]


def test_the_fuzzers_tracebacks_are_one_line_errors_and_leave_no_run_folder(tmp_path, cache_dir, capsys,
                                                                           monkeypatch):
    """Inputs a fuzzing session found ending in tracebacks: non-numbers inside tuple settings,
    epoch counts that are not whole, a fourth inception branch, an allocation beyond the
    machine, a run name outside --out-dir, a hand-edited config.json under --resume. Each is
    one line, and a run refused before its first checkpoint leaves no folder."""
    import train
    from tests.test_train import expect_error
    out = tmp_path / "runs"
    base = ["--dataset", "synthetic", "--out-dir", str(out), "--cache-dir", cache_dir, "--no-progress"]
    expect_error(capsys, base + ["--model", "chevalier2019", "--set", "learning_rates=('abc', 0.05, 0.01)"],
                 "learning_rates holds numbers, got 'abc'")
    expect_error(capsys, base + ["--model", "mozafari2018_shallow", "--set", "default_epochs=(1.5,)"],
                 "default_epochs takes whole counts >= 0")
    expect_error(capsys, base + ["--model", "inception2024", "--set", "branch_kernels=(3, 5, 7, 7)"],
                 "decision reads 300 input maps, but its input has 400")
    expect_error(capsys, base + ["--run-name", "../escaped"], "a run's name is one folder name inside --out-dir")
    assert not (tmp_path / "escaped").exists()

    def allocation_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 274877906944 bytes. Error code 12")
    with monkeypatch.context() as patch:        # after the run folder exists, as encoding does
        patch.setattr(train, "prepare_splits", allocation_fails)
        expect_error(capsys, base + ["--run-name", "huge"], "out of memory (256.0 GiB asked)")
    expect_error(capsys, base + ["--ratio", "0.001", "--run-name", "few"], "leave 0 training")
    for text, said in (("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0)", " (20.0 MiB asked)"),
                       ("can't allocate memory: you tried to allocate 100 bytes", " (100 bytes asked)"),
                       ("out of memory", "")):
        assert train.out_of_memory(RuntimeError(text)) == said
    assert train.out_of_memory(RuntimeError("shape mismatch")) is None and train.out_of_memory(MemoryError()) == ""
    assert not out.exists() or not any(out.iterdir())
    # --resume of a config.json edited by hand
    train.main(base + ["--dry-run", "--run-name", "done"])
    config_file = out / "done" / "config.json"
    saved = json.loads(config_file.read_text())
    for field, value, message in (("ratio", "x", "ratio takes float, got 'x'"),
                                  ("seed", "x", "seed takes int, got 'x'"),
                                  ("dataset", 5, "dataset takes str, got 5"),
                                  ("model", "nope", "names an unknown model 'nope'")):
        config_file.write_text(json.dumps({**saved, "run": {**saved["run"], field: value}}))
        expect_error(capsys, ["--resume", str(out / "done"), "--no-progress"], message)


def test_none_on_the_command_line_selects_a_choice_named_none():
    from run_config import parse_settings
    for text in ("merge=none", "merge=None", "merge='none'"):
        settings = parse_settings([text, "decision.in_channels=200"])
        model = models.create_model("deeper2024", settings=settings, keep_none=True)
        assert model.config.merge == "none" and model.blocks[3].name == "conv4", text


def test_bench_set_errors_are_one_line_before_any_measurement(capsys, monkeypatch):
    """bench/run.py's `--set` goes through the same checks as train.py's, in the parent process:
    a bad value is argparse's one-line error (exit 2), and no measurement subprocess starts."""
    import importlib.util
    import os
    import subprocess
    spec = importlib.util.spec_from_file_location(
        "bench_run", os.path.join(os.path.dirname(__file__), "..", "bench", "run.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("a measurement started"))
    for value, message in (("decision.teacher=-1", "decision.teacher must be >= 0, got -1.0"),
                           ("decision.bogus=1", "unknown setting 'bogus'"),
                           ("nokey", "expected KEY=VALUE")):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(["--only", "matmul", "--set", value, "--out", os.devnull])
        error = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and message in error[-1] and "Traceback" not in "\n".join(error)
