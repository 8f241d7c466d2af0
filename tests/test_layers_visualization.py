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


def test_feature_and_spike_time_figures_are_one_mosaic_with_each_tile_in_place():
    """The run's figures draw every tile into one image: tile i at row i // columns, column
    i % columns, one white pixel between tiles; features on their own symmetric scale, spike
    times on 0 .. T - 1 with never-spiking neurons white."""
    import matplotlib.pyplot as plt
    import numpy as np

    import plots
    images = np.zeros((5, 2, 3))
    images[1] = [[-2.0, 0.0, 1.0], [2.0, 0.5, 0.0]]        # scale 2: -2 -> blue end, 2 -> red end
    images[4, 0, 0] = 0.001                                  # a faint feature still spans the scale
    figure = plots.image_grid_figure(images, "features")
    shown = figure.axes[0].get_images()[0].get_array()
    plt.close(figure)
    assert len(figure.axes) == 1 and shown.shape == (2 * 3 + 1, 3 * 4 + 1, 4)     # 5 tiles: 2 rows of 3
    cmap = plt.get_cmap("RdBu_r")
    tile = shown[1:3, 5:8]                                   # tile 1: row 0, column 1
    assert np.allclose(tile[0, 0], cmap(0.0)) and np.allclose(tile[1, 0], cmap(1.0))
    assert np.allclose(tile[0, 1], cmap(0.5)) and np.allclose(tile[1, 1], cmap(0.625))
    assert np.allclose(shown[4, 5], cmap(1.0))              # tile 4: row 1, column 1
    assert np.allclose(shown[1:3, 1:4], cmap(0.5))          # an all-zero feature: the middle colour
    assert np.all(shown[:, 4] == 1) and np.all(shown[3] == 1) and np.all(shown[4:6, 9:12] == 1)   # gaps, no tile 5
    times = np.array([[[0, 14], [15, 7]]])                   # T = 15: 15 never spikes
    figure = plots.spike_time_figure(times, 15, "conv1")
    shown = figure.axes[0].get_images()[0].get_array()
    plt.close(figure)
    viridis = plt.get_cmap("viridis")
    assert np.allclose(shown[1, 1], viridis(0.0)) and np.allclose(shown[1, 2], viridis(1.0))
    assert np.allclose(shown[2, 1], 1.0) and np.allclose(shown[2, 2], viridis(0.5))
