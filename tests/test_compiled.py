"""The compiled exact conv STDP loop (`spiking.compiled`) against a slow per-sample reference
written from the spec (tests/reference.py), and against the tensor path it replaces on the CPU."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.layers import HiddenLayer, HiddenSpec
from models.stages import STDPStage
from spiking import compiled, engine
from tests import reference as ref
from tests.conftest import BATCHES, drive, random_times

pytestmark = pytest.mark.skipif(not compiled.ENABLED, reason="numba is not installed")

STEPS = 15


def reference_run(times, weight, threshold, kwta, radius, a_plus, a_minus, stabilizer, lower, upper):
    """SpykeTorch's loop, one sample at a time: potentials of every step (the float32 rounding
    of their exact sum: a float64 convolution, exact for these weights), fire, pointwise
    inhibition, k-WTA, STDP, clamp. Returns (winners per sample, final weight)."""
    weight = weight.clone()
    found = []
    for sample in times:
        wave = (sample.unsqueeze(0) <= torch.arange(STEPS).view(-1, 1, 1, 1)).float()    # [T, C, H, W]
        potentials = F.conv2d(wave.double(), weight.double()).float()
        inhibited = ref.pointwise_inhibition(ref.threshold(potentials, threshold))
        spikes = np.sign(inhibited)
        winners = ref.get_k_winners(inhibited, kwta, radius, spikes=spikes)
        found.append(winners)
        rates = [np.full(len(weight), rate, dtype=np.float32) for rate in (a_plus, a_minus)]
        new, _ = ref.stdp_update(weight, wave, spikes, winners, *rates, stabilizer, lower, upper)
        weight = torch.from_numpy(new)
    return found, weight


def compiled_run(times, weight, batch, threshold, kwta, radius, a_plus, a_minus, stabilizer, lower, upper):
    weight = weight.clone()
    features = weight.shape[0]
    plus, minus = torch.full((features,), a_plus), torch.full((features,), a_minus)
    found = []
    for start in range(0, len(times), batch):
        bounded = bool(((weight >= lower) & (weight <= upper)).all())
        winners = compiled.stdp_sequential_(times[start:start + batch], weight, threshold, STEPS, kwta, radius,
                                            plus, minus, stabilizer, lower, upper, bounded)
        found += [[tuple(w) for w in sample.tolist() if w[0] >= 0] for sample in winners]
    return found, weight


CASES = {
    # name: (threshold, kwta, radius, rates, stabilizer, bounds, weights)
    "stabilised": (3.0, 2, 1, (0.05, -0.04), True, (0.0, 1.0), "normal"),
    "plain, far radius": (2.5, 3, 2, (0.05, -0.04), False, (0.0, 1.0), "normal"),
    "outside the bounds at first": (3.0, 2, 0, (0.05, -0.04), True, (0.0, 1.0), "outside"),
    # integer weights and rates: potentials and scores tie all the time (tie rules)
    "integer ties": (4.0, 3, 1, (1.0, -1.0), False, (0.0, 3.0), "integer"),
}


@pytest.mark.parametrize("case", CASES)
def test_compiled_stdp_is_the_per_sample_reference(case, gen):
    threshold, kwta, radius, (a_plus, a_minus), stabilizer, (lower, upper), kind = CASES[case]
    times = random_times(40, 4, 8, 8, STEPS, never=0.5, generator=gen)
    if kind == "integer":
        weight = torch.randint(0, 3, (6, 4, 3, 3), generator=gen).float()
    else:
        weight = (0.8 + 0.05 * torch.randn(6, 4, 3, 3, generator=gen)).float()
        if kind == "outside":
            weight[::2, 0] = 1.5
    expected, expected_weight = reference_run(times, weight, threshold, kwta, radius, a_plus, a_minus,
                                              stabilizer, lower, upper)
    assert sum(map(len, expected)) > 40                              # winners to learn from
    for batch in (1, 7, 40):
        found, learned = compiled_run(times, weight, batch, threshold, kwta, radius, a_plus, a_minus,
                                      stabilizer, lower, upper)
        assert found == expected, batch
        assert torch.equal(learned, expected_weight), batch


def stage_run(batch, times, spec):
    torch.manual_seed(0)
    layer = HiddenLayer(spec, STEPS, "conv")
    stage = STDPStage("conv", layer, input_node=0)
    stage.configure(exact=True, seed=0)
    counts = drive(stage, times, torch.zeros(len(times), dtype=torch.long), batch)
    return layer, sum(c["winners"] for c in counts)


@pytest.mark.parametrize("inhibit_input", [False, True])
def test_compiled_stage_gives_the_same_bits_at_every_batch_size(inhibit_input, gen):
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=1, pad=1, rate_doubling_every=40, inhibit_input=inhibit_input)
    times = random_times(200, 4, 8, 8, STEPS, never=0.5, generator=gen)
    reference, won = stage_run(1, times, spec)
    for batch in BATCHES[1:]:
        layer, count = stage_run(batch, times, spec)
        assert torch.equal(layer.conv.weight, reference.conv.weight), batch
        assert count == won


@pytest.mark.parametrize("steps, kwta, radius, grid, threshold", [
    (15, 2, 1, 1.0, 4.0), (17, 5, 0, 1 / 16, 2.5), (20, 3, 2, 1 / 8, 3.0)])
def test_the_tensor_path_learns_what_the_compiled_loop_learns(steps, kwta, radius, grid, threshold, gen,
                                                              monkeypatch):
    """Where every sum is exact (weights and rates on a grid, no stabiliser) the engine's
    float32 GEMMs and the compiled loop's rounding agree, and both sum scores step after step,
    so the two exact paths must give the same bits, ties included."""
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=threshold, kwta=kwta,
                      inhibition_radius=radius, pad=1, learning_rate=(grid, -grid), use_stabilizer=False,
                      upper_bound=3 * grid if grid == 1.0 else 1.0, rate_doubling_every=0)
    times = random_times(120, 4, 8, 8, steps, never=0.5, generator=gen)
    start = torch.randint(0, 3 if grid == 1.0 else int(1 / grid) + 1, (8, 4, 3, 3), generator=gen) * grid
    runs = {}
    for enabled in (True, False):
        monkeypatch.setattr(compiled, "ENABLED", enabled)
        torch.manual_seed(0)
        layer = HiddenLayer(spec, steps, "conv")
        with torch.no_grad():
            layer.conv.weight.copy_(start)
        stage = STDPStage("conv", layer, input_node=0)
        stage.configure(exact=True, seed=0)
        counts = drive(stage, times, torch.zeros(len(times), dtype=torch.long), 32)
        runs[enabled] = (layer.conv.weight.detach().clone(), sum(c["winners"] for c in counts))
    assert runs[True][1] > 120
    assert torch.equal(runs[True][0], runs[False][0]) and runs[True][1] == runs[False][1]


def test_an_empty_batch_leaves_weights_outside_the_bounds_to_the_next_sample(gen):
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=0, pad=1)
    torch.manual_seed(0)
    layer = HiddenLayer(spec, STEPS, "conv")
    with torch.no_grad():
        layer.conv.weight[0] = 1.5
    times = random_times(2, 4, 8, 8, STEPS, never=0.5, generator=gen)
    times[1] = STEPS                                           # silent
    layer.learn(times[:0])
    assert float(layer.conv.weight.max()) == 1.5
    layer.learn(times[1:])                                     # a silent sample still clamps
    assert float(layer.conv.weight.max()) <= 1.0


def test_compiled_updates_reach_the_caches_keyed_by_the_weights_version(gen):
    spec = HiddenSpec(in_channels=4, out_channels=8, kernel_size=3, threshold=3.0, kwta=2,
                      inhibition_radius=0, pad=1)
    torch.manual_seed(0)
    layer = HiddenLayer(spec, STEPS, "conv")
    weight = layer.conv.weight
    before = engine.forward_matrix(weight, layer.threshold).clone()
    version = weight._version
    layer.learn(random_times(8, 4, 8, 8, STEPS, never=0.5, generator=gen))
    assert weight._version > version
    after = engine.forward_matrix(weight, layer.threshold)
    assert not torch.equal(after, before)
    assert torch.equal(after[:, :8], weight.detach().permute(0, 2, 3, 1).reshape(8, -1).t())


def test_usable_only_on_cpu_uint8_times_and_float32_weights(monkeypatch):
    times, weight = torch.zeros(1, 2, 5, 5, dtype=torch.uint8), torch.zeros(3, 2, 3, 3)
    assert compiled.usable(times, weight)
    assert not compiled.usable(times.float(), weight)
    assert not compiled.usable(times, weight.double())
    assert not compiled.usable(times, weight.transpose(0, 1))
    monkeypatch.setattr(compiled, "ENABLED", False)
    assert not compiled.usable(times, weight)


def test_a_loop_compiles_uncached_where_numba_has_nowhere_to_write_its_cache(monkeypatch):
    """numba raises at decoration time when no cache directory is writable (a read-only install,
    no home directory): `_jit` then compiles without the disk cache instead of failing the import."""
    asked = []

    def njit(cache=False, nogil=False):
        asked.append(cache)
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'compiled.py'")
        return lambda function: function

    monkeypatch.setattr(compiled.numba, "njit", njit)
    assert compiled._jit(abs)(-3) == 3 and asked == [True, False]
