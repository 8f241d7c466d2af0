"""Tavanaei & Maida (2017/2019) BP-STDP, as implemented by itsadeepizza: a two-layer
integrate-and-fire network trained by a spike-based approximation of backpropagation.

- Neurons (non-leaky integrate-and-fire), per step: U <- U + W in_t - S_prev (the original's
  "double reset": after a spike U is zeroed *and* the next step subtracts the spike;
  `double_reset=False` keeps only the zeroing, as the paper); S = 1[U > theta]; U = 0 where S.
- Every `window` (epsilon) steps, at t % epsilon == 0 (t = 0 included), over the last epsilon
  steps: xi_j = z_j - max_window S_out_j (z: one-hot target), so +1 for a silent target and -1
  for a firing non-target; dW_out = xi (x) c_hid (hidden spike counts in the window);
  delta_h = g_h * sum_j xi_j W_out_jh with g the hidden counts (`hidden_gate="count"`, the
  original) or 1[count > 0] (`"indicator"`, the paper), computed with the pre-update W_out;
  dW_hid = delta (x) c_in (input spike counts in the window); W += lr dW. Weights start U(0, 1)
  and are unbounded.
- The original's input window was never reset between samples (the first update of a sample
  used the previous sample's last input spikes); `window_reset=True` (default, the fix) resets
  it with the neurons; `False` keeps the leak (per batch row).
- Decision: the argmax of the output spike counts; silent = -1.
- Batches: each sample's update is computed from the same weights and the updates are summed
  (`batch_update="sum"`, default: to first order the online rule at the same learning rate, as
  the project's batched STDP) or averaged (`"mean"`: B times slower learning); batch size 1 is
  the original online rule.

`tavanaei2017` (Iris): 100 Gaussian receptive-field inputs (as itsadeepizza2023) -> 20 hidden
(theta 0.9) -> 3 (theta 5), epsilon 4, lr 0.1, T = 100.
`tavanaei2017_mnist`: 784 Bernoulli rate-coded inputs (spike probability 0.1 * pixel / 255 per
step, each spike lighting exactly its own pixel: the original's 2-D indexing lit whole rows,
which capped it at 50 %) -> 500 hidden -> 10, theta 5 / 5, epsilon 3, lr 0.002, T = 100.
"""
from __future__ import annotations

import dataclasses

import torch

from frontends import PixelInput, ReceptiveFields
from utils import derived_seed

from spiking.rules import bp_stdp_deltas
from spiking.settings import MAX_COUNT, setting, settings

from ._registry import register_model
from .base import NetworkModel
from .decision import Prediction
from .stages import LearnerStage


@settings
class Tavanaei2017Config:
    frontend: object = ReceptiveFields()
    rate: float = setting(0.1, low=0, high=1)                 # Bernoulli coding of pixels (pixel front end only)
    time_steps: int = setting(100, low=1, high=MAX_COUNT)
    hidden: int = setting(20, low=1, high=MAX_COUNT)
    hidden_threshold: float = setting(0.9, low=0)
    output_threshold: float = setting(5.0, low=0)
    window: int = setting(4, low=1, high=MAX_COUNT)
    learning_rate: float = setting(0.1, low=0)
    double_reset: bool = True
    hidden_gate: str = "count"
    window_reset: bool = True
    batch_update: str = "sum"
    default_epochs: tuple = (30,)
    default_batch_size: int = setting(1, low=1)
    default_patience: int = setting(30, low=1)     # 12 validation rows: keep the best epoch of the schedule


