"""Kernels, the filter bank and latency coding."""
import math

import numpy as np
import pytest
import torch

from spiking import encoding, filters
from spiking.times import wave_to_times
from tests import reference as ref


@pytest.mark.parametrize("window,s1,s2", [(3, 3 / 9, 6 / 9), (7, 14 / 9, 7 / 9), (13, 13 / 9, 26 / 9), (6, 1, 2)])
def test_dog_kernel_symmetric_zero_mean_unit_max(window, s1, s2):
    kernel = filters.DoGKernel(window, s1, s2)()
    size = 2 * (window // 2) + 1
    assert kernel.dtype == torch.float32 and kernel.shape == (size, size)
    assert torch.allclose(kernel, kernel.t()) and torch.allclose(kernel, kernel.flip(0))
    assert torch.allclose(kernel, kernel.flip(1))
    assert abs(float(kernel.double().mean())) < 1e-6
    assert float(kernel.max()) == pytest.approx(1.0)
    centre = kernel[size // 2, size // 2]
    assert (centre == kernel.max()) == (s1 < s2)     # on-centre iff sigma1 < sigma2


def test_dog_kernel_formula_by_hand():
    x, y = np.meshgrid(np.arange(-3, 4.0), np.arange(-3, 4.0), indexing="ij")
    g = lambda s: np.exp(-(x ** 2 + y ** 2) / (2 * s * s)) / (s * s)
    dog = (g(1.0) - g(2.0)) / (2 * math.pi)
    dog = (dog - dog.mean()) / (dog - dog.mean()).max()
    np.testing.assert_allclose(filters.DoGKernel(7, 1, 2)().numpy(), dog, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("orientation", [0, 45, 90, 157.5])
def test_gabor_kernel_zero_mean_unit_max_and_point_symmetric(orientation):
    kernel = filters.GaborKernel(5, orientation)()
    assert kernel.shape == (5, 5) and kernel.dtype == torch.float32
    assert abs(float(kernel.double().mean())) < 1e-6 and float(kernel.max()) == pytest.approx(1.0)
    assert torch.allclose(kernel, kernel.flip(0).flip(1), atol=1e-6)


def test_gabor_stripes_horizontal_at_zero_degrees():
    kernel = filters.GaborKernel(7, 0)()
    # constant along a row only up to the envelope: each row keeps its sign
    signs = kernel.sign()
    assert (signs == signs[:, 3:4]).all()
    assert torch.allclose(filters.GaborKernel(7, 90)(), kernel.t(), atol=1e-6)


def test_filter_pads_kernels_thresholds_and_abs():
    small, large = filters.DoGKernel(3, 3 / 9, 6 / 9), filters.DoGKernel(7, 7 / 9, 14 / 9)
    bank = filters.Filter([small, large], padding=3, thresholds=[0.5, 1.0])
    assert bank.kernels.shape == (2, 1, 7, 7)
    assert torch.equal(bank.kernels[0, 0, 2:5, 2:5], small()) and bank.kernels[0, 0, 0].eq(0).all()
    image = torch.rand(2, 1, 10, 10)
    raw = torch.nn.functional.conv2d(image, bank.kernels, padding=3)
    out = bank(image)
    expected = torch.where(raw < torch.tensor([0.5, 1.0]).view(1, 2, 1, 1), torch.zeros(()), raw)
    assert torch.allclose(out, expected)
    at_threshold = filters.Filter([torch.ones(1, 1)], thresholds=1.0)(torch.ones(1, 1, 2, 2))
    assert at_threshold.eq(1).all()                     # equal responses are kept
    folded = filters.Filter([small], padding=1, use_abs=True)(image)
    assert folded.min() >= 0 and torch.allclose(folded, torch.nn.functional.conv2d(image, bank.kernels[:1, :, 2:5, 2:5], padding=1).abs())


def test_filter_on_colour_images_filters_each_channel():
    bank = filters.Filter([filters.DoGKernel(3, 1 / 3, 2 / 3), filters.DoGKernel(3, 2 / 3, 1 / 3)], padding=1)
    image = torch.rand(2, 3, 8, 8)
    out = bank(image)
    assert out.shape == (2, 6, 8, 8)
    assert torch.allclose(out[:, 2:4], bank(image[:, 1:2]))


def _cumulative(wave):
    return (wave[:, 1:] >= wave[:, :-1]).all()


@pytest.mark.parametrize("steps", [1, 4, 15])
def test_latency_wave_is_cumulative_with_floor_n_over_t_spikes_per_step(steps):
    gen = torch.Generator().manual_seed(steps)
    image = torch.rand(3, 2, 9, 9, generator=gen) * (torch.rand(3, 2, 9, 9, generator=gen) > 0.4)
    wave = encoding.intensity_to_latency(image, steps, to_spike=True)
    assert wave.shape == (3, steps, 2, 9, 9) and _cumulative(wave)
    for b in range(3):
        n = int((image[b] != 0).sum())
        per_step = wave[b].flatten(1).sum(1)
        assert per_step.tolist() == [float((t + 1) * (n // steps)) for t in range(steps)]
        np.testing.assert_array_equal(wave_to_times(wave[b:b + 1])[0].numpy(),
                                      ref.latency_times(image[b], steps))


def test_latency_brightest_first_and_intensity_carried():
    image = torch.tensor([[[[0.0, 5.0, 3.0, 9.0, 1.0, 7.0]]]])
    wave = encoding.intensity_to_latency(image, 2)
    # n = 5 non-zero values, bin = 2: step 0 = {9, 7}, step 1 adds {5, 3}; the weakest (1) never
    assert wave[0, 0, 0, 0].tolist() == [0, 0, 0, 9, 0, 7]
    assert wave[0, 1, 0, 0].tolist() == [0, 5, 3, 9, 0, 7]
    spikes = encoding.Intensity2Latency(2, to_spike=True)(image)
    assert spikes[0, 1, 0, 0].tolist() == [0, 1, 1, 1, 0, 1]


def test_latency_fewer_values_than_steps_and_all_zero():
    image = torch.zeros(2, 1, 2, 3)
    image[0, 0, 0, :2] = torch.tensor([2.0, 4.0])
    times = encoding.latency_times(image, 5)
    assert times[0, 0, 0].tolist() == [1, 0, 5] and times[1].eq(5).all()
    wave = encoding.intensity_to_latency(image, 5, to_spike=True)
    assert wave[1].eq(0).all() and wave[0].sum() == 5 + 4    # steps 0..4 and 1..4


def test_latency_batched_equals_single_with_ties():
    gen = torch.Generator().manual_seed(3)
    image = torch.randint(0, 5, (6, 3, 7, 7), generator=gen).float()     # heavy ties
    batched = encoding.latency_times(image, 15)
    singles = torch.cat([encoding.latency_times(image[b:b + 1], 15) for b in range(6)])
    assert torch.equal(batched, singles)


@pytest.mark.parametrize("bad,message", [
    (torch.rand(2, 4, 4), r"\[B, C, H, W\]"),
    (-torch.rand(1, 1, 4, 4), "non-negative"),
    (torch.full((1, 1, 2, 2), float("nan")), "NaN"),
])
def test_latency_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        encoding.intensity_to_latency(bad, 15)


def test_gabor_front_end_pools_before_the_lateral_inhibition(gen):
    """MozafariShallow.py's order: Gabor (absolute) -> max pool -> lateral intensity inhibition
    -> latency coding -> pointwise inhibition."""
    import torch.nn.functional as F
    from frontends import GaborFrontEnd
    from spiking import functional as sf
    from spiking import times as st
    from spiking.encoding import latency_times
    from spiking.filters import Filter, GaborKernel
    config = GaborFrontEnd(pool=5, pool_stride=4)
    images = torch.rand(2, 1, 40, 36, generator=gen)
    responses = Filter([GaborKernel(5, o) for o in config.orientations], use_abs=True)(images)
    pooled = sf.intensity_lateral_inhibition(F.max_pool2d(responses, 5, 4),
                                             sf.intensity_lateral_inhibition_kernel(config.lateral_inhibition))
    times = latency_times(pooled, 15)
    expected = st.pointwise_inhibition_times(times, torch.ones(times.shape), 15)[0]
    assert torch.equal(config.build()(images), expected)
    assert config.output_shape((40, 36)) == tuple(expected.shape[1:]) == (4, 8, 7)
