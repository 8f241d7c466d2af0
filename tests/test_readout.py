"""Linear readouts: separable features, the silence rule, models with --readout, kheradpisheh2018."""
import os

import numpy as np
import pytest
import torch

import models
import train
from models.readout import LinearReadout
from models.layers import HiddenLayer, HiddenSpec
from spiking import times as st
from tests.conftest import random_times


def separable(count, classes=3, features=12, seed=0):
    """Class c lights features [4c, 4c + 4) plus noise; binary."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, classes, count)
    x = (rng.rand(count, features) < 0.1).astype(np.uint8)
    for i, c in enumerate(labels):
        x[i, 4 * c:4 * c + 4] = 1
    return x, labels


@pytest.mark.parametrize("kind", ["svm", "logistic"])
def test_readout_fits_separable_features_and_picks_c_on_validation(kind):
    x, y = separable(200)
    readout = LinearReadout(kind, 3)
    summary = readout.fit(x[:150], y[:150], x[150:], y[150:])
    assert summary["val_accuracy"] == 1.0 and 1e-5 <= summary["C"] <= 1e4
    prediction = readout.predict(torch.from_numpy(x[150:]).float().view(50, 3, 2, 2))
    assert torch.equal(prediction.classes, torch.from_numpy(y[150:]))
    if kind == "logistic":
        assert torch.allclose(prediction.scores.sum(1), torch.ones(50))
    assert readout.fitted_C.item() == pytest.approx(summary["C"])


def test_silent_samples_are_class_minus_one_and_count_as_errors():
    x, y = separable(100)
    x[:10] = 0                                   # ten silent samples
    readout = LinearReadout("svm", 3, C=1.0)
    summary = readout.fit(x[:60], y[:60], x[60:], y[60:])
    assert summary["silent_train"] == pytest.approx(10 / 60)
    prediction = readout.predict(torch.from_numpy(x[:20]).float())
    assert (prediction.classes[:10] == -1).all() and (prediction.classes[10:] >= 0).all()


def test_readout_state_round_trips_whatever_the_feature_size():
    x, y = separable(90, features=12)
    readout = LinearReadout("svm", 3, C=1.0)
    readout.fit(x[:60], y[:60], x[60:], y[60:])
    fresh = LinearReadout("svm", 3, C=1.0)
    fresh.load_state_dict(readout.state_dict())
    assert torch.equal(fresh.coef, readout.coef) and fresh.coef.shape == (3, 12)


def test_a_readout_chosen_at_build_replaces_the_rstdp_stages():
    model = models.create_model("mozafari2018", readout_choice=models.ReadoutChoice("svm"))
    assert [s.kind for s in model.stages] == ["stdp", "stdp", "readout"] and model.stages[-1].input_node == 2
    assert model.hyperparameters()["readout"] == "svm"
    torch.manual_seed(5)
    plain = models.create_model("mozafari2018")
    torch.manual_seed(5)
    chosen = models.create_model("mozafari2018", readout_choice=models.ReadoutChoice("logistic", 0.5))
    assert torch.equal(plain.blocks[1].conv.weight, chosen.blocks[1].conv.weight)    # same seeded draws
    assert chosen.head.C == 0.5 and chosen.stages[-1].name == "readout_logistic"
    deepr = models.create_model("deepr2024", readout_choice=models.ReadoutChoice("logistic"))
    assert [s.name for s in deepr.stages] == ["conv1", "conv2", "conv3", "readout_logistic"]
    assert deepr.stages[-1].input_node == 3         # conv3's maps: no reward stage without a decision
    assert len(deepr.config.default_epochs) == len(deepr.stages)
    own = models.create_model("kheradpisheh2018", readout_choice=models.ReadoutChoice(C=1.5))
    assert (own.head.kind, own.head.C) == ("svm", 1.5)
    with pytest.raises(ValueError, match="no R-STDP decision layer"):
        models.create_model("kheradpisheh2018", readout_choice=models.ReadoutChoice("rstdp"))
    with pytest.raises(ValueError, match="needs --readout svm or logistic"):
        models.create_model("mozafari2018", readout_choice=models.ReadoutChoice(C=1.0))
    with pytest.raises(ValueError, match="no decision stage to replace"):
        models.create_model("chevalier2019", readout_choice=models.ReadoutChoice("svm"))
    with pytest.raises(ValueError, match="unknown setting 'readout_choice'"):    # a setting, not the choice
        models.create_model("mozafari2018", settings={"readout_choice": "svm"})


@pytest.mark.cli
def test_train_with_svm_readout_end_to_end(tmp_path):
    metrics = train.main(["--dataset", "synthetic", "--readout", "svm", "--epochs", "1", "1", "1",
                          "--batch-size", "16", "--out-dir", str(tmp_path), "--run-name", "svm",
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert 0 <= metrics["accuracy"] <= 1 and "readout_svm" in metrics["selected_epochs"]
    evaluated = train.main(["--eval-only", str(tmp_path / "svm" / "checkpoints" / "best.ckpt"),
                            "--out-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert evaluated["accuracy"] == metrics["accuracy"]


def test_learning_on_a_pointwise_inhibited_input(gen):
    spec = HiddenSpec(in_channels=4, out_channels=6, kernel_size=2, threshold=1.0, kwta=3,
                      inhibition_radius=1, pad=1, rate_doubling_every=0, inhibit_input=True)
    times = random_times(3, 4, 6, 6, 15, never=0.3, generator=gen)
    torch.manual_seed(0)
    layer = HiddenLayer(spec, 15, "conv")
    torch.manual_seed(0)
    manual = HiddenLayer(HiddenSpec(**{**spec.__dict__, "inhibit_input": False, "pad": 0}), 15, "conv")
    padded = st.pad_times(times, (1, 1, 1, 1), 15)
    inhibited = st.pointwise_inhibition_times(padded, torch.ones(padded.shape), 15)[0]
    assert ((inhibited < 15).sum(1) <= 1).all()          # one map per position survives
    layer.learn(times)
    manual.learn(inhibited)
    assert torch.equal(layer.conv.weight, manual.conv.weight)
    assert torch.equal(layer.forward_times(times), manual.forward_times(padded))   # inference: no inhibition


def test_C_search_extends_past_a_winning_edge_and_refines():
    import math
    from models.readout import search_C
    tried = []

    def peaked(C):                  # validation accuracy peaks at C = 10^-2.7, below the grid
        tried.append(C)
        return (-abs(math.log10(C) + 2.7),)
    fits = search_C(peaked)
    assert tried[:4] == [0.01, 0.1, 1.0, 10.0] and 0.001 in fits and 0.0001 in fits
    assert max(fits, key=lambda c: (fits[c][0], -c)) == 0.00316
    tried.clear()
    flat = search_C(lambda C: (tried.append(C) or 0.5,))     # ties: no extension, smallest C wins
    assert sorted(flat) == [0.00316, 0.01, 0.0316, 0.1, 1.0, 10.0]


@pytest.mark.cli
def test_also_readout_equals_the_readout_run_on_the_same_features(tmp_path, capsys):
    """--also-readout fits, beside the R-STDP decision, the readout that --readout would put in
    its place: same seed, same STDP layers, same features, so the same test accuracy."""
    import compare
    base = ["--dataset", "synthetic", "--epochs", "1", "1", "2", "--batch-size", "16", "--out-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-samples", "0"]
    both = train.main(base + ["--also-readout", "logistic", "--run-name", "both"])
    alone = train.main(base + ["--readout", "logistic", "--run-name", "alone"])
    plain = train.main(base + ["--run-name", "plain"])
    side = both["also_readout"]
    assert side["kind"] == "logistic" and side["node"] == 2
    assert side["accuracy"] == alone["accuracy"] and side["macro_f1"] == alone["macro_f1"]
    # the R-STDP decision is untouched by the readout beside it
    assert both["accuracy"] == plain["accuracy"] and "also_readout" not in plain
    row = compare.summarize(str(tmp_path / "both"))
    assert row["also_readout"] == f"logistic {side['accuracy']:.4f}"
    for extra, message in ((["--readout", "svm"], "--readout svm replaces it"),
                           (["--model", "lagacherie2024"], "lagacherie2024's decision is readout")):
        with pytest.raises(SystemExit):
            train.main(base + ["--also-readout", "svm", "--run-name", "bad"] + extra)
        assert message in capsys.readouterr().err


@pytest.mark.cli
def test_also_readout_takes_readout_c_and_eval_only_refuses_training_flags(tmp_path, capsys):
    base = ["--dataset", "synthetic", "--epochs", "1", "1", "1", "--batch-size", "16", "--out-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-samples", "0"]
    metrics = train.main(base + ["--also-readout", "svm", "--readout-c", "0.5", "--run-name", "c"])
    assert metrics["also_readout"]["C"] == 0.5 and metrics["also_readout"]["kind"] == "svm"
    with pytest.raises(SystemExit):
        train.main(["--eval-only", os.path.join(metrics["run_dir"], "checkpoints", "best.ckpt"),
                    "--also-readout", "svm", "--set", "conv1.threshold=3", "--out-dir", str(tmp_path)])
    assert "--set, --also-readout apply to training runs" in capsys.readouterr().err
