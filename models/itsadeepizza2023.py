"""itsadeepizza (2023): single-layer R-STDP on Iris with Gaussian receptive-field latency coding.

- Input: each of the 4 features drives 25 Gaussian fields (sigma 0.5), each firing once at
  round((1 - g) * 100) when g >= 0.01 (`frontends.ReceptiveFields`): 100 inputs, T = 100.
- Neurons (3, current-based leaky integrate-and-fire, alpha = beta = 0.5, theta = 1), per step:
  U <- beta (U + I - S_prev);  I <- alpha I + W in_t;  S = 1[U > theta]
  (the input reaches U one step later). W [3, 100] ~ U(0, 1). State reset per sample.
- Decision: the argmax of the output spike counts (ties: the lowest index). For learning, an
  all-silent output counts as class 0 as in the original; for evaluation it is silence (-1).
- Reward per sample: correct: r[pred] = +1; wrong: r[pred] = -1 and r[target] = +1.
- R-STDP, once per sample after its 100 steps, soft-bounded pair-based STDP (tau = 10,
  A+ = 1.5, A- = 1, lr = 1e-4) computed with exponential traces:
      x_i(t) = sum_{t_p < t} exp(-(t - t_p) / tau)      (pre, same-step spikes excluded)
      y_j(t) = sum_{t_q <= t} exp(-(t - t_q) / tau)     (post, same-step spikes included)
      LTP_ji = sum_t s_post_j(t) x_i(t),  LTD_ji = sum_t s_pre_i(t) y_j(t)
      W += lr * r_j * W (1 - W) * (A+ LTP_ji - A- LTD_ji)
  which equals the original's loop over every pair of pre and post spike times.
- `post="pooled"` (faithful, default): the original aliased one post-spike list across the
  three outputs, so every output's history is the pooled spikes of all three (s_post_j and
  y_j are replaced by their sums over j); this bug works as a teacher signal and learns better.
  `post="own"`: each output's own spikes (the evident intent).
- Batches: each sample's update is computed from the same weights and the updates are
  averaged (a documented deviation); `--batch-size 1` (the default) is the original online rule.
"""
from __future__ import annotations

import dataclasses

import torch

from frontends import ReceptiveFields

from spiking.rules import reward_modulated_pair_stdp
from spiking.settings import setting, settings

from ._registry import register_model
from .base import NetworkModel
from .decision import Prediction
from .stages import LearnerStage


@settings
class ItsADeepizza2023Config:
    frontend: ReceptiveFields = ReceptiveFields()
    alpha: float = setting(0.5, low=0)
    beta: float = setting(0.5, low=0)
    threshold: float = setting(1.0, low=0)
    learning_rate: float = setting(1e-4, low=0)
    a_plus: float = setting(1.5, low=0)
    a_minus: float = setting(1.0, low=0)
    tau: float = setting(10.0, above=0)
    post: str = "pooled"
    default_epochs: tuple = (300,)
    default_batch_size: int = setting(1, low=1)
    # learning is slow (lr 1e-4; still rising after 150 epochs of 108 rows) and 12 validation
    # rows move in 8-point steps: keep the best validation epoch of the whole schedule
    default_patience: int = setting(300, low=1)


def simulate_lif(times: torch.Tensor, weight: torch.Tensor, time_steps: int, alpha: float,
                 beta: float, threshold: float) -> torch.Tensor:
    """Output spikes [B, T, N] of current-based LIF neurons fed inputs that spike once at
    `times` ([B, M] uint8, T = never). weight [N, M]."""
    batch = times.shape[0]
    potential = weight.new_zeros(batch, weight.shape[0])
    current, spikes = torch.zeros_like(potential), torch.zeros_like(potential)
    out = []
    for step in range(time_steps):
        potential = beta * (potential + current - spikes)
        current = alpha * current + (times == step).to(weight.dtype) @ weight.t()
        spikes = (potential > threshold).to(weight.dtype)
        out.append(spikes)
    return torch.stack(out, dim=1)


def reward_vector(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """r [B, classes]: +1 on a correct prediction; -1 on a wrong one and +1 on the target."""
    reward = torch.zeros(len(labels), classes)
    rows = torch.arange(len(labels))
    correct = predicted == labels
    reward[rows, predicted] = torch.where(correct, 1.0, -1.0)
    reward[rows[~correct], labels[~correct]] = 1.0
    return reward


class ItsADeepizza2023(NetworkModel):
    predict_needs = "times"
    online_rule = True          # updated after every sample (exact mode loops over a batch)

    def __init__(self, config: ItsADeepizza2023Config = ItsADeepizza2023Config(), num_classes: int = 3):
        super().__init__(config, config.frontend, num_classes)
        if config.post not in ("pooled", "own"):
            raise ValueError(f"post must be 'pooled' or 'own', got {config.post!r}")
        inputs = config.frontend.output_shape((len(config.frontend.ranges),))[0]
        self.weight = torch.nn.Parameter(torch.rand(num_classes, inputs), requires_grad=False)

    def build_stages(self):
        return (LearnerStage("rstdp_online", "rstdp", self, supervised=True),)

    def output_spikes(self, times: torch.Tensor) -> torch.Tensor:
        c = self.config
        return simulate_lif(times, self.weight, self.time_steps, c.alpha, c.beta, c.threshold)

    # ---- the online R-STDP learner
    def start_epoch(self, epoch: int) -> None:
        pass

    @torch.no_grad()
    def train_batch(self, times: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.config
        post = self.output_spikes(times)                                    # [B, T, N]
        counts = post.sum(dim=1)
        predicted = counts.argmax(dim=1)                                    # silent -> class 0
        reward = reward_vector(predicted.cpu(), labels.cpu(), self.num_classes).to(post.device)
        pre = (times.unsqueeze(1) == torch.arange(self.time_steps, device=times.device).view(1, -1, 1))
        pre = pre.to(post.dtype)                                            # [B, T, M]
        if c.post == "pooled":
            post = post.sum(dim=2, keepdim=True).expand_as(post)
        self.weight += reward_modulated_pair_stdp(self.weight, pre, post, reward, c.learning_rate,
                                                  c.a_plus, c.a_minus, c.tau)
        return torch.where(counts.amax(dim=1) > 0, predicted, -1)

    def rates(self) -> dict:
        return {"weight_mean": float(self.weight.mean())}

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, start: int = 0, final: bool = False) -> Prediction:
        counts = self.output_spikes(inputs).sum(dim=1)
        classes = torch.where(counts.amax(dim=1) > 0, counts.argmax(dim=1), -1)
        return Prediction(classes, counts, torch.full((len(classes), 1, 3), -1))

    def node_shapes(self, input_shape) -> list:
        if tuple(input_shape) != (self.weight.shape[1],):
            raise ValueError(f"the layer takes {self.weight.shape[1]} inputs, the data gives {input_shape}")
        return [tuple(input_shape), (self.num_classes,)]

    def inference_macs(self, input_shape) -> int:
        return self.weight.numel() * self.time_steps


@register_model
def itsadeepizza2023(num_classes: int = 3, **overrides) -> ItsADeepizza2023:
    """itsadeepizza 2023: Gaussian-field latency coding + 3 LIF outputs, online R-STDP (Iris)."""
    return ItsADeepizza2023(dataclasses.replace(ItsADeepizza2023Config(), **overrides), num_classes)
