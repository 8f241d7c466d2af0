"""The first-spike-time fast paths give exactly what the wave primitives give."""
import copy as copy_module

import pytest
import torch
import torch.nn.functional as F

import spiking
from spiking import functional as sf
from spiking import engine
from spiking import times as st
from tests import reference as ref
from tests.conftest import random_times


def wave_of(times, steps):
    return st.times_to_wave(times, steps)


def test_times_wave_round_trip(gen):
    times = random_times(3, 4, 5, 6, 7, generator=gen)
    wave = wave_of(times, 7)
    assert wave.shape == (3, 7, 4, 5, 6) and (wave[:, 1:] >= wave[:, :-1]).all()
    assert torch.equal(st.wave_to_times(wave), times)
    assert torch.equal(st.final_map(times, 7), wave[:, -1])


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, None, 0), (2, 2, 1), (3, 2, 1)])
def test_pool_and_pad_times(gen, kernel, stride, padding):
    times = random_times(2, 3, 9, 9, 6, generator=gen)
    pooled = st.pool_times(times, kernel, stride, padding)
    assert torch.equal(wave_of(pooled, 6), sf.pooling(wave_of(times, 6), kernel, stride, padding))
    padded = st.pad_times(times, (1, 2, 0, 3), 6)
    assert torch.equal(wave_of(padded, 6), sf.pad(wave_of(times, 6), (1, 2, 0, 3)))


def layer(seed, features=8, channels=4, k=3, dyadic=False):
    torch.manual_seed(seed)
    conv = spiking.Convolution(channels, features, k, 0.8, 0.05)
    if dyadic:   # exactly representable sums: equality holds whatever the summation order
        conv.weight.copy_((conv.weight * 16).round() / 16)
    return conv


@pytest.mark.parametrize("chunk", [None, 1, 4])
@pytest.mark.parametrize("seed", range(3))
def test_conv_fire_times_equals_conv_then_fire(seed, chunk):
    gen = torch.Generator().manual_seed(seed)
    conv = layer(seed)
    times = random_times(5, 4, 10, 10, 15, never=0.5, generator=gen)
    pot = conv(wave_of(times, 15))
    spikes, thresholded = sf.fire(pot, 6.0, True)
    out_times, values = st.conv_fire_times(times, conv.weight, 6.0, 15, chunk=chunk)
    assert torch.equal(out_times, st.wave_to_times(spikes))
    first = out_times.long().clamp(max=14).unsqueeze(1)
    expected_values = thresholded.gather(1, first).squeeze(1)
    assert torch.equal(values, expected_values)


@pytest.mark.parametrize("seed", range(4))
def test_inhibition_and_winners_from_times_equal_wave_path(seed):
    gen = torch.Generator().manual_seed(seed)
    conv = layer(seed, dyadic=seed % 2 == 0)     # dyadic weights: many exact potential ties
    times = random_times(4, 4, 12, 12, 15, never=0.4, generator=gen)
    pot = conv(wave_of(times, 15))
    _, thresholded = sf.fire(pot, 5.0, True)
    inhibited = sf.pointwise_inhibition(thresholded)
    spikes = inhibited.sign()
    out_times, values = st.conv_fire_times(times, conv.weight, 5.0, 15)
    inh_times, inh_values = st.pointwise_inhibition_times(out_times, values, 15)
    assert torch.equal(inh_times, st.wave_to_times(spikes))
    assert torch.equal(inh_values, inhibited.gather(1, inh_times.long().clamp(max=14).unsqueeze(1)).squeeze(1))
    for kwta, radius in [(1, 0), (5, 3), (8, 1), (20, 0)]:
        expected = sf.get_k_winners(inhibited, kwta, radius, spikes)
        assert torch.equal(st.k_winners_times(inh_times, inh_values, 15, kwta, radius), expected)


def test_winner_scores_bit_identical_to_wave_scores(gen):
    conv = layer(7, features=30, channels=6, k=5)
    times = random_times(3, 6, 20, 20, 15, never=0.6, generator=gen)
    pot = conv(wave_of(times, 15))
    _, thresholded = sf.fire(pot, 3.0, True)
    spikes = thresholded.sign()
    first = (15 - spikes.sum(1, keepdim=True)).long().clamp(0, 14)
    values = pot.gather(1, first)
    truncated = spikes * values
    v = truncated.flatten(1).max(1).values.mul(15).view(-1, 1, 1, 1, 1)
    wave_scores = truncated.addcmul(spikes, v).sum(1)
    out_times, out_values = st.conv_fire_times(times, conv.weight, 3.0, 15)
    assert torch.equal(st.winner_scores(out_times, out_values, 15), wave_scores)