class Tavanaei2017(NetworkModel):
    predict_needs = "times"
    online_rule = True          # updated after every sample (exact mode loops over a batch)

    def __init__(self, config: Tavanaei2017Config = Tavanaei2017Config(), num_classes: int = 3,
                 inputs: int | None = None):
        super().__init__(config, config.frontend, num_classes)
        if config.batch_update not in ("sum", "mean"):
            raise ValueError(f"batch_update must be 'sum' or 'mean', got {config.batch_update!r}")
        if config.hidden_gate not in ("count", "indicator"):
            raise ValueError(f"hidden_gate must be 'count' or 'indicator', got {config.hidden_gate!r}")
        self.pixels = isinstance(config.frontend, PixelInput)
        if inputs is None:
            inputs = 784 if self.pixels else config.frontend.output_shape((len(config.frontend.ranges),))[0]
        self.time_steps = config.time_steps
        self.hidden_weight = torch.nn.Parameter(torch.rand(config.hidden, inputs), requires_grad=False)
        self.output_weight = torch.nn.Parameter(torch.rand(num_classes, config.hidden), requires_grad=False)
        self._leak = None
        self._generator = None

    def build_stages(self):
        return (LearnerStage("bpstdp_online", "bpstdp", self, supervised=True),)

    def generator(self, purpose, index=0) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(self.base_seed, purpose, index))

    def start_evaluation(self, split: str) -> None:
        self._generator = self.generator("evaluate", split)

    def input_spikes(self, inputs: torch.Tensor, generator) -> torch.Tensor:
        """[B, T, M] binary: Bernoulli rates of pixels, or the receptive fields' single spikes."""
        steps = torch.arange(self.time_steps, device=inputs.device).view(1, -1, 1)
        if not self.pixels:
            return (inputs.unsqueeze(1) == steps).float()
        p = self.config.rate * inputs.flatten(1).float() / 255.0
        draws = torch.rand((inputs.shape[0], self.time_steps, p.shape[1]), generator=generator)
        return (draws.to(inputs.device) < p.unsqueeze(1)).float()

    def simulate(self, spikes_in: torch.Tensor, labels: torch.Tensor | None = None,
                 return_hidden: bool = False):
        """Output spikes [B, T, N] (and hidden spikes [B, T, H] with `return_hidden`); with
        labels, BP-STDP updates every `window` steps."""
        c = self.config
        batch = spikes_in.shape[0]
        hidden_u = spikes_in.new_zeros(batch, c.hidden)
        out_u = spikes_in.new_zeros(batch, self.num_classes)
        hidden_s, out_s = torch.zeros_like(hidden_u), torch.zeros_like(out_u)
        windows = {"in": [], "hidden": [], "out": []}
        if labels is not None and not c.window_reset and self._leak is not None:
            windows["in"] = [w[:batch] for w in self._leak if w.shape[0] >= batch]
        target = torch.nn.functional.one_hot(labels, self.num_classes).float() if labels is not None else None
        outputs, hiddens = [], []
        for step in range(self.time_steps):
            x = spikes_in[:, step]
            hidden_u = hidden_u + x @ self.hidden_weight.t() - (hidden_s if c.double_reset else 0)
            hidden_s = (hidden_u > c.hidden_threshold).float()
            hidden_u = hidden_u * (1 - hidden_s)
            out_u = out_u + hidden_s @ self.output_weight.t() - (out_s if c.double_reset else 0)
            out_s = (out_u > c.output_threshold).float()
            out_u = out_u * (1 - out_s)
            outputs.append(out_s)
            hiddens.append(hidden_s)
            if target is not None:
                for name, value in (("in", x), ("hidden", hidden_s), ("out", out_s)):
                    windows[name] = (windows[name] + [value])[-c.window:]
                if step % c.window == 0:
                    self._update(target, windows)
        if target is not None and not c.window_reset:
            self._leak = windows["in"]
        if return_hidden:
            return torch.stack(outputs, dim=1), torch.stack(hiddens, dim=1)
        return torch.stack(outputs, dim=1)

    @torch.no_grad()
    def _update(self, target: torch.Tensor, windows: dict) -> None:
        c = self.config
        counts_in = torch.stack(windows["in"]).sum(dim=0)                    # [B, M]
        counts_hidden = torch.stack(windows["hidden"]).sum(dim=0)            # [B, H]
        fired = torch.stack(windows["out"]).amax(dim=0)                      # [B, N]
        d_output, d_hidden = bp_stdp_deltas(target, counts_in, counts_hidden, fired, self.output_weight,
                                            c.hidden_gate)
        scale = c.learning_rate / (len(target) if c.batch_update == "mean" else 1)
        self.output_weight += scale * d_output
        self.hidden_weight += scale * d_hidden

    # ---- the online BP-STDP learner
    def start_epoch(self, epoch: int) -> None:
        self._train_generator = self.generator("train", epoch)
        self._leak = None

    @torch.no_grad()
    def train_batch(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        spikes = self.simulate(self.input_spikes(inputs, self._train_generator), labels.to(inputs.device))
        return _decide(spikes.sum(dim=1))

    def rates(self) -> dict:
        return {"hidden_weight_mean": float(self.hidden_weight.mean()),
                "output_weight_mean": float(self.output_weight.mean())}

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        if self._generator is None:
            self.start_evaluation("default")
        counts = self.simulate(self.input_spikes(inputs, self._generator)).sum(dim=1)
        return Prediction(_decide(counts), counts, torch.full((len(counts), 1, 3), -1))

    def node_shapes(self, input_shape) -> list:
        inputs = self.hidden_weight.shape[1]
        if int(torch.tensor(input_shape).prod()) != inputs:
            raise ValueError(f"the network takes {inputs} inputs, the data gives {input_shape}")
        return [tuple(input_shape), (self.config.hidden,), (self.num_classes,)]

    def inference_macs(self, input_shape) -> int:
        return (self.hidden_weight.numel() + self.output_weight.numel()) * self.time_steps

    def feature_images(self) -> dict:
        side = int(round(self.hidden_weight.shape[1] ** 0.5))
        if not self.pixels or side * side != self.hidden_weight.shape[1]:
            return {}
        return {"hidden": self.hidden_weight.view(-1, side, side).cpu().numpy()}


def _decide(counts: torch.Tensor) -> torch.Tensor:
    return torch.where(counts.amax(dim=1) > 0, counts.argmax(dim=1), -1)


@register_model
def tavanaei2017(num_classes: int = 3, **overrides) -> Tavanaei2017:
    """Tavanaei & Maida 2017 BP-STDP on tabular data (Iris): 100 receptive fields -> 20 -> 3 IF."""
    return Tavanaei2017(dataclasses.replace(Tavanaei2017Config(), **overrides), num_classes)


@register_model
def tavanaei2017_mnist(num_classes: int = 10, **overrides) -> Tavanaei2017:
    """Tavanaei & Maida 2017 BP-STDP on images: Bernoulli rate coding, 784 -> 500 -> 10 IF."""
    config = Tavanaei2017Config(frontend=PixelInput(), hidden=500, hidden_threshold=5.0,
                                output_threshold=5.0, window=3, learning_rate=0.002,
                                default_epochs=(3,), default_batch_size=32)
    return Tavanaei2017(dataclasses.replace(config, **overrides), num_classes)
