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
    with pytest.raises(ValueError, match="--readout-c sets a linear readout: add --readout svm or logistic"):
        models.create_model("mozafari2018", readout_choice=models.ReadoutChoice(C=1.0))
    with pytest.raises(ValueError, match="no decision stage to replace"):
        models.create_model("chevalier2019", readout_choice=models.ReadoutChoice("svm"))
    with pytest.raises(ValueError, match="unknown setting 'readout_choice'"):    # a setting, not the choice
        models.create_model("mozafari2018", settings={"readout_choice": "svm"})


def test_latency_values_are_steps_left_after_the_first_spike():
    readout = LinearReadout("svm", 3, values="latency", time_steps=15)
    times = torch.tensor([[[[0, 14], [15, 7]]]], dtype=torch.uint8)        # [1, 1, 2, 2]; 15 = never
    assert readout.features(times).tolist() == [[15.0, 1.0, 0.0, 8.0]] and readout.needs == "times"
    assert LinearReadout("svm", 3).needs == "final"
    with pytest.raises(ValueError, match="number of time steps"):
        LinearReadout("svm", 3, values="latency")
    with pytest.raises(ValueError, match="spiked, latency"):
        LinearReadout("svm", 3, values="counts")


def timing_only(count, seed=0, T=15):
    """Every sample spikes on all 12 neurons; class c fires its quarter c early (steps 0-3) and
    the rest late (10-13), so only the timing tells the classes apart. Spike times [N, 12]."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 3, count)
    times = rng.randint(10, 14, (count, 12)).astype(np.uint8)
    for i, c in enumerate(labels):
        times[i, 4 * c:4 * c + 4] = rng.randint(0, 4, 4)
    return times, labels


def test_a_latency_readout_separates_what_only_timing_tells_apart():
    from sklearn.svm import LinearSVC
    times, y = timing_only(240)
    spiked = LinearReadout("svm", 3, C=1.0)
    finals = (torch.from_numpy(times) < 15).to(torch.uint8)
    assert spiked.fit(spiked.features_of(finals[:180]), y[:180], spiked.features_of(finals[180:]),
                      y[180:])["val_accuracy"] < 0.6         # every neuron spiked: nothing to read
    latency = LinearReadout("svm", 3, C=1.0, values="latency", time_steps=15)
    stored = latency.features_of(times[:180])
    assert stored.dtype == np.uint8 and stored.max() == 15
    summary = latency.fit(stored, y[:180], latency.features_of(times[180:]), y[180:])
    assert summary["val_accuracy"] == 1.0
    # the classifier is fitted on (T - t) / T, and its stored coefficients score T - t directly
    reference = LinearSVC(C=1.0, random_state=0, dual="auto", max_iter=2000).fit(stored / 15.0, y[:180])
    prediction = latency.predict(torch.from_numpy(times[180:]).view(60, 3, 2, 2))
    expected = reference.decision_function(latency.features_of(times[180:]) / 15.0)
    assert np.allclose(prediction.scores.numpy(), expected, atol=1e-4)
    assert torch.equal(prediction.classes, torch.from_numpy(y[180:]))


def test_a_model_with_a_latency_readout_predicts_from_spike_times(gen):
    model = models.create_model("mozafari2018", readout_choice=models.ReadoutChoice("svm", values="latency"))
    assert model.predict_needs == "times" and not model.encoded_input
    assert model.stages[-1].needs == "times" and model.hyperparameters()["readout_values"] == "latency"
    shapes = model.node_shapes(model.frontend.output_shape((28, 28)))
    times = random_times(3, *shapes[0], 15, never=0.6, generator=gen)
    model.head.coef = torch.randn(10, int(np.prod(shapes[2])), generator=gen)
    expected = model.head.predict(model.forward_times(times, 0, 2))
    assert torch.equal(model.predict(times).scores, expected.scores)
    with pytest.raises(ValueError, match="reads spike times, not final maps"):
        model.predict((times < 15).float(), final=True)
    assert models.create_model("mozafari2018", readout_choice=models.ReadoutChoice("svm")).predict_needs == "final"
    with pytest.raises(ValueError, match="--readout-values sets a linear readout: add --readout svm or logistic"):
        models.create_model("mozafari2018", readout_choice=models.ReadoutChoice(values="latency"))
    with pytest.raises(ValueError, match="reads its own features"):
        models.create_model("lagacherie2024", readout_choice=models.ReadoutChoice(values="latency"))


@pytest.mark.cli
def test_latency_readouts_from_the_command_line(tmp_path, capsys):
    """--readout-values latency: in place of the decision (and back from its checkpoint), and
    beside it (--also-readout), shown as such by compare.py."""
    import compare
    base = ["--dataset", "synthetic", "--batch-size", "16", "--out-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-samples", "0", "--readout-c", "0.01"]
    alone = train.main(base + ["--readout", "svm", "--readout-values", "latency", "--run-name", "alone",
                               "--epochs", "1", "1", "1"])
    evaluated = train.main(["--eval-only", str(tmp_path / "alone" / "checkpoints" / "best.ckpt"),
                            "--out-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert evaluated["accuracy"] == alone["accuracy"]
    assert compare.summarize(str(tmp_path / "alone"))["readout"] == "svm latency"
    # the same conv layers (taken, not trained again), the decision trained beside the readout
    both = train.main(base + ["--also-readout", "svm", "--readout-values", "latency", "--run-name", "both",
                              "--init-from", str(tmp_path / "alone"), "--epochs", "0", "0", "1"])
    side = both["also_readout"]
    assert side["values"] == "latency" and side["accuracy"] == alone["accuracy"]
    assert compare.summarize(str(tmp_path / "both"))["also_readout"] == f"svm latency {side['accuracy']:.4f}"
    with pytest.raises(SystemExit):
        train.main(base[:-2] + ["--readout-values", "latency", "--run-name", "bad", "--epochs", "1", "1", "1"])
    assert "--readout-values sets a linear readout: add --readout svm or logistic" in capsys.readouterr().err


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
    base = ["--dataset", "synthetic", "--batch-size", "16", "--out-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-samples", "0"]
    metrics = train.main(base + ["--also-readout", "svm", "--readout-c", "0.5", "--run-name", "c"])
    assert metrics["also_readout"]["C"] == 0.5 and metrics["also_readout"]["kind"] == "svm"
    with pytest.raises(SystemExit):
        train.main(["--eval-only", os.path.join(metrics["run_dir"], "checkpoints", "best.ckpt"),
                    "--also-readout", "svm", "--set", "conv1.threshold=3", "--out-dir", str(tmp_path)])
    assert "--set, --also-readout apply to training runs" in capsys.readouterr().err
