"""spiking.functional against slow single-sample references, and batched == stacked singles."""
import numpy as np
import pytest
import torch

from spiking import functional as sf
from tests import reference as ref
from tests.conftest import conv_potentials, integer_weights, random_wave


def stacked(fn, batch_input, *args, **kwargs):
    """fn applied to each sample alone, restacked."""
    return torch.cat([fn(batch_input[b:b + 1], *args, **kwargs) for b in range(batch_input.shape[0])])


def test_pad_is_left_right_top_bottom():
    wave = torch.ones(2, 3, 1, 2, 2)
    padded = sf.pad(wave, (1, 2, 3, 0), value=0)
    assert padded.shape == (2, 3, 1, 5, 5)
    assert padded[..., 3:, 1:3].eq(1).all() and padded.sum() == wave.sum()


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 3, 0), (2, 2, 1), (3, 2, 1)])
def test_pooling_matches_reference_and_padding_never_wins(gen, kernel, stride, padding):
    wave = random_wave(3, 2, 7, 7, 5, generator=gen) - 0.5    # negatives: padding must not win
    pooled = sf.pooling(wave, kernel, stride, padding)
    for b in range(3):
        expected = ref.pooling(wave[b], kernel, stride or kernel, padding)
        np.testing.assert_array_equal(pooled[b].numpy(), expected)


def test_pooling_passes_on_earliest_spike(gen):
    wave = random_wave(2, 3, 6, 6, 8, generator=gen)
    pooled = sf.pooling(wave, 2)
    first = (8 - wave.sum(1)).view(2, 3, 3, 2, 3, 2).amin(dim=(3, 5))
    np.testing.assert_array_equal((8 - pooled.sum(1)).numpy(), first.numpy())


@pytest.mark.parametrize("value", [None, 0, 2.5, 7])
def test_threshold_and_fire(gen, value):
    pot = conv_potentials(random_wave(2, 2, 6, 6, 4, generator=gen), integer_weights(3, 2, 3, gen))
    out = sf.threshold(pot, value)
    for b in range(2):
        np.testing.assert_array_equal(out[b].numpy(), ref.threshold(pot[b], value))
    spikes, thresholded = sf.fire(pot, value, return_thresholded_potentials=True)
    assert torch.equal(thresholded, out) and torch.equal(spikes, out.sign())
    assert torch.equal(sf.fire(pot, value), spikes)


def test_fire_without_threshold_gives_minus_one_for_negative_last_step():
    pot = torch.tensor([1.0, 2.0, -3.0]).view(1, 3, 1, 1, 1)
    assert sf.fire(pot).flatten().tolist() == [0, 0, -1]


def test_in_place_variants_modify_and_plain_ones_do_not(gen):
    pot = conv_potentials(random_wave(1, 2, 5, 5, 4, generator=gen), integer_weights(2, 2, 3, gen))
    original = pot.clone()
    sf.fire(pot, 3)
    sf.threshold(pot, 3)
    sf.feature_inhibition(pot, [0])
    assert torch.equal(pot, original)
    spikes = sf.fire_(pot, 3)
    assert spikes is pot and torch.equal(pot, sf.fire(original, 3))
    again = original.clone()
    assert sf.threshold_(again, 3) is again and torch.equal(again, sf.threshold(original, 3))
    assert sf.feature_inhibition_(again, [1]) is again and again[:, :, 1].eq(0).all()


@pytest.mark.parametrize("seed", range(6))
def test_pointwise_inhibition_matches_reference_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    wave = random_wave(3, 3, 8, 8, 6, never=0.4, generator=gen)
    pot = sf.threshold(conv_potentials(wave, integer_weights(5, 3, 3, gen)), 4)
    inhibited = sf.pointwise_inhibition(pot)
    for b in range(3):
        np.testing.assert_array_equal(inhibited[b].numpy(), ref.pointwise_inhibition(pot[b]))
    assert torch.equal(inhibited, stacked(sf.pointwise_inhibition, pot))
    # at most one feature survives per position
    assert ((inhibited[:, -1] > 0).sum(dim=1) <= 1).all()


