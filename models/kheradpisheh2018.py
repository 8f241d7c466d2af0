"""Kheradpisheh et al. (2018): two STDP layers and a linear SVM on their spike features.

| node | layer | operation | MNIST output |
|---|---|---|---|
| 0 | front end | 2 DoG maps (7x7, sigma 1/2 on- and off-centre), padding 3, threshold 50, local normalisation r 8, T = 15 | 2 x 28 x 28 |
| 1 | conv1 | pad 2, conv 2->32 k5, fire > 10, STDP (0.004, -0.003) k=5 r=2 with the 500-sample doubling, pool 2 (pooling padding 1) | 32 x 15 x 15 |
| 2 | conv2 | pad 1, conv 32->150 k2, fire > 1, STDP (0.004, -0.003) k=8 r=1 (no doubling), pool 2 (pooling padding 1) | 150 x 9 x 9 |
| - | readout | linear SVM (C = 2.4) on whether each pooled conv2 neuron spiked (12,150 binary features) | 10 classes |

Schedule: 2 epochs conv1, 20 epochs conv2, then the SVM fit. An image with no feature spike is
silent (an error). The original's conv2 STDP stage applies pointwise inhibition to conv2's
*input* wave while evaluation does not; this train/eval mismatch is kept as the faithful default
(`conv2.inhibit_input=True`; set it False to learn on the same input as inference). Paper: 98.4 %.
"""
from __future__ import annotations

import dataclasses

from s1c1 import FrontEnd
from spiking.settings import setting, settings

from ._registry import register_model
from .family import ConvFamily
from .layers import HiddenSpec
from .readout import LinearReadout

FRONTEND = FrontEnd(kernels=((7, 1.0, 2.0), (7, 2.0, 1.0)), padding=3, threshold=50.0,
                    normalization_radius=8, time_steps=15)


@settings
class Kheradpisheh2018Config:
    LAYERS = ("conv1", "conv2")
    frontend: FrontEnd = FRONTEND
    conv1: HiddenSpec = HiddenSpec(in_channels=2, out_channels=32, kernel_size=5, threshold=10.0, kwta=5,
                                   inhibition_radius=2, pad=2, pool=2, pool_padding=1)
    conv2: HiddenSpec = HiddenSpec(in_channels=32, out_channels=150, kernel_size=2, threshold=1.0, kwta=8,
                                   inhibition_radius=1, pad=1, pool=2, pool_padding=1,
                                   rate_doubling_every=0, inhibit_input=True)
    readout_C: float = setting(2.4, above=0)
    default_epochs: tuple = (2, 20, 1)


class Kheradpisheh2018(ConvFamily):
    """Two STDP layers and a linear SVM on conv2's pooled spikes (no R-STDP)."""

    def add_head(self, config, num_classes: int) -> None:
        self.add_block(LinearReadout("svm", num_classes, config.readout_C))
        self.readout = {"readout": "svm", "readout_C": config.readout_C, "readout_values": "spiked"}


@register_model
def kheradpisheh2018(num_classes: int = 10, readout=None, **overrides) -> Kheradpisheh2018:
    """Kheradpisheh et al. 2018: STDP conv1 (32) + STDP conv2 (150) + linear SVM readout."""
    return Kheradpisheh2018(dataclasses.replace(Kheradpisheh2018Config(), **overrides), num_classes, readout)
