"""Exact batched STDP in hidden layers: every batch size computes SpykeTorch's per-sample
algorithm across learning-rate doublings, threshold adaptation and out-of-bound initial
weights (the R-STDP and online learners' counterparts are in test_exact.py)."""
import pytest
import torch
import torch.nn.functional as F

import models
from models.layers import HiddenLayer, HiddenSpec
from models.stages import STDPStage
from spiking import times as st
from tests.conftest import BATCHES, drive, random_times


def stdp_run(batch, times, spec, exact=True):
    torch.manual_seed(0)
    layer = HiddenLayer(spec, 15, "conv")
    stage = STDPStage("conv", layer, input_node=0)
    stage.configure(exact=exact, seed=0)
    counts = drive(stage, times, torch.zeros(len(times), dtype=torch.long), batch)
    return layer, sum(c["winners"] for c in counts)


@pytest.mark.parametrize("inhibit_input", [False, True])
def test_stdp_stage_is_the_same_at_every_batch_size_across_rate_doublings(inhibit_input, gen, exact_path):
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=1, pad=1, rate_doubling_every=40, inhibit_input=inhibit_input)
    times = random_times(200, 4, 8, 8, 15, never=0.5, generator=gen)
    # the reference: one sample per batch through the batched forward pass and summed update
    # (one sample's sum is its own update), not the exact mode's one-sample path
    reference, won = stdp_run(1, times, spec, exact=False)
    assert float(reference.stdp.a_plus[0]) == pytest.approx(0.004 * 2 ** 5)     # 5 doublings
    for batch in BATCHES:
        layer, count = stdp_run(batch, times, spec)
        assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0), batch
        assert count == won and int(layer.samples_seen) == 200
        assert torch.equal(layer.stdp.a_plus, reference.stdp.a_plus)


def test_a_silent_sample_clamps_weights_outside_the_bounds(gen, exact_path):
    """SpykeTorch clamps after every sample, winners or not: weights drawn above the upper
    bound are clamped by a first sample that is silent, before the next sample's forward pass."""
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=1, pad=1)
    times = random_times(40, 4, 8, 8, 15, never=0.5, generator=gen)
    times[0] = 15                                              # silent: no input ever spikes
    runs = []
    for batch, exact in ((1, False), (1, True), (7, True)):
        torch.manual_seed(0)
        layer = HiddenLayer(spec, 15, "conv")
        layer.conv.weight[::2, 0] = 5.0                        # outside [0, 1]
        stage = STDPStage("conv", layer, input_node=0)
        stage.configure(exact=exact, seed=0)
        counts = drive(stage, times, torch.zeros(40, dtype=torch.long), batch)
        runs.append((layer.conv.weight.clone(), sum(c["winners"] for c in counts)))
        assert counts[0]["winners"] == 0 or batch > 1
    for weight, won in runs[1:]:
        assert torch.allclose(weight, runs[0][0], atol=1e-5, rtol=0) and won == runs[0][1]


def test_threshold_adaptation_is_the_same_at_every_batch_size(gen, exact_path):
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=1, pad=1, pool=2, rate_doubling_every=40,
                      target_activity=0.25, adapt_every=50)
    times = random_times(230, 4, 8, 8, 15, never=0.5, generator=gen)
    thresholds = {}
    for batch in BATCHES:
        torch.manual_seed(0)
        layer = HiddenLayer(spec, 15, "conv")
        stage = STDPStage("conv", layer, input_node=0)
        seen = []
        original = layer.calibrate
        layer.calibrate = lambda t: seen.append((len(t), original(t))) or seen[-1][1]
        drive(stage, times, torch.zeros(len(times), dtype=torch.long), batch)
        thresholds[batch] = (layer, seen)
    reference, seen = thresholds[1]
    # four windows of 50 and the after-epoch calibration on the epoch's first 230 samples
    assert [n for n, _ in seen] == [50, 50, 50, 50, 230]
    assert len({round(t, 3) for _, t in seen}) > 1 and reference.threshold == seen[-1][1]
    for batch in BATCHES[1:]:
        layer, other = thresholds[batch]
        assert [n for n, _ in other] == [n for n, _ in seen], batch
        assert [t for _, t in other] == pytest.approx([t for _, t in seen], rel=1e-5), batch
        assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0), batch


def test_calibration_reaches_the_target_activity(gen):
    spec = HiddenSpec(in_channels=4, out_channels=6, kernel_size=3, threshold=1.0, kwta=1,
                      inhibition_radius=0, pad=1, pool=2, target_activity=0.3)
    torch.manual_seed(2)
    layer = HiddenLayer(spec, 15, "conv")
    times = random_times(40, 4, 8, 8, 15, never=0.5, generator=gen)
    threshold = layer.calibrate(times, batch_size=7)
    final = layer.forward_final(st.final_map(times, 15))
    # the slow way: every pooled output's final potential, counted above the threshold
    potentials = F.max_pool2d(F.conv2d(F.pad(st.final_map(times, 15), (1, 1, 1, 1)), layer.conv.weight), 2)
    assert int((potentials > threshold).sum()) == int(final.sum()) == round(0.3 * potentials.numel())
    assert layer.state_dict()["calibrated_threshold"] == threshold
    with pytest.raises(ValueError, match="adapt_every .* needs a target_activity"):
        models.create_model("mozafari2018", settings={"conv1.adapt_every": 100})