@pytest.mark.parametrize("seed", range(3))
def test_decision_from_final_map_equals_full_wave_decision(seed):
    gen = torch.Generator().manual_seed(seed)
    conv = layer(seed, features=20, channels=6, k=3)
    times = random_times(6, 6, 7, 7, 15, never=0.7, generator=gen)
    pot = conv(wave_of(times, 15))
    expected = sf.get_k_winners(pot, 1, 0, sf.fire(pot))
    final = sf.conv2d(st.final_map(times, 15), conv.weight)
    assert torch.equal(final, pot[:, -1])
    assert torch.equal(sf.select_winners(st.decision_scores(final, 15), 1, 0), expected)


def test_hidden_layer_final_map_equals_spiked_by_last_step(gen):
    conv = layer(3)
    times = random_times(4, 4, 9, 9, 15, generator=gen)
    out_times, _ = st.conv_fire_times(times, conv.weight, 7.0, 15)
    final = (sf.conv2d(st.final_map(times, 15), conv.weight) > 7.0).float()
    assert torch.equal(final, st.final_map(out_times, 15))


@pytest.mark.parametrize("steps", [1, 4, 15])
@pytest.mark.parametrize("seed", range(4))
def test_earliest_spikes_equal_conv_fire_then_inhibit(seed, steps):
    gen = torch.Generator().manual_seed(seed)
    conv = layer(seed, features=20, channels=5, k=3, dyadic=True)
    times = random_times(4, 5, 11, 11, steps, never=0.4, generator=gen)
    survivors = engine.earliest_spikes(times, conv.weight, 4.0, steps)
    expected = st.pointwise_inhibition_times(*st.conv_fire_times(times, conv.weight, 4.0, steps), steps)
    dense_times, dense_values = survivors.dense()
    assert torch.equal(dense_times, expected[0]) and torch.equal(dense_values, expected[1])
    for kwta, radius in [(1, 0), (5, 2), (8, 1), (30, 0)]:
        assert torch.equal(engine.survivor_winners(survivors, kwta, radius),
                           st.k_winners_times(*expected, steps, kwta, radius))


def test_earliest_spikes_with_float_weights_agree_with_wave_path(gen):
    conv = layer(11, features=30, channels=6, k=5)
    times = random_times(6, 6, 16, 16, 15, never=0.6, generator=gen)
    survivors = engine.earliest_spikes(times, conv.weight, 15.0, 15)
    pot = conv(wave_of(times, 15))
    inhibited = sf.pointwise_inhibition(sf.threshold(pot, 15.0))
    dense_times, dense_values = survivors.dense()
    assert torch.equal(dense_times, st.wave_to_times(inhibited.sign()))
    expected_values = inhibited.gather(1, dense_times.long().clamp(max=14).unsqueeze(1)).squeeze(1)
    assert torch.allclose(dense_values, expected_values, rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 4, 15, 17])
@pytest.mark.parametrize("dyadic", [True, False])
def test_sample_winners_equal_the_batched_winners(steps, dyadic, gen):
    """The exact mode's one-sample path picks what the batched pass picks (dyadic weights:
    frequent exact ties, so the tie rule is exercised), and returns the winners' receptive
    fields in the weight's order."""
    conv = layer(3, features=20, channels=5, k=3, dyadic=dyadic)
    times = random_times(12, 5, 9, 11, steps, never=0.4, generator=gen)
    threshold = 4.0 if dyadic else 3.3
    survivors = engine.earliest_spikes(times, conv.weight, threshold, steps)
    fields = F.unfold(times.float(), 3).transpose(1, 2)            # [B, L, C * kh * kw]
    picked = 0
    for kwta, radius in [(1, 0), (5, 2), (8, 1), (30, 0)]:
        expected = engine.survivor_winners(survivors, kwta, radius)
        for b in range(12):
            features, positions, found, won = engine.sample_winners(times[b], conv.weight, threshold, steps,
                                                                    kwta, radius)
            valid = expected[b][expected[b, :, 0] >= 0]
            assert features == valid[:, 0].tolist()
            assert positions == (valid[:, 1] * 9 + valid[:, 2]).tolist()
            assert found == survivors.times[b, valid[:, 1], valid[:, 2]].tolist()
            assert torch.equal(won, fields[b, positions])
            picked += len(features)
    assert picked > 12 * 4      # most samples have winners


