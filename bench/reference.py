"""Reference mode: one image at a time, no caching, full spike waves (the seed's way).

Every call re-encodes the raw image with the front end and runs every layer on the whole
`[1, T, C, H, W]` wave (one convolution of all T steps per layer), then SpykeTorch's per-sample
recipe: fire -> pointwise inhibition -> k winners -> STDP, or the decision layer's
largest-final-potential winner and an R-STDP reward / punish update. It uses this project's own
wave primitives (`spiking.functional`), so the speed-ups measured against it come from the
engine (batching, caching, spike-time fast paths), not from a different arithmetic library.
"""
from __future__ import annotations

import torch

from spiking import functional as sf
from spiking.encoding import intensity_to_latency
from spiking.learning import STDP


class ReferenceMozafari:
    """mozafari2018's forward and learning steps on waves, sample by sample."""

    def __init__(self, model):
        self.model = model
        self.front = model.frontend.build()
        self.steps = model.time_steps
        conv1, conv2, decision = model.blocks
        self.hidden = (conv1, conv2)
        self.decision = decision
        self.rules = [STDP(layer.conv, layer.spec.learning_rate) for layer in self.hidden]
        self.counters = [0, 0]

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Raw image [1, 1, H, W] in [0, 1] -> binary wave [1, T, 6, H', W']."""
        config = self.front.config
        responses = self.front.filter(image * config.scale)
        normalised = sf.local_normalization(responses, config.normalization_radius)
        return intensity_to_latency(normalised, self.steps, to_spike=True)

    def _hidden(self, wave, layer):
        padded = sf.pad(wave, (layer.spec.pad,) * 4)
        potentials = layer.conv(padded)
        spikes, thresholded = sf.fire(potentials, layer.spec.threshold, True)
        return padded, potentials, spikes, thresholded

    def features(self, wave, upto: int):
        """Wave input of hidden layer `upto` (0 or 1) or of the decision layer (2)."""
        for layer in self.hidden[:upto]:
            _, _, spikes, _ = self._hidden(wave, layer)
            wave = sf.pooling(spikes, layer.spec.pool)
        return wave

    def learn_hidden(self, image, index: int) -> None:
        """One seed-style STDP step of hidden layer `index` on one raw image."""
        layer, rule = self.hidden[index], self.rules[index]
        self.counters[index] += 1
        if self.counters[index] >= layer.spec.rate_doubling_every:
            self.counters[index] = 0
            a_plus = min(2 * rule.a_plus[0].item(), layer.spec.max_a_plus)
            rule.update_all_learning_rate(a_plus, layer.spec.a_minus_ratio * a_plus)
        wave = self.features(self.encode(image), index)
        padded, _, _, thresholded = self._hidden(wave, layer)
        inhibited = sf.pointwise_inhibition(thresholded)
        spikes = inhibited.sign()
        winners = sf.get_k_winners(inhibited, layer.spec.kwta, layer.spec.inhibition_radius, spikes)
        rule(padded, inhibited, spikes, winners)

    def decide(self, image):
        wave = self.features(self.encode(image), 2)
        padded = sf.pad(wave, (self.decision.spec.pad,) * 4)
        potentials = self.decision.conv(padded)
        spikes = sf.fire(potentials)
        winners = sf.get_k_winners(potentials, 1, 0, spikes)
        feature = int(winners[0, 0, 0])
        decision = -1 if feature < 0 else feature // self.decision.spec.neurons_per_class
        return decision, padded, potentials, spikes, winners

    def learn_decision(self, image, label: int) -> int:
        decision, padded, potentials, spikes, winners = self.decide(image)
        if decision >= 0:
            reward = torch.tensor([1 if decision == label else -1])
            self.decision.rstdp(padded, potentials, spikes, winners, reward)
        return decision