def test_pointwise_inhibition_tie_rules_by_hand():
    # position (0,0): f1 spikes at t=1, f0 and f2 at t=2 -> f1 wins though f2 is larger later
    # position (0,1): f0 and f2 both first at t=0 with 5 vs 6 -> f2; (0,2): exact tie -> f0
    pot = torch.zeros(1, 3, 3, 1, 3)
    pot[0, 1:, 1, 0, 0] = 2
    pot[0, 2:, 0, 0, 0] = 9
    pot[0, 2:, 2, 0, 0] = 9
    pot[0, :, 0, 0, 1] = 5
    pot[0, :, 2, 0, 1] = 6
    pot[0, :, 0, 0, 2] = 4
    pot[0, :, 1, 0, 2] = 4
    out = sf.pointwise_inhibition(pot)
    survivors = (out[0, -1, :, 0] > 0).nonzero().tolist()
    assert survivors == [[0, 2], [1, 0], [2, 1]]


def test_empty_and_single_spike_waves():
    empty = torch.zeros(2, 4, 3, 5, 5)
    assert sf.pointwise_inhibition(empty).eq(0).all()
    assert sf.get_k_winners(empty, 3).eq(-1).all()
    single = empty.clone()
    single[1, 2:, 1, 3, 4] = 7.0
    winners = sf.get_k_winners(single, 3, 1)
    assert winners[0].eq(-1).all()
    assert winners[1].tolist() == [[1, 3, 4], [-1, -1, -1], [-1, -1, -1]]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kwta,radius", [(1, 0), (3, 0), (4, 1), (6, 2)])
def test_get_k_winners_matches_reference(seed, kwta, radius):
    gen = torch.Generator().manual_seed(seed)
    wave = random_wave(3, 3, 7, 7, 5, never=0.5, generator=gen)
    pot = sf.pointwise_inhibition(sf.threshold(conv_potentials(wave, integer_weights(6, 3, 3, gen)), 5))
    spikes = pot.sign()
    winners = sf.get_k_winners(pot, kwta, radius, spikes)
    assert winners.dtype == torch.long and winners.shape == (3, kwta, 3)
    for b in range(3):
        expected = ref.get_k_winners(pot[b], kwta, radius, spikes[b])
        got = [tuple(w) for w in winners[b].tolist() if w[0] >= 0]
        assert got == expected
        assert winners[b, len(expected):].eq(-1).all()
    assert torch.equal(winners, torch.cat([sf.get_k_winners(pot[b:b + 1], kwta, radius, spikes[b:b + 1])
                                           for b in range(3)]))


def test_get_k_winners_order_earliest_then_largest_and_radius():
    pot = torch.zeros(1, 4, 3, 6, 6)
    pot[0, 1:, 0, 0, 0] = 3.0      # earliest (t=1), small
    pot[0, 2:, 1, 5, 5] = 50.0     # later, large
    pot[0, 2:, 2, 5, 4] = 60.0     # same step as f1 at (5,5) and larger: picked before it
    pot[0, 1:, 1, 0, 1] = 2.0      # f1 at t=1, within radius of f0's winner
    winners = sf.get_k_winners(pot, 4, 1)
    assert winners[0].tolist() == [[0, 0, 0], [2, 5, 4], [-1, -1, -1], [-1, -1, -1]]
    no_radius = sf.get_k_winners(pot, 4, 0)
    assert no_radius[0].tolist() == [[0, 0, 0], [1, 0, 1], [2, 5, 4], [-1, -1, -1]]


def test_get_k_winners_near_ties_within_ulp_go_to_first_index():
    # scores value + T*max round to the same float32 when values differ by less than an ulp of v
    steps = 4
    big = np.float32(2 ** 20)
    pot = torch.zeros(1, steps, 2, 1, 1)
    pot[0, -1, 0, 0, 0] = float(big)
    pot[0, -1, 1, 0, 0] = float(big) + 0.25       # distinct potential, identical float32 score
    spikes = torch.zeros_like(pot)
    spikes[0, -1] = 1
    assert sf.get_k_winners(pot, 1, 0, spikes)[0, 0].tolist() == [0, 0, 0]
    assert ref.get_k_winners(pot[0], 1, 0, spikes[0]) == [(0, 0, 0)]