def test_sample_winners_break_near_ties_as_the_batched_pass(gen):
    """Survivor values a few float32 ulps apart, at 1x1 kernels (one spiking channel per
    position, some positions silent): whether two scores round to a tie depends on how the
    sum over time is reduced. The one-sample path scores only the spiking positions; with
    `.sum` over the time dimension that broke 10-20 of these 20 maps, with the step-by-step
    sum it must not."""
    features = channels = 30
    f, c = torch.arange(features).view(-1, 1), torch.arange(channels).view(1, -1)
    weight = (16 + ((f + c) % features) * 7e-6 + c * 1e-6).view(features, channels, 1, 1)
    for _ in range(20):
        times = torch.full((1, channels, 24, 24), 15, dtype=torch.uint8)
        times.scatter_(1, torch.randint(0, channels, (1, 1, 24, 24), generator=gen),
                       torch.randint(0, 3, (1, 1, 24, 24), generator=gen).to(torch.uint8))
        times[:, :, torch.rand(24, 24, generator=gen) < 0.4] = 15
        expected = engine.survivor_winners(engine.earliest_spikes(times, weight, 15.0, 15), 30, 0)[0]
        expected = expected[expected[:, 0] >= 0]
        found, positions, _, _ = engine.sample_winners(times[0], weight, 15.0, 15, 30, 0)
        assert found == expected[:, 0].tolist() and positions == (expected[:, 1] * 24 + expected[:, 2]).tolist()


@pytest.mark.parametrize("steps", [15, 17])
@pytest.mark.parametrize("side", [5, 6, 7, 10, 14])
def test_equal_neurons_tie_and_the_first_flat_index_wins_on_every_map(side, steps):
    """Every neuron of the map spikes at the same step with the same value, so every score is
    the same sum: the first flat index must win, in the times path, the wave path and the
    spec's reference (a `.sum` over time rounded such sums by position: 6 x 6 at T = 15)."""
    times = torch.zeros(1, side, side, dtype=torch.long)
    values = torch.full((1, side, side), 3.3)
    survivors = engine.Survivors(times, torch.zeros_like(times), values, 2, steps)
    assert engine.survivor_winners(survivors, 1, 0)[0].tolist() == [[0, 0, 0]]
    potentials = torch.full((1, steps, 2, side, side), 3.3)
    potentials[:, :, 1] = 0.0
    assert sf.get_k_winners(potentials, 1, 0)[0].tolist() == [[0, 0, 0]]
    assert ref.get_k_winners(potentials[0], 1, 0) == [(0, 0, 0)]
    score = st.winner_scores(times.unsqueeze(1).to(torch.uint8), values.unsqueeze(1), steps)
    assert torch.equal(score, torch.full_like(score, float(score.flatten()[0])))


def test_forward_matrix_follows_patches_and_outside_changes(gen):
    """`forward_matrix` is remembered through one-sample updates patched in (their rows only),
    and rebuilt after any other in-place change; subnormal rows are multiplied as zeros."""
    weight = layer(4, features=18, channels=3, k=2).weight.detach().clone()

    def fresh():          # (kh, kw, C) rows, 16-wide zero-padded columns, subnormals as zeros
        flushed = torch.where(weight.abs() < torch.finfo(torch.float32).tiny, 0.0, weight)
        return F.pad(flushed.permute(0, 2, 3, 1).reshape(18, -1).t(), (0, 14))

    first = engine.forward_matrix(weight, 1.0)
    assert torch.equal(first, fresh()) and first.shape == (2 * 2 * 3, 32)
    rows = torch.tensor([2, 17])
    for scale in (1.0, 1e-39):                                  # 1e-39: subnormal rows
        since = weight._version
        weight[rows] = torch.rand(2, 3, 2, 2, generator=gen) * scale
        engine.patch_forward_matrix(weight, 1.0, rows, since)
        assert engine.forward_matrix(weight, 1.0) is first and torch.equal(first, fresh())
    weight[5, 0, 1, 1] = 0.75                                   # a change without a patch
    assert torch.equal(engine.forward_matrix(weight, 1.0), fresh())
    stale = engine.forward_matrix(weight, 1.0)
    weight[3] = 0.5                                             # unpatched, then a patch: forgotten
    since = weight._version
    weight[rows] = 0.25
    engine.patch_forward_matrix(weight, 1.0, rows, since)
    assert torch.equal(engine.forward_matrix(weight, 1.0), fresh()) and not torch.equal(stale, fresh())


