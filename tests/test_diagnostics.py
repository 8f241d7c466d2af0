"""Layer diagnostics (diagnostics.py) against slow per-sample loops written from their definitions."""
import math

import numpy as np
import pytest
import torch

import diagnostics
import models
from spiking import times as st


def test_evenness_from_the_definition():
    assert diagnostics.evenness(np.array([5, 5, 5, 5])) == pytest.approx(1.0)
    assert diagnostics.evenness(np.array([9, 0, 0])) == 0.0
    assert diagnostics.evenness(np.array([0, 0])) == 0.0
    assert diagnostics.evenness(np.array([3])) == 1.0
    counts = np.array([1, 3, 0, 4])
    p = np.array([1, 3, 4]) / 8
    assert diagnostics.evenness(counts) == pytest.approx(-(p * np.log(p)).sum() / math.log(4))


def test_probe_separates_informative_features_and_not_constant_ones():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    onehot = np.eye(3, dtype=np.float32)[labels]
    noisy = np.concatenate([onehot, rng.integers(0, 2, (300, 20)).astype(np.float32)], axis=1)
    assert diagnostics.fit_probe(noisy[:200], labels[:200], noisy[200:], labels[200:]) == 1.0
    constant = np.ones((300, 5), dtype=np.float32)
    majority = np.bincount(labels[:200]).argmax()
    expected = float((labels[200:] == majority).mean())
    assert diagnostics.fit_probe(constant[:200], labels[:200], constant[200:], labels[200:]) == pytest.approx(expected, abs=0.05)
    empty = np.zeros((300, 0), dtype=np.float32)
    assert diagnostics.fit_probe(empty[:200], labels[:200], empty[200:], labels[200:]) == expected


@pytest.mark.parametrize("name", ["mozafari2018", "inception2024", "deepr2024", "resnet2024"])
def test_diagnostics_match_a_per_sample_loop(name):
    torch.manual_seed(0)
    # thresholds above the defaults: untrained weights (mean 0.8) fire nearly everywhere
    settings = {"frontend.time_steps": 6, "conv1.threshold": 40.0, "conv2.threshold": 60.0}
    if name in ("deepr2024", "resnet2024"):
        settings["conv3.threshold"] = 250.0
    model = models.create_model(name, num_classes=3, settings=settings)
    with torch.no_grad():
        model.blocks[0].conv.weight[:5] = 0         # five conv1 features that never fire
    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(40, 1, 28, 28, generator=gen) > 0.97).float()
    times = model.frontend.build()(images).numpy()
    labels = np.arange(40) % 3
    got = diagnostics.layer_diagnostics(model, times[:20], labels[:20], times[20:], labels[20:], probe_samples=20)
    nodes = diagnostics.layer_nodes(model)
    names = [n for n, _, _ in nodes]
    assert list(got) == names + ["decision"]
    # the slow way: one validation sample at a time
    val = torch.as_tensor(times[20:])
    fired = {n: [] for n in names}
    wins = {}
    decided = []
    for i in range(len(val)):
        x = val[i:i + 1]
        for n, _, block in nodes:
            for layer in block.stdp_layers():
                w = layer.learning_winners(x)[0][0, :, 0]
                wins.setdefault(layer.name, []).extend(int(f) for f in w if f >= 0)
            x = block.forward_times(x)
            fired[n].append((x < model.time_steps).numpy()[0])
        decided.append(int(model.predict(val[i:i + 1]).classes[0]))
    for n in names:
        maps = np.stack(fired[n])
        assert got[n]["active"] == pytest.approx(maps.mean())
        assert n != "conv1" or (0.05 < maps.mean() < 0.95 and got[n]["silent_features"] == pytest.approx(5 / 30))
        never_fire = [not maps[:, c].any() for c in range(maps.shape[1])]
        assert got[n]["silent_features"] == pytest.approx(np.mean(never_fire))
        assert 0.0 <= got[n]["probe_accuracy"] <= 1.0
    layers = {layer.name: layer for _, _, b in nodes for layer in b.stdp_layers()}
    for layer_name, layer in layers.items():
        node = next(n for n in names if n == layer_name or layer_name in n.split("+"))
        prefix = "" if node == layer_name else f"{layer_name}."
        counts = np.bincount(wins.get(layer_name, []), minlength=layer.spec.out_channels)
        assert got[node][prefix + "never_win"] == pytest.approx((counts == 0).mean())
        assert got[node][prefix + "winner_evenness"] == pytest.approx(diagnostics.evenness(counts))
    decided = np.array(decided)
    decided = decided[decided >= 0]
    share = np.bincount(decided).max() / len(decided) if len(decided) else 0.0
    assert got["decision"]["top_class_share"] == pytest.approx(share)


def test_diagnostics_skip_models_without_blocks_and_probes_on_request():
    torch.manual_seed(0)
    model = models.create_model("mozafari2018", num_classes=2, settings={"frontend.time_steps": 4})
    times = model.frontend.build()(torch.rand(8, 1, 16, 16)).numpy()
    labels = np.arange(8) % 2
    got = diagnostics.layer_diagnostics(model, times, labels, times, labels, probe_samples=0)
    assert all("probe_accuracy" not in values for values in got.values())
    other = models.create_model("tavanaei2017")
    assert diagnostics.layer_diagnostics(other, times, labels, times, labels) == {}