@pytest.mark.parametrize("features", [[], [1], [0, 2]])
def test_feature_inhibition(gen, features):
    pot = conv_potentials(random_wave(2, 2, 5, 5, 3, generator=gen), integer_weights(3, 2, 3, gen))
    out = sf.feature_inhibition(pot, features)
    for f in range(3):
        assert torch.equal(out[:, :, f], torch.zeros_like(out[:, :, f]) if f in features else pot[:, :, f])


def test_local_normalization_matches_reference(gen):
    image = torch.rand(2, 3, 12, 10, generator=gen) * 100
    out = sf.local_normalization(image, 3)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), ref.local_normalization(image[b], 3), rtol=1e-5)
    assert torch.equal(out, stacked(sf.local_normalization, image, 3))


def test_intensity_lateral_inhibition_matches_reference(gen):
    percents = [0.15, 0.12, 0.1]
    kernel = sf.intensity_lateral_inhibition_kernel(percents)
    assert kernel.shape == (7, 7) and kernel[3, 3] == 0 and kernel[0, 6] == pytest.approx(0.1)
    image = torch.randint(0, 4, (2, 2, 8, 9), generator=gen).float()   # many equal neighbours
    out = sf.intensity_lateral_inhibition(image, kernel)
    for b in range(2):
        np.testing.assert_allclose(out[b].numpy(), ref.intensity_lateral_inhibition(image[b], percents),
                                   rtol=1e-6)
    # a local maximum is amplified, a local minimum is not
    assert torch.equal(out, stacked(sf.intensity_lateral_inhibition, image, kernel))