@pytest.mark.parametrize("steps", [1, 6, 15])
def test_spike_times_equal_direct_per_step_path(steps, gen):
    conv = layer(5, features=12, channels=4, k=3, dyadic=True)
    times = random_times(5, 4, 10, 10, steps, never=0.5, generator=gen)
    expected, _ = st.conv_fire_times(times, conv.weight, 3.0, steps)
    assert torch.equal(engine.spike_times(times, conv.weight, 3.0, steps), expected)
    float_conv = layer(6, features=12, channels=4, k=3)
    assert torch.equal(engine.spike_times(times, float_conv.weight, 3.0, steps),
                       st.conv_fire_times(times, float_conv.weight, 3.0, steps)[0])


def test_forward_weight_zeroes_exactly_the_subnormal_weights():
    tiny = torch.finfo(torch.float32).tiny                  # 2**-126, the smallest normal float32
    weight = torch.tensor([0.0, -0.0, tiny, tiny / 2, -tiny / 4, 1e-45, 3e-39, -tiny, 0.5, 1.0])
    flushed = engine.forward_weight(weight, 10.0)
    subnormal = (weight != 0) & (weight.abs() < tiny)
    assert torch.equal(flushed == 0, (weight == 0) | subnormal)
    assert torch.equal(flushed[~subnormal], weight[~subnormal])     # the others bit for bit
    # below the threshold the argument needs, and for float64's own subnormals' scale
    assert engine.forward_weight(weight, 0.0) is weight
    assert torch.equal(engine.forward_weight(weight.double(), 10.0), weight.double())


@pytest.mark.parametrize("steps", [6, 15])
def test_subnormal_weights_change_no_spike(steps, gen):
    """A trained layer's weights: most decayed into subnormals by the stabiliser. The fast
    paths (which multiply them as zeros) give the spikes of the float64 weights, whose
    subnormals are ordinary numbers, and of the float32 wave path."""
    conv = layer(7, features=16, channels=6, k=3)
    weight = conv.weight.detach().clone()
    decayed = torch.rand(weight.shape, generator=gen) < 0.8
    weight[decayed] = torch.rand(int(decayed.sum()), generator=gen) * torch.finfo(torch.float32).tiny
    assert bool(((weight > 0) & (weight < torch.finfo(torch.float32).tiny)).any())
    times = random_times(5, 6, 12, 12, steps, never=0.3, generator=gen)
    threshold = 0.6
    expected = engine.spike_times(times, weight.double(), threshold, steps)
    assert (expected < steps).any() and (expected == steps).any()       # some spike, some do not
    assert torch.equal(engine.spike_times(times, weight, threshold, steps), expected)
    assert torch.equal(st.conv_fire_times(times, weight, threshold, steps)[0], expected)
    survivors = engine.earliest_spikes(times, weight, threshold, steps)
    reference = engine.earliest_spikes(times, weight.double(), threshold, steps)
    assert torch.equal(survivors.times, reference.times) and torch.equal(survivors.features, reference.features)


def test_forward_weight_follows_in_place_updates():
    """The flushed copy is remembered until the weights change in place (a learning step)."""
    tiny = torch.finfo(torch.float32).tiny
    weight = torch.full((4, 3), 0.5)
    first = engine.forward_weight(weight, 10.0)
    assert engine.forward_weight(weight, 10.0) is first
    weight.view(2, 6)[1, 0] = tiny / 8                       # through a view, as the rules write rows
    second = engine.forward_weight(weight, 10.0)
    assert second is not first and second[2, 0] == 0 and torch.equal(second[:2], weight[:2])
    weight[0, 0] = 0.25
    assert engine.forward_weight(weight, 10.0)[0, 0] == 0.25
    copy = copy_module.deepcopy(weight)                     # a model snapshot: its own storage
    copy.fill_(1.0)
    assert torch.equal(engine.forward_weight(copy, 10.0), copy)


def test_bisect_answers_the_last_step_where_no_probe_crosses():
    """Rows are chosen by another product than the probes', which can round a potential a hair
    above the threshold that no probe then reaches: the answer is the last step, with the
    chosen potentials (as before the search was rewritten), never a step past the map."""
    for steps in (1, 2, 3, 8, 15, 16, 17):
        fields = torch.full((3, 4), float(steps))               # nothing ever spikes in the probes
        matrix = torch.ones(4, 16)
        final = torch.full((3, 16), 2.0)
        found, best = engine._bisect(fields, final, matrix, 1.0, steps)
        assert found.tolist() == [steps - 1] * 3 and torch.equal(best, final)
