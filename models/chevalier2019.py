"""Chevalier (2019): a 784-100-10 leaky integrate-and-reset ReLU network trained by BPTT, and
its non-spiking twin.

Not spiking in the usual sense (documented honestly): the input is continuous, the outputs are
graded ReLU amplitudes and the logits are membrane states.

- Input: pixels p in [0, 1] become x = p - 0.5 (the original's Normalize(0.5, 1.0)); at every
  step t a fresh uniform mask U_t ~ U[0, 1) gives x_t = U_t * x.
- Layer (lambda = 0.9, theta = 1.0, p = 1.5, Xavier-uniform weights, default Linear bias):
  u_t = W x_t + b + lambda v_{t-1}; o_t = max(0, u_t - theta); g_t = 1[o_t > 0] (no gradient);
  reset "scale" (the final code, default): v_t = u_t (1 - (p / theta) g_t), a firing state is
  multiplied by -0.5 and the gradient through it by -0.5; reset "subtract" (the prose rule):
  v_t = u_t - (p + o_t) g_t, the constant theta - p with zero gradient through a firing.
  Each layer returns its previous step's (v, o): layer 2 reads o1_{t-1} and the network
  collects v2_{t-1}.
- Logits: the mean over t >= begin_eval of the collected states (the original's
  `average_output=False` flag, inverted, in fact means "mean"; `reduce="sum"` is offered),
  then log_softmax; NLL loss.
- Training: SGD, momentum 0.5, lr 0.1 / 0.05 / 0.01 for epochs 1 / 2 / 3, a fresh optimiser
  every epoch (so the momentum restarts, as the original), batch 1000, T = 128.

Fixes relative to the original: the masks come from seeded generators (evaluation is
reproducible: each evaluation pass restarts its generator); model selection uses the validation
split; the printed test loss is not divided by 1000.

`chevalier2019_ann` is the same-size non-spiking network (Linear 784-100, ReLU, Linear 100-10,
PyTorch's default initialisation, no mask, no time), trained with the same schedule.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from frontends import PixelInput
from utils import derived_seed

from spiking.settings import MAX_COUNT, require, setting, settings

from ._registry import register_model
from .base import NetworkModel
from .decision import Prediction
from .stages import LearnerStage


@settings
class Chevalier2019Config:
    frontend: PixelInput = PixelInput()
    hidden: int = setting(100, low=1, high=MAX_COUNT)
    spiking: bool = True
    time_steps: int = setting(128, low=1, high=MAX_COUNT)
    begin_eval: int = setting(0, low=0, high=MAX_COUNT)
    decay: float = setting(0.9, low=0, high=1)
    threshold: float = setting(1.0, above=0)
    penalty_threshold: float = setting(1.5, low=0)
    reset: str = "scale"
    reduce: str = "mean"
    learning_rates: tuple = setting((0.1, 0.05, 0.01), low=0)
    momentum: float = setting(0.5, low=0, high=1)
    default_epochs: tuple = (3,)
    default_batch_size: int = setting(1000, low=1)

    def check(self) -> None:
        require(len(self.learning_rates) >= 1, "learning_rates needs at least one rate")


class LeakyReLULayer(nn.Module):
    """One leaky integrate-and-reset ReLU layer (see the module docstring)."""

    def __init__(self, inputs: int, outputs: int, config: Chevalier2019Config):
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        nn.init.xavier_uniform_(self.linear.weight)
        self.decay, self.threshold = config.decay, config.threshold
        self.penalty, self.reset = config.penalty_threshold, config.reset

    def step(self, x: torch.Tensor, state: tuple) -> tuple:
        """(v_{t-1}, o_{t-1}) -> (v_t, o_t)."""
        previous, _ = state
        u = self.linear(x) + self.decay * previous
        o = F.relu(u - self.threshold)
        fired = (o > 0).to(u.dtype).detach()
        if self.reset == "scale":
            v = u * (1 - (self.penalty / self.threshold) * fired)
        else:
            v = u - (self.penalty + o) * fired
        return v, o


class Chevalier2019(NetworkModel):
    predict_needs = "times"      # node 0 is the pixels themselves

    def __init__(self, config: Chevalier2019Config = Chevalier2019Config(), num_classes: int = 10,
                 inputs: int = 784):
        super().__init__(config, config.frontend, num_classes)
        if config.reset not in ("scale", "subtract") or config.reduce not in ("mean", "sum"):
            raise ValueError("reset must be 'scale' or 'subtract' and reduce 'mean' or 'sum'")
        if not 0 <= config.begin_eval < config.time_steps:
            raise ValueError(f"begin_eval must lie in [0, {config.time_steps})")
        self.time_steps = config.time_steps
        if config.spiking:
            self.layer1 = LeakyReLULayer(inputs, config.hidden, config)
            self.layer2 = LeakyReLULayer(config.hidden, num_classes, config)
        else:
            self.layer1 = nn.Linear(inputs, config.hidden)
            self.layer2 = nn.Linear(config.hidden, num_classes)
        self._eval_generator = None

    def build_stages(self):
        name = "bptt" if self.config.spiking else "backprop"
        return (LearnerStage(name, "gradient", self, supervised=True),)

    # ---- the gradient stage's learner
    def start_epoch(self, epoch: int) -> None:
        """A fresh SGD optimiser every epoch (its momentum restarts, as the original's)."""
        rates = self.config.learning_rates
        self._lr = rates[min(epoch, len(rates) - 1)]
        self._optimizer = torch.optim.SGD(self.parameters(), lr=self._lr, momentum=self.config.momentum)
        self._train_generator = self.generator("train", epoch)

    def train_batch(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.train()
        with torch.enable_grad():
            self._optimizer.zero_grad()
            log_probabilities, _ = self.run(inputs, self._train_generator)
            F.nll_loss(log_probabilities, labels).backward()
            self._optimizer.step()
        return log_probabilities.detach().argmax(dim=1)

    def rates(self) -> dict:
        return {"lr": getattr(self, "_lr", self.config.learning_rates[0])}

    def generator(self, purpose: str, index: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.base_seed, purpose, index))

    def start_evaluation(self, split: str) -> None:
        self._eval_generator = self.generator("evaluate", split)

    def run(self, pixels: torch.Tensor, generator: torch.Generator | None, record: bool = False):
        """Log-probabilities [B, classes] (and, with `record`, every layer's states over time)."""
        x = pixels.flatten(1).float() / 255.0 - 0.5
        if not self.config.spiking:
            return F.log_softmax(self.layer2(F.relu(self.layer1(x))), dim=1), {}
        batch = x.shape[0]
        zeros = lambda n: (x.new_zeros(batch, n), x.new_zeros(batch, n))
        state1, state2 = zeros(self.config.hidden), zeros(self.num_classes)
        collected, history = [], {"layer1_state": [], "layer1_output": [], "layer2_state": [],
                                  "layer2_output": []}
        for _ in range(self.time_steps):
            mask = torch.rand(x.shape, generator=generator).to(x.device)
            delayed1 = state1                       # each layer returns its previous step
            state1 = self.layer1.step(mask * x, state1)
            delayed2 = state2
            state2 = self.layer2.step(delayed1[1], state2)
            collected.append(delayed2[0])
            if record:
                for name, value in (("layer1_state", delayed1[0]), ("layer1_output", delayed1[1]),
                                    ("layer2_state", delayed2[0]), ("layer2_output", delayed2[1])):
                    history[name].append(value[0].detach())
        outputs = torch.stack(collected[self.config.begin_eval:])
        logits = outputs.mean(dim=0) if self.config.reduce == "mean" else outputs.sum(dim=0)
        return F.log_softmax(logits, dim=1), history

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        if self._eval_generator is None:
            self.start_evaluation("default")
        log_probabilities, _ = self.run(inputs, self._eval_generator)
        classes = log_probabilities.argmax(dim=1)
        return Prediction(classes, log_probabilities.exp(),
                          torch.full((len(classes), 1, 3), -1, device=classes.device))

    @torch.no_grad()
    def activation_traces(self, inputs: torch.Tensor) -> dict:
        """Neurons x time heat maps of both layers, and the traces of hidden neuron 0 and of
        the predicted output neuron (state and output)."""
        if not self.config.spiking:
            return {}
        _, history = self.run(inputs[:1], self._eval_generator or self.generator("plots"), record=True)
        maps = {name: torch.stack(values, dim=1).cpu().numpy() for name, values in history.items()}
        winner = int(maps["layer2_state"][:, self.config.begin_eval:].mean(axis=1).argmax())
        return {**maps,
                "hidden0_trace": torch.stack([torch.as_tensor(maps["layer1_state"][0]),
                                              torch.as_tensor(maps["layer1_output"][0])]).numpy(),
                f"output{winner}_trace": torch.stack([torch.as_tensor(maps["layer2_state"][winner]),
                                                      torch.as_tensor(maps["layer2_output"][winner])]).numpy()}

    def feature_images(self) -> dict:
        weight = (self.layer1.linear.weight if self.config.spiking else self.layer1.weight).detach()
        side = int(round(weight.shape[1] ** 0.5))
        if side * side != weight.shape[1]:
            return {}
        return {"layer1": weight.view(-1, side, side).cpu().numpy()}

    def node_shapes(self, input_shape) -> list:
        inputs = (self.layer1.linear if self.config.spiking else self.layer1).in_features
        if int(torch.tensor(input_shape).prod()) != inputs:
            raise ValueError(f"the network takes {inputs} inputs, the data gives {input_shape}")
        return [tuple(input_shape), (self.config.hidden,), (self.num_classes,)]

    def inference_macs(self, input_shape) -> int:
        macs = self.layer1_size() + self.config.hidden * self.num_classes
        return macs * (self.time_steps if self.config.spiking else 1)

    def layer1_size(self) -> int:
        layer = self.layer1.linear if self.config.spiking else self.layer1
        return layer.weight.numel()


@register_model
def chevalier2019(num_classes: int = 10, **overrides) -> Chevalier2019:
    """Chevalier 2019: 784-100-10 leaky integrate-and-reset ReLU network, BPTT (T = 128)."""
    return Chevalier2019(dataclasses.replace(Chevalier2019Config(), **overrides), num_classes)


@register_model
def chevalier2019_ann(num_classes: int = 10, **overrides) -> Chevalier2019:
    """The same-size non-spiking MLP (784-100-10 ReLU), trained with chevalier2019's schedule."""
    return Chevalier2019(dataclasses.replace(Chevalier2019Config(spiking=False), **overrides), num_classes)
