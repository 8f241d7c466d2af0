"""train.py end to end on tiny synthetic data: artifacts, resume, eval-only, error paths."""
import csv
import json
import os

import pytest
import torch

import train
from network_trainer import NetworkTrainer
from checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.cli       # end-to-end runs of the CLI (deselect: -m 'not cli')


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def run_main(tmp_path, cache_dir, *extra, name="run"):
    # the layer probes (an lbfgs fit per layer) cost seconds a run: only the tests that read them ask
    probes = [] if "--probe-samples" in extra else ["--probe-samples", "0"]
    argv = ["--dataset", "synthetic", "--out-dir", str(tmp_path), "--run-name", name,
            "--cache-dir", cache_dir, "--no-progress", "--batch-size", "16", "--threads", "2", *probes, *extra]
    return train.main(argv)


def test_dry_run_writes_every_artifact(tmp_path, cache_dir):
    metrics = run_main(tmp_path, cache_dir, "--dry-run", "--activation-maps", "2", "--tensorboard",
                       "--probe-samples", "5000")
    run = tmp_path / "run"
    assert metrics["run_dir"] == str(run)
    for name in ("config.json", "metrics.json", "history.csv", "history.png", "confusion_matrix.csv",
                 "confusion_matrix.png", "layers.png", "features/conv1.png", "features/conv2.png",
                 "activation_maps/sample0-input.png", "activation_maps/sample1-conv2.png",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "checkpoints/stage-conv1.ckpt",
                 "checkpoints/stage-conv2.ckpt", "checkpoints/stage-decision.ckpt"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["seed"] == 0 and config["hyperparameters"]["conv1"]["threshold"] == 15.0
    assert config["versions"]["torch"] == torch.__version__ and config["dataset"]["sizes"]["val"] == 30
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("accuracy", "error_rate", "silence_rate", "macro_f1", "roc_auc_ovr", "per_class",
                "stage_seconds", "selected_epochs"):
        assert key in saved
    assert saved["accuracy"] + saved["error_rate"] + saved["silence_rate"] == pytest.approx(1.0)
    assert list(saved["layers"]) == ["conv1", "conv2", "decision"]
    assert {"active", "silent_features", "never_win", "winner_evenness", "probe_accuracy"} <= set(saved["layers"]["conv1"])
    assert set(saved["stage_seconds"]) == {"conv1", "conv2", "decision"}
    header = next(csv.reader(open(run / "confusion_matrix.csv")))
    assert header[0] == "true \\ predicted" and header[-1] == "silent" and len(header) == 12
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [r["stage"] for r in rows] == ["conv1", "conv2", "decision"]
    assert float(rows[2]["val_accuracy"]) == saved["selected_epochs"]["decision"]["val_accuracy"]
    assert "rate_conv1_a_plus" in rows[0]


def test_list_models_and_epochs_validation(tmp_path, cache_dir, capsys):
    train.main(["--list-models"])
    out = capsys.readouterr().out
    assert "mozafari2018" in out and "conv1 (stdp), conv2 (stdp), decision (rstdp)" in out
    with pytest.raises(SystemExit) as exit_info:
        run_main(tmp_path, cache_dir, "--epochs", "1", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 stages (conv1, conv2, decision)" in err and "got 2" in err


def final_state(run_dir):
    return load_checkpoint(os.path.join(run_dir, "checkpoints", "last.ckpt"))["state_dict"]


def comparable(metrics):
    return {k: v for k, v in metrics.items()
            if "seconds" not in k and k not in ("run_dir", "inference_img_per_s")}


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, cache_dir, monkeypatch):
    args = ("--epochs", "1", "1", "4", "--patience", "2")
    reference = run_main(tmp_path, cache_dir, *args, name="whole")
    original = NetworkTrainer._train_epoch
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:                      # the second R-STDP epoch
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(NetworkTrainer, "_train_epoch", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_main(tmp_path, cache_dir, *args, name="cut")
    assert exit_info.value.code == 130
    monkeypatch.setattr(NetworkTrainer, "_train_epoch", original)
    resumed = train.main(["--resume", str(tmp_path / "cut"), "--no-progress"])
    assert comparable(resumed) == comparable(reference)
    whole, cut = final_state(reference["run_dir"]), final_state(resumed["run_dir"])
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    history = list(csv.DictReader(open(tmp_path / "cut" / "history.csv")))
    assert [r["epoch"] for r in history if r["stage"] == "decision"] == \
        [r["epoch"] for r in csv.DictReader(open(tmp_path / "whole" / "history.csv")) if r["stage"] == "decision"]


def test_eval_only_reproduces_test_metrics(tmp_path, cache_dir):
    trained = run_main(tmp_path, cache_dir, "--dry-run")
    evaluated = train.main(["--eval-only", os.path.join(trained["run_dir"], "checkpoints", "best.ckpt"),
                            "--out-dir", str(tmp_path), "--run-name", "eval", "--cache-dir", cache_dir,
                            "--no-progress"])
    for key in ("accuracy", "silence_rate", "macro_f1", "roc_auc_ovr"):
        assert evaluated[key] == trained[key]


def expect_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_error_paths_are_one_line(tmp_path, cache_dir, capsys):
    base = ["--out-dir", str(tmp_path), "--cache-dir", cache_dir, "--no-progress"]
    expect_error(capsys, ["--model", "nope"] + base, "unknown model 'nope'")
    expect_error(capsys, ["--dataset", "nope"] + base, "unknown dataset 'nope'")
    expect_error(capsys, ["--dataset", "mnist", "--data-root", str(tmp_path / "void"), "--no-download"] + base,
                 "mnist not found")
    expect_error(capsys, ["--ratio", "0"] + base, "--ratio must be in (0, 1]")
    expect_error(capsys, ["--batch-size", "0"] + base, "--batch-size must be >= 1")
    expect_error(capsys, ["--val-size", "1.5"] + base, "--val-size")
    expect_error(capsys, ["--bogus-flag"] + base, "unrecognized arguments")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all, just bytes")
    expect_error(capsys, ["--eval-only", str(garbage)] + base, "not a checkpoint of this tool")
    expect_error(capsys, ["--resume", str(tmp_path / "missing")], "no run folder")


def test_mismatched_checkpoint_is_refused(tmp_path, cache_dir, capsys):
    trained = run_main(tmp_path, cache_dir, "--dry-run")
    payload = load_checkpoint(os.path.join(trained["run_dir"], "checkpoints", "best.ckpt"))
    base = ["--out-dir", str(tmp_path), "--cache-dir", cache_dir, "--no-progress"]
    # the model is rebuilt from the recorded hyperparameters, so only a setting this version
    # no longer has can differ from them
    for change, message in ((("hyperparameters", {**payload["hyperparameters"], "retired_setting": 0.5}),
                             "other hyperparameters (retired_setting)"),
                            (("frontend_key", "0" * 16), "other front-end parameters"),
                            (("num_classes", 3), "3 classes")):
        altered = dict(payload)
        altered[change[0]] = change[1]
        path = tmp_path / f"altered-{change[0]}.ckpt"
        save_checkpoint(str(path), altered)
        expect_error(capsys, ["--eval-only", str(path)] + base, message)
    truncated = tmp_path / "truncated.ckpt"
    blob = open(os.path.join(trained["run_dir"], "checkpoints", "best.ckpt"), "rb").read()
    truncated.write_bytes(blob[: len(blob) // 2])
    expect_error(capsys, ["--eval-only", str(truncated)] + base, "corrupted or truncated")


def test_existing_run_name_is_refused_and_untouched(tmp_path, cache_dir, capsys):
    run_main(tmp_path, cache_dir, "--dry-run", name="taken")
    before = (tmp_path / "taken" / "metrics.json").read_bytes()
    with pytest.raises(SystemExit):
        run_main(tmp_path, cache_dir, "--dry-run", name="taken")
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "metrics.json").read_bytes() == before


def test_resume_refuses_changed_settings(tmp_path, cache_dir, capsys):
    run_main(tmp_path, cache_dir, "--dry-run", name="done")
    expect_error(capsys, ["--resume", str(tmp_path / "done"), "--epochs", "1", "1", "1"], "cannot be changed")


def test_set_overrides_reach_nested_settings_and_keep_seeded_weights(tmp_path, cache_dir, capsys):
    import models
    torch.manual_seed(3)
    plain = models.create_model("mozafari2018")
    torch.manual_seed(3)
    changed = models.create_model("mozafari2018", **{"conv1.threshold": 20, "frontend.time_steps": 10,
                                                     "adaptive_window": 500})
    assert changed.config.conv1.threshold == 20.0 and isinstance(changed.config.conv1.threshold, float)
    assert changed.config.frontend.time_steps == 10 and changed.config.adaptive_window == 500
    assert changed.config.conv2 == plain.config.conv2
    # the defaults probe does not consume the seeded RNG: same weights as without overrides
    for a, b in zip(plain.state_dict().values(), changed.state_dict().values()):
        if a.shape == b.shape:
            assert torch.equal(a, b)
    for bad, message in (({"nope": 1}, "unknown setting 'nope'"),
                         ({"conv1": 3}, "is a group"),
                         ({"conv1.kwta": 2.5}, "whole number"),
                         ({"adaptive_window": "x"}, "takes a int")):
        with pytest.raises(ValueError, match=message):
            models.create_model("mozafari2018", **bad)
    metrics = run_main(tmp_path, cache_dir, "--dry-run", "--set", "conv1.threshold=12",
                       "--set", "conv2.kwta=3")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["hyperparameters"]["conv1"]["threshold"] == 12.0
    assert config["hyperparameters"]["conv2"]["kwta"] == 3 and config["run"]["settings"]
    evaluated = train.main(["--eval-only", os.path.join(metrics["run_dir"], "checkpoints", "best.ckpt"),
                            "--out-dir", str(tmp_path), "--run-name", "eval", "--cache-dir", cache_dir,
                            "--no-progress"])
    assert evaluated["accuracy"] == metrics["accuracy"]
    base = ["--dataset", "synthetic", "--out-dir", str(tmp_path), "--cache-dir", cache_dir, "--no-progress"]
    expect_error(capsys, base + ["--set", "conv1.threshold"], "expected KEY=VALUE")
    expect_error(capsys, base + ["--set", "bogus=1"], "unknown setting 'bogus'")


def test_saturated_silent_and_collapsing_layers_are_flagged_in_one_line(tmp_path, cache_dir, capsys):
    from metrics import diagnose
    assert diagnose("conv2", {"spike_rate": 0.97}, 10) == [
        "conv2 is saturated: 97% of its output neurons spike on validation images"]
    assert "nearly silent" in diagnose("conv1", {"spike_rate": 0.004}, 10)[0]
    assert diagnose("conv1", {"spike_rate": 0.3}, 10) == []
    assert "collapsing: one class took 62%" in diagnose("decision", {"top_class_share": 0.62}, 10)[0]
    assert diagnose("decision", {"top_class_share": 0.3}, 10) == []
    # the synthetic bars saturate conv2 after one short epoch: the run says so, once per epoch
    run_main(tmp_path, cache_dir, "--dry-run")
    out = capsys.readouterr().out
    assert out.count("warning: conv2 is saturated") == 1


def test_rstdp_stage_reports_the_largest_class_share_of_its_decisions():
    from models.stages import RSTDPStage

    class Head:
        num_classes, needs = 4, "final"

        def __init__(self):
            self.calls = iter([torch.tensor([0, 0, -1, 2]), torch.tensor([0, 1, 0, 0])])

        def reinforce(self, inputs, labels, phase=0, exact=True):
            return next(self.calls)

        def adapt(self, *args):
            pass

    stage = RSTDPStage("decision", Head(), input_node=0)
    stage.start_epoch(8)
    for _ in range(2):
        stage.step(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    assert stage.end_epoch() == {"top_class_share": 5 / 7}          # class 0: 5 of 7 non-silent


def test_run_configuration_round_trips_and_reads_folders_written_before_the_split():
    import run_config
    args = train.build_parser().parse_args(["--model", "deep2024", "--epochs", "1", "2", "3", "4",
                                            "--set", "conv1.threshold=20", "--threads", "1", "--seed", "7"])
    config, runtime = run_config.from_namespace(args)
    assert config.epochs == (1, 2, 3, 4) and config.settings == ("conv1.threshold=20",) and config.seed == 7
    assert runtime.threads == 1 and config.overrides() == {"conv1.threshold": 20}
    saved = json.loads(json.dumps(run_config.to_json(config, runtime)))
    assert run_config.from_json(saved) == (config, runtime)
    # an older config.json kept every flag under "args" (and flags since removed)
    old = {"args": {**vars(args), "epochs": [1, 2, 3, 4], "gone": 1}}
    assert run_config.from_json(old) == (config, runtime)
    # what a resumed run may change follows from the runtime fields
    flags = train.resumable_overrides()
    assert {"--threads", "--device", "--no-download", "--probe-samples", "--resume"} <= flags
    assert not {"--seed", "--set", "--epochs", "--out-dir", "--ratio"} & flags


def test_a_resumed_run_spawns_as_it_was_run_unless_told_otherwise(tmp_path):
    import run_config
    parser = train.build_parser()
    saved = run_config.to_json(run_config.RunConfig(), run_config.Runtime(nproc=2, device="cpu", threads=1))
    (tmp_path / "config.json").write_text(json.dumps(saved))
    def runtime(argv):
        _, given = run_config.from_namespace(parser.parse_args(argv))
        return train._saved_runtime(parser, argv, argv[1], given)
    assert (runtime(["--resume", str(tmp_path)]).nproc, runtime(["--resume", str(tmp_path)]).device) == (2, "cpu")
    assert runtime(["--resume", str(tmp_path), "--nproc", "1"]).nproc == 1
    assert runtime(["--resume", str(tmp_path / "missing")]).nproc == 1      # _resume reports it


@pytest.fixture
def changed_default(monkeypatch):
    """mozafari2018 with another conv2 threshold default, as a later version of the zoo might
    ship: a run made before the change must still resume and evaluate as it was trained."""
    import dataclasses

    import models
    from models import _registry
    original = _registry._MODELS["mozafari2018"]

    def mozafari2018(num_classes=10, readout=None, **overrides):
        model = original(num_classes, readout)
        conv2 = dataclasses.replace(model.config.conv2, threshold=model.config.conv2.threshold + 3)
        # a None default made explicit (the same pooling): a recorded None must stay None
        conv1 = dataclasses.replace(model.config.conv1, pool_stride=model.config.conv1.pool)
        return original(num_classes, readout, **{"conv1": conv1, "conv2": conv2, **overrides})

    def change():
        monkeypatch.setitem(_registry._MODELS, "mozafari2018", mozafari2018)
        assert models.create_model("mozafari2018").config.conv2.threshold != original().config.conv2.threshold
        assert original().config.conv1.pool_stride is None
    return change


def test_a_changed_model_default_leaves_earlier_runs_resumable_and_evaluable(tmp_path, cache_dir, monkeypatch,
                                                                            changed_default):
    args = ("--epochs", "1", "1", "2")
    reference = run_main(tmp_path, cache_dir, *args, name="whole")
    original = NetworkTrainer._train_epoch
    calls = {"n": 0}

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(NetworkTrainer, "_train_epoch", interrupted)
    with pytest.raises(SystemExit):
        run_main(tmp_path, cache_dir, *args, name="cut")
    monkeypatch.setattr(NetworkTrainer, "_train_epoch", original)
    changed_default()
    resumed = train.main(["--resume", str(tmp_path / "cut"), "--no-progress"])
    assert comparable(resumed) == comparable(reference)
    whole, cut = final_state(reference["run_dir"]), final_state(resumed["run_dir"])
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    evaluated = train.main(["--eval-only", os.path.join(reference["run_dir"], "checkpoints", "best.ckpt"),
                            "--out-dir", str(tmp_path), "--run-name", "eval", "--cache-dir", cache_dir,
                            "--no-progress"])
    assert evaluated["accuracy"] == reference["accuracy"]