@pytest.mark.parametrize("call,message", [
    (lambda: sf.fire(torch.zeros(3, 4, 5, 5)), r"\[B, T, C, H, W\]"),
    (lambda: sf.fire(torch.zeros(1, 2, 3, 4, 4), -1.0), "threshold must be >= 0"),
    (lambda: sf.get_k_winners(torch.zeros(1, 2, 3, 4, 4), 0), "kwta must be an integer >= 1"),
    (lambda: sf.get_k_winners(torch.zeros(1, 2, 3, 4, 4), 1, -1), "inhibition_radius"),
    (lambda: sf.get_k_winners(torch.zeros(1, 2, 3, 4, 4), 1, 0, torch.zeros(1, 2, 3, 4, 5)), "same shape"),
    (lambda: sf.pooling(torch.zeros(2, 4, 4), 2), r"\[B, T, C, H, W\]"),
    (lambda: sf.local_normalization(torch.zeros(2, 4, 4), 2), r"\[B, C, H, W\]"),
    (lambda: sf.feature_inhibition(torch.zeros(1, 2, 3, 4, 4), [3]), r"\[0, 3\)"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


@pytest.mark.parametrize("kernel,pad", [(5, 0), (3, 1)])
def test_conv2d_per_sample_and_per_channel_results_do_not_depend_on_the_call(kernel, pad):
    """Exact batched learning recomputes a few samples or a few output channels of a bigger
    convolution and needs the same float32 bits: every sample and channel of `sf.conv2d` must
    not depend on how many others are computed with it (the 1x1-output matrix-product path
    and the oneDNN path alike), and equal `F.conv2d` up to summation order."""
    generator = torch.Generator().manual_seed(3)
    x = (torch.rand(40, 250, 5, 5, generator=generator) < 0.3).float()
    weight = torch.rand(200, 250, kernel, kernel, generator=generator)
    full = sf.conv2d(x, weight, padding=pad)
    assert torch.allclose(full, torch.nn.functional.conv2d(x, weight, padding=pad), rtol=1e-5)
    for samples in (slice(0, 1), slice(3, 6), slice(1, 8), slice(2, 11), slice(0, 33)):
        for channels in (slice(7, 8), slice(0, 3), slice(5, 20), slice(0, 16), slice(30, 47), slice(0, 200)):
            part = sf.conv2d(x[samples], weight[channels], padding=pad)
            assert torch.equal(part, full[samples, channels]), (samples, channels)


def test_whole_map_conv2d_is_the_correctly_rounded_sum_and_follows_weight_updates():
    """A one-position convolution (a decision reading the whole padded map) is the float32
    rounding of the exact sum of its terms (`math.fsum`, an independent reference), whatever
    the padding; an in-place update of the weight (remembered float64 matrix) is seen."""
    import math
    generator = torch.Generator().manual_seed(5)
    x = (torch.rand(6, 30, 3, 3, generator=generator) < 0.4).float()
    weight = torch.rand(7, 30, 5, 5, generator=generator) * 0.6 + 0.2
    out = sf.conv2d(x, weight, padding=1)
    assert out.shape == (6, 7, 1, 1)
    assert torch.allclose(out, torch.nn.functional.conv2d(x, weight, padding=1), rtol=1e-5)
    for b in range(6):
        for f in range(7):
            terms = [float(w) for w, spike in zip(weight[f, :, 1:4, 1:4].flatten(), x[b].flatten()) if spike > 0]
            expected = torch.tensor(math.fsum(terms), dtype=torch.float64).float()
            assert torch.equal(out[b, f, 0, 0], expected), (b, f)
    weight[3].add_(0.01)
    moved = sf.conv2d(x, weight, padding=1)
    assert torch.equal(moved, torch.nn.functional.conv2d(x.double(), weight.double(), padding=1).float())
    assert torch.equal(moved[:, [0, 1, 2, 4, 5, 6]], out[:, [0, 1, 2, 4, 5, 6]])
    assert bool((moved[:, 3] > out[:, 3]).all())


def test_whole_map_conv2d_corner_cases():
    """New storage under the same version (`param.data = ...`), inference mode, autograd and
    paddings `pair` does not take all give what `F.conv2d` gives."""
    generator = torch.Generator().manual_seed(6)
    x = (torch.rand(4, 5, 3, 3, generator=generator) < 0.5).float()
    layer = torch.nn.Conv2d(5, 6, 3, bias=False)
    with torch.no_grad():
        layer.weight.uniform_(0.2, 0.8)
        first = sf.conv2d(x, layer.weight)
        layer.weight.data = layer.weight.data * 0.5            # new storage, same version counter
        assert torch.allclose(sf.conv2d(x, layer.weight), first * 0.5, rtol=1e-6)
    with torch.inference_mode():
        weight = torch.rand(6, 5, 3, 3, generator=generator)
        assert torch.equal(sf.conv2d(x, weight), torch.nn.functional.conv2d(x.double(), weight.double()).float())
    out = sf.conv2d(x, layer.weight)                           # the weight requires grad
    out.sum().backward()
    assert layer.weight.grad is not None and torch.allclose(layer.weight.grad, x.sum(0).expand(6, -1, -1, -1))
    assert sf.conv2d(x, layer.weight.detach(), padding=(0,)).shape == (4, 6, 1, 1)   # F.conv2d's own


def test_whole_map_conv2d_with_unequal_row_and_column_padding():
    """A kernel of 5 x 3 over a 3 x 3 map padded by one row on each side (none on the columns)
    reads the whole map: the float64 product of the kernel's inner rows, as a float64
    convolution rounds it."""
    generator = torch.Generator().manual_seed(8)
    x = (torch.rand(5, 7, 3, 3, generator=generator) < 0.5).float()
    weight = torch.rand(4, 7, 5, 3, generator=generator) * 0.6 + 0.2
    out = sf.conv2d(x, weight, padding=(1, 0))
    expected = torch.nn.functional.conv2d(x.double(), weight.double(), padding=(1, 0)).float()
    assert out.shape == (5, 4, 1, 1) and torch.equal(out, expected)
    assert torch.equal(sf.conv2d(x[2:4], weight[1:3], padding=(1, 0)), out[2:4, 1:3])
