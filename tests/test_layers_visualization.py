"""Convolution / Pooling modules and the visualisation helpers."""
import pytest
import torch

import spiking
from spiking import functional as sf
from spiking.visualization import kernel_grid, reconstruct_features


def test_convolution_initial_weights_are_one_seeded_normal_draw():
    torch.manual_seed(5)
    conv = spiking.Convolution(6, 30, 5, 0.8, 0.05)
    torch.manual_seed(5)
    expected = torch.empty(30, 6, 5, 5).normal_(0.8, 0.05)
    assert torch.equal(conv.weight, expected) and not conv.weight.requires_grad
    assert conv.weight.dtype == torch.float32


def test_convolution_forward_is_per_step_valid_cross_correlation():
    conv = spiking.Convolution(2, 3, (3, 2))
    wave = (torch.rand(2, 4, 2, 6, 5) > 0.5).float()
    pot = conv(wave)
    assert pot.shape == (2, 4, 3, 4, 4)
    for b in range(2):
        for t in range(4):
            assert torch.allclose(pot[b, t], torch.nn.functional.conv2d(wave[b, t:t + 1], conv.weight)[0])
    target = torch.rand(3, 2, 3, 2)
    conv.load_weight(target)
    assert torch.equal(conv.weight, target)
    conv.reset_weight(0.5, 0.0)
    assert conv.weight.eq(0.5).all()


def test_convolution_and_pooling_shape_errors():
    conv = spiking.Convolution(2, 3, 3)
    with pytest.raises(ValueError, match=r"expects \[B, T, 2, H>=3, W>=3\]"):
        conv(torch.zeros(1, 4, 3, 6, 6))
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        conv(torch.zeros(4, 2, 6, 6))
    with pytest.raises(ValueError, match="load_weight expects shape"):
        conv.load_weight(torch.zeros(3, 2, 5, 5))
    pool = spiking.Pooling(2, padding=1)
    assert torch.equal(pool(torch.ones(1, 2, 1, 4, 4)), sf.pooling(torch.ones(1, 2, 1, 4, 4), 2, 2, 1))


def test_kernel_grid_layout_and_scaling():
    weight = torch.arange(5 * 2 * 3 * 3, dtype=torch.float32).view(5, 2, 3, 3)
    image = kernel_grid(weight, columns=3)
    assert image.shape == (2 * 4 - 1, 3 * 4 - 1)
    assert image.max() == 1 and image.min() == 0
    assert torch.allclose(image[0:3, 0:3], torch.linspace(0, 1, 9).view(3, 3))   # max over channels


def test_reconstruct_features_by_hand():
    # layer 1: two 1x1 features picking input channel 0 or 1
    w1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)
    # layer 2: one 2x1 feature: tap (0,0) wants feature 0, tap (1,0) wants feature 1
    w2 = torch.zeros(1, 2, 2, 1)
    w2[0, 0, 0, 0] = 1.0
    w2[0, 1, 1, 0] = 0.5
    features = reconstruct_features([("conv", w1), ("pool", 2), ("conv", w2)])
    # pooling centres the 1x1 features in a 2x2 canvas; the 2x1 conv at stride 2 stacks two
    assert features.shape == (1, 2, 2 + 2, 2)
    assert features[0, 0, :2].sum() == 1.0 * 1 and features[0, 1, 2:].sum() == 0.5
    assert features[0, 0, 2:].sum() == 0 and features[0, 1, :2].sum() == 0
    first_only = reconstruct_features([("conv", w1)])
    assert torch.equal(first_only, w1)
