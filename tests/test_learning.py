"""STDP and R-STDP: slow reference, batched == summed singles, hand-built spike trains."""
import numpy as np
import pytest
import torch

import spiking
from spiking import functional as sf
from spiking.learning import RSTDP, STDP, dense_rates, stdp_rates
from spiking.times import times_to_wave
from tests import reference as ref
from tests.conftest import random_wave


def make_layer(features=4, channels=3, k=3, seed=0):
    torch.manual_seed(seed)
    return spiking.Convolution(channels, features, k, 0.5, 0.15)


def hidden_step(conv, wave, threshold=2.0, kwta=3, radius=1):
    pot = conv(wave)
    spikes, thresholded = sf.fire(pot, threshold, True)
    inhibited = sf.pointwise_inhibition(thresholded)
    spikes = inhibited.sign()
    return inhibited, spikes, sf.get_k_winners(inhibited, kwta, radius, spikes)


@pytest.mark.parametrize("stabilizer", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_stdp_single_sample_matches_reference(stabilizer, seed):
    gen = torch.Generator().manual_seed(seed)
    conv = make_layer(seed=seed)
    wave = random_wave(1, 3, 8, 8, 6, never=0.4, generator=gen)
    pot, spikes, winners = hidden_step(conv, wave)
    rates = [(0.01 * (f + 1), -0.005 * (f + 1)) for f in range(4)]
    rule = STDP(conv, rates, use_stabilizer=stabilizer, lower_bound=0.1, upper_bound=0.9)
    expected, _ = ref.stdp_update(conv.weight, wave[0], spikes[0], [tuple(w) for w in winners[0].tolist() if w[0] >= 0],
                                  [r[0] for r in rates], [r[1] for r in rates], stabilizer, 0.1, 0.9)
    rule(wave, pot, spikes, winners)
    np.testing.assert_array_equal(conv.weight.numpy(), expected)


@pytest.mark.parametrize("stabilizer", [True, False])
def test_update_one_equals_the_reference_rule(stabilizer, gen):
    """The exact mode's one-sample update, from the winners' receptive fields as spike times."""
    from tests.conftest import random_times
    for seed in range(4):
        conv = make_layer(seed=seed)
        conv.weight.clamp_(0.1, 0.9)        # update_one's rows start within the bounds
        times = random_times(1, 3, 8, 8, 6, never=0.4, generator=gen)
        wave = times_to_wave(times, 6)
        _, spikes, winners = hidden_step(conv, wave)
        won = [tuple(w) for w in winners[0].tolist() if w[0] >= 0]
        rates = [(0.01 * (f + 1), -0.005 * (f + 1)) for f in range(4)]
        expected, _ = ref.stdp_update(conv.weight, wave[0], spikes[0], won, [r[0] for r in rates],
                                      [r[1] for r in rates], stabilizer, 0.1, 0.9)
        fields = torch.nn.functional.unfold(times.float(), 3)[0].t()[[r * 6 + c for _, r, c in won]]
        post = [int(spikes[0, :, f, r, c].sum()) for f, r, c in won]       # spiking steps
        moved = STDP(conv, rates, use_stabilizer=stabilizer, lower_bound=0.1, upper_bound=0.9).update_one(
            fields, torch.tensor([f for f, _, _ in won]), torch.tensor([6 - p for p in post]))
        assert moved
        np.testing.assert_array_equal(conv.weight.numpy(), expected)
    # weights far below any float32 potential's resolution: an update of them does not matter
    conv = make_layer()
    conv.weight.fill_(2.0 ** -80)
    assert not STDP(conv, (0.5, -0.5)).update_one(torch.zeros(1, 27), torch.tensor([1]), torch.tensor([0]))


def test_batched_rates_are_the_sum_of_single_sample_rates(gen):
    conv = make_layer()
    wave = random_wave(5, 3, 8, 8, 6, generator=gen)
    pot, spikes, winners = hidden_step(conv, wave)
    rule = STDP(conv, (0.004, -0.003))
    pre, post, winners = rule._counts(wave, pot, spikes, winners, 1, 0)
    dense = lambda pair: dense_rates(*pair, 4)
    batched = dense(rule.rates(pre, post, winners))
    singles = sum(dense(rule.rates(pre[b:b + 1], post[b:b + 1], winners[b:b + 1])) for b in range(5))
    assert torch.allclose(batched, singles, atol=1e-7)
    for b in range(5):     # each single-sample rate table is the reference's
        _, expected = ref.stdp_update(conv.weight, wave[b], spikes[b],
                                      [tuple(w) for w in winners[b].tolist() if w[0] >= 0],
                                      [0.004] * 4, [-0.003] * 4, True, 0, 1)
        np.testing.assert_allclose(dense(rule.rates(pre[b:b + 1], post[b:b + 1], winners[b:b + 1])).numpy(),
                                   expected)
    w0 = conv.weight.clone()
    rule(wave, pot, spikes, winners)
    stab = (w0 - 0) * (1 - w0)
    assert torch.allclose(conv.weight, (w0 + batched * stab).clamp(0, 1), atol=1e-7)


def test_sequential_combine_equals_one_call_per_sample(gen):
    wave = random_wave(4, 3, 8, 8, 6, generator=gen)
    conv_a, conv_b = make_layer(), make_layer()
    pot, spikes, winners = hidden_step(conv_a, wave)
    STDP(conv_a, (0.05, -0.04))(wave, pot, spikes, winners, combine="sequential")
    rule_b = STDP(conv_b, (0.05, -0.04))
    for b in range(4):
        rule_b(wave[b:b + 1], pot[b:b + 1], spikes[b:b + 1], winners[b:b + 1])
    assert torch.equal(conv_a.weight, conv_b.weight)


def hand_built():
    """One input channel, 2x2 kernel on a 2x2 input, 3 features, T = 4; the winner is feature 1,
    spiking at t = 1. Input (0,0) spikes at t=0 (before), (0,1) at t=1 (same step), (1,0) at
    t=3 (after) and (1,1) never."""
    steps = 4
    times = torch.tensor([[0, 1], [3, steps]], dtype=torch.uint8).view(1, 1, 2, 2)
    wave = times_to_wave(times, steps)
    out_times = torch.full((1, 3, 1, 1), steps, dtype=torch.uint8)
    out_times[0, 1] = 1
    spikes = times_to_wave(out_times, steps)
    winners = torch.tensor([[[1, 0, 0]]])
    conv = spiking.Convolution(1, 3, 2)
    conv.weight.fill_(0.5)
    return wave, spikes, winners, conv


def test_pre_before_post_potentiates_post_before_pre_and_never_depress():
    wave, spikes, winners, conv = hand_built()
    STDP(conv, (0.1, -0.1), use_stabilizer=False)(wave, spikes, spikes, winners)
    w = conv.weight[1, 0]
    assert w[0, 0] > 0.5 and w[0, 1] > 0.5       # before and same step: LTP
    assert w[1, 0] < 0.5 and w[1, 1] < 0.5       # after and never: LTD
    assert conv.weight[0].eq(0.5).all() and conv.weight[2].eq(0.5).all()   # non-winners untouched


def test_anti_stdp_reverses_the_sign():
    wave, spikes, winners, conv = hand_built()
    STDP(conv, (-0.004, 0.0005), use_stabilizer=False)(wave, spikes, spikes, winners)
    w = conv.weight[1, 0]
    assert w[0, 0] == pytest.approx(0.496) and w[0, 1] == pytest.approx(0.496)
    assert w[1, 0] == pytest.approx(0.5005) and w[1, 1] == pytest.approx(0.5005)


def test_bounds_hold_and_stabilizer_shrinks_updates_near_bounds():
    wave, spikes, winners, conv = hand_built()
    conv.weight[1, 0] = torch.tensor([[0.5, 0.95], [0.5, 0.02]])
    rule = STDP(conv, (0.2, -0.2), use_stabilizer=True)
    rule(wave, spikes, spikes, winners)
    w = conv.weight[1, 0]
    assert w[0, 0] - 0.5 == pytest.approx(0.2 * 0.25)          # full-size step in the middle
    assert 0 < w[0, 1] - 0.95 < 0.2 * 0.25 / 2                 # shrunk near the upper bound
    assert 0 < 0.02 - w[1, 1] < 0.2 * 0.25 / 2                 # shrunk near the lower bound
    for _ in range(50):
        STDP(conv, (0.3, -0.3), use_stabilizer=False)(wave, spikes, spikes, winners)
    assert conv.weight.min() >= 0 and conv.weight.max() <= 1
    assert conv.weight[1, 0, 0, 0] == 1 and conv.weight[1, 0, 1, 1] == 0


def test_later_winner_of_a_shared_feature_wins():
    wave, spikes, _, conv = hand_built()
    pre = wave.sum(1)
    rates = stdp_rates(pre, torch.tensor([[2.0, 4.0]]), torch.tensor([[[1, 0, 0], [1, 0, 0]]]),
                       torch.full((3,), 0.1), torch.full((3,), -0.1), (2, 2))
    alone = stdp_rates(pre, torch.tensor([[4.0]]), torch.tensor([[[1, 0, 0]]]),
                       torch.full((3,), 0.1), torch.full((3,), -0.1), (2, 2))
    assert torch.equal(rates[0], alone[0]) and torch.equal(rates[1], alone[1])


def test_rates_are_buffers_that_round_trip_and_never_need_grad():
    conv = make_layer()
    rule = STDP(conv, [(0.01 * f, -0.02 * f) for f in range(4)])
    rule.update_learning_rate(2, 0.5, -0.25)
    state = rule.state_dict()
    assert set(state) == {"a_plus", "a_minus"}          # the conv weight is not duplicated
    other = STDP(make_layer(), (0.0, 0.0))
    other.load_state_dict(state)
    assert other.learning_rate[2][0].item() == 0.5 and other.learning_rate[1][1].item() == pytest.approx(-0.02)
    other.update_all_learning_rate(0.1, -0.075)
    assert other.a_plus.eq(0.1).all() and other.a_minus.eq(-0.075).all()
    assert not conv.weight.requires_grad and not rule.a_plus.requires_grad
    assert list(rule.parameters()) == []


def test_rstdp_rewards_punishes_and_ignores_per_sample(gen):
    conv = make_layer(features=4, channels=3, k=3)
    wave = random_wave(3, 3, 5, 5, 5, never=0.3, generator=gen)
    pot = conv(wave)
    spikes = sf.fire(pot)
    winners = sf.get_k_winners(pot, 1, 0, spikes)
    pair = RSTDP.from_rates(conv)
    w0 = conv.weight.clone()
    pair(wave, pot, spikes, winners, torch.tensor([1, -1, 0]))
    expected = w0.clone()
    for b, rule in [(0, (0.004, -0.003)), (1, (-0.004, 0.0005))]:
        f, i, j = winners[b, 0].tolist()
        fired = wave[b, -1, :, i:i + 3, j:j + 3] > 0        # output spikes only at the last step
        expected[f] += torch.where(fired, rule[0], rule[1])
    assert torch.allclose(conv.weight, expected.clamp(0.2, 0.8))


def test_rstdp_adapt_uses_base_rates_without_compounding():
    pair = RSTDP.from_rates(make_layer())
    pair.adapt(hit=0.75, miss=0.25)
    pair.adapt(hit=0.75, miss=0.25)
    assert pair.reward.a_plus[0].item() == pytest.approx(0.004 * 0.25)
    assert pair.punish.a_minus[0].item() == pytest.approx(0.0005 * 0.75)
    pair.adapt(hit=0.5, miss=0.5, adaptive_min=0.2, adaptive_int=0.8)
    assert pair.punish.a_plus[0].item() == pytest.approx(-0.004 * 0.6)
    assert set(pair.state_dict()) >= {"reward.a_plus", "punish.a_minus", "base_reward", "base_punish"}


@pytest.mark.parametrize("winners,message", [
    (torch.tensor([[[4, 0, 0]]]), "winners do not match"),
    (torch.tensor([[[0, 6, 0]]]), "winners do not match"),
    (torch.tensor([[[0, 0]]]), r"\[B=1, k, 3\]"),
    (torch.tensor([[[0, 0, 0]], [[1, 1, 1]]]), r"\[B=1, k, 3\]"),
])
def test_stdp_bad_winners(winners, message, gen):
    conv = make_layer()
    wave = random_wave(1, 3, 8, 8, 4, generator=gen)
    pot = conv(wave)
    with pytest.raises(ValueError, match=message):
        STDP(conv, (0.1, -0.1))(wave, pot, pot.sign(), winners)


def test_stdp_bad_shapes_and_rates():
    conv = make_layer()
    with pytest.raises(ValueError, match="potentials/output_spikes must be"):
        STDP(conv, (0.1, -0.1))(torch.zeros(1, 4, 3, 8, 8), torch.zeros(1, 4, 4, 5, 5), torch.zeros(1, 4, 4, 5, 5))
    with pytest.raises(ValueError, match="one \\(a_plus, a_minus\\) pair or a list of 4"):
        STDP(conv, [(0.1, -0.1)] * 3)
    with pytest.raises(ValueError, match="share bounds"):
        RSTDP(STDP(conv, (0.1, -0.1)), STDP(conv, (0.1, -0.1), lower_bound=0.2))
