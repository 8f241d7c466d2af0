"""STDP and reward-modulated STDP on convolution layers.

The update of one winner `(f, i, j)` of one sample, for every synapse `(c, u, v)` of feature `f`:

    pre  = number of spiking steps of input (c, i + u, j + v)     (0 if it never spiked)
    post = number of spiking steps of the winner
    rate = a_plus[f]  if pre >= post  (the input spiked at the same step as the winner or earlier)
           a_minus[f] otherwise
    W[f] += rate * ((W[f] - lower) * (upper - W[f]))   with the stabiliser,  W[f] += rate  without

after which the whole weight tensor is clamped to [lower, upper]. Features that did not win are
untouched; when two winners of one sample share a feature the later one's receptive field is used.
Anti-STDP is an STDP rule with a negative `a_plus` and a positive `a_minus`.

Batches, two algorithms:

- exact (the training stages' default): the samples of a batch learn one after the other, each
  forward pass seeing the previous sample's update, which is SpykeTorch's algorithm at any batch
  size (`spiking.sequential`). Decision layers use `reinforce_sequential_` (speculative rounds:
  decide the batch, verify with the rows each sample would really see, commit up to the first
  changed decision); hidden layers run the loop compiled on the CPU (`spiking.compiled`) and
  elsewhere use `STDP.update_sequential` inside `models.layers.HiddenLayer` (a chunk's forward
  passes stay valid until an update moves a non-negligible weight), and `STDP.update_one` for
  the one-sample steps of early learning.
- summed (`combine="sum"`, `--batch-update sum`): every sample's rates are computed against the
  same starting weights and summed, `W += (sum_b rate_b) * stabiliser(W)`, then one clamp. With
  `B = 1` this is the single-sample rule. `combine="sequential"` applies given winners one sample
  after the other (each stabiliser and clamp seeing the previous sample's result).

Data-parallel (`spiking.parallel`): summed mode sums the rates over the ranks (`apply_`), which
is the summed update of the global batch; exact mode runs each rank's shard sequentially and
sums the ranks' weight changes (`parallel.summed_change`).

Pure functions (`spiking.stdp_math`: `winner_rates`, `stdp_rates`, `apply_stdp_`, re-exported
here) do the arithmetic; `STDP` and `RSTDP` hold the rates as buffers (saved in `state_dict`,
never requiring grad) and a reference to the conv layer, which is not registered as a submodule
so that its weight is not duplicated in the state dict.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn as nn

from . import functional as sf
from . import parallel
from ._checks import check_int, check_rank, check_same_shape
from .remember import mark_within_bounds, within_bounds
from .sequential import NEGLIGIBLE_WEIGHT, chained_versions, rule_step
from .stdp_math import (apply_stdp_, as_winner_tensor, check_winners, dense_rates, stdp_rates,
                        winner_rates)


def _rate_pairs(learning_rate, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    def is_pair(x):
        return (isinstance(x, (tuple, list)) and len(x) == 2
                and all(isinstance(v, numbers.Real) or (isinstance(v, torch.Tensor) and v.numel() == 1)
                        for v in x))
    if is_pair(learning_rate):
        pairs = [learning_rate] * features
    elif isinstance(learning_rate, (tuple, list)) and len(learning_rate) == features and all(
            is_pair(p) for p in learning_rate):
        pairs = list(learning_rate)
    else:
        raise ValueError(f"learning_rate must be one (a_plus, a_minus) pair or a list of "
                         f"{features} pairs (one per feature), got {learning_rate!r}")
    rates = torch.tensor([[float(a), float(b)] for a, b in pairs], dtype=torch.float32)
    return rates[:, 0].contiguous(), rates[:, 1].contiguous()


class STDP(nn.Module):
    """Spike-timing-dependent plasticity of one `Convolution` (see the module docstring).

    `learning_rate` is one signed `(a_plus, a_minus)` pair for all features or a list of
    `out_channels` pairs; the rates are the buffers `a_plus` and `a_minus` ([F]).
    """

    def __init__(self, conv_layer, learning_rate, use_stabilizer: bool = True,
                 lower_bound: float = 0, upper_bound: float = 1):
        super().__init__()
        if not hasattr(conv_layer, "weight") or conv_layer.weight.dim() != 4:
            raise TypeError("STDP needs a convolution layer with a weight of shape [F, C, kh, kw]")
        if not lower_bound < upper_bound:
            raise ValueError(f"lower_bound must be below upper_bound, got {lower_bound}, {upper_bound}")
        self.__dict__["conv_layer"] = conv_layer    # a reference, not a submodule (no duplicate)
        features = conv_layer.weight.shape[0]
        a_plus, a_minus = _rate_pairs(learning_rate, features)
        self.register_buffer("a_plus", a_plus.to(conv_layer.weight.device))
        self.register_buffer("a_minus", a_minus.to(conv_layer.weight.device))
        self.use_stabilizer = bool(use_stabilizer)
        self.lower_bound = float(lower_bound)
        self.upper_bound = float(upper_bound)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return tuple(self.conv_layer.weight.shape[-2:])

    @property
    def learning_rate(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-feature `(a_plus, a_minus)` pairs (0-d views of the buffers), as in SpykeTorch."""
        return [(self.a_plus[f], self.a_minus[f]) for f in range(self.a_plus.numel())]

    def update_learning_rate(self, feature: int, ap: float, an: float) -> None:
        """Set the rates of one feature."""
        feature = check_int(feature, "feature", 0)
        if feature >= self.a_plus.numel():
            raise ValueError(f"feature must be < {self.a_plus.numel()}, got {feature}")
        self.a_plus[feature] = float(ap)
        self.a_minus[feature] = float(an)

    def update_all_learning_rate(self, ap: float, an: float) -> None:
        """Set the rates of every feature."""
        self.a_plus.fill_(float(ap))
        self.a_minus.fill_(float(an))

    def rates(self, pre_counts, post_counts, winners, a_plus=None, a_minus=None):
        """Summed rates of a batch as `(features, rates)` (see `stdp_rates`); pure."""
        return stdp_rates(pre_counts, post_counts, winners,
                          self.a_plus if a_plus is None else a_plus,
                          self.a_minus if a_minus is None else a_minus, self.kernel_size)

    @torch.no_grad()
    def apply_(self, rates) -> None:
        """Add summed `(features, rates)` to the layer's weights (stabilised) and clamp;
        data-parallel, the rates are first summed over the ranks."""
        if parallel.active():
            dense = parallel.all_sum_(dense_rates(*rates, self.conv_layer.weight.shape[0]))
            features = dense.flatten(1).ne(0).any(dim=1).nonzero().flatten()
            rates = (features, dense[features])
        apply_stdp_(self.conv_layer.weight, *rates, self.use_stabilizer,
                    self.lower_bound, self.upper_bound)

    def _counts(self, input_spikes, potentials, output_spikes, winners, kwta, inhibition_radius):
        check_rank(input_spikes, 5, "input_spikes", "[B, T, C, H, W]")
        check_rank(potentials, 5, "potentials", "[B, T, F, H', W']")
        check_same_shape(potentials, output_spikes, "potentials", "output_spikes")
        batch, steps, channels, height, width = input_spikes.shape
        features, in_channels, kh, kw = self.conv_layer.weight.shape
        expected = (batch, steps, features, height - kh + 1, width - kw + 1)
        if channels != in_channels or tuple(potentials.shape) != expected:
            raise ValueError(f"potentials/output_spikes must be {list(expected)} for input "
                             f"{list(input_spikes.shape)} and weight {[features, in_channels, kh, kw]}, "
                             f"got {list(potentials.shape)}")
        if winners is None:
            winners = sf.get_k_winners(potentials, kwta, inhibition_radius, output_spikes)
        winners = as_winner_tensor(winners, batch, potentials.device)
        check_winners(winners, features, expected[3], expected[4])
        pre = input_spikes.sum(dim=1)
        post_map = output_spikes.sum(dim=1)                          # [B, F, H', W']
        f, r, c = winners.clamp(min=0).unbind(-1)
        post = post_map[torch.arange(batch, device=post_map.device).unsqueeze(1), f, r, c]
        return pre, post, winners

    @torch.no_grad()
    def forward(self, input_spikes, potentials, output_spikes, winners=None, kwta: int = 1,
                inhibition_radius: int = 0, combine: str = "sum") -> torch.Tensor:
        """Update the weights from one batch; returns the winners used (LongTensor [B, k, 3]).

        Shape: input_spikes [B, T, C, H, W]; potentials, output_spikes [B, T, F, H', W'];
        winners LongTensor [B, k, 3] (default: `get_k_winners(potentials, kwta,
        inhibition_radius, output_spikes)`).
        """
        pre, post, winners = self._counts(input_spikes, potentials, output_spikes, winners,
                                          kwta, inhibition_radius)
        self.update(pre, post, winners, combine=combine)
        return winners

    @torch.no_grad()
    def update_sequential(self, pre_counts, post_counts, winners) -> tuple[int, bool]:
        """Apply the samples' updates one after the other, until the first that matters.

        Each sample's update is `apply_stdp_` of its own rates on the weights the previous
        samples left, as a loop of single-sample calls would compute it (vectorised: a pass
        per level of repetition of a feature). An update *matters* when it changes a weight
        that is not negligible (|w| >= NEGLIGIBLE_WEIGHT before or after): a converged layer
        mostly leaves its rows unchanged or moves weights already below 1e-19, which cannot
        change any float32 potential that reaches a threshold >= MIN_SHORTCUT_THRESHOLD, so
        the forward passes of the next samples, computed before the update, stay valid.

        The winners must come from forward passes computed with the weights as they are now.
        Applies the updates of samples 0..j, where j is the first sample whose update matters
        (all samples if none does), and returns `(j + 1, whether none mattered)`.

        Shape: as `update`.
        """
        if parallel.active():
            raise ValueError("update_sequential keeps its updates on this rank: wrap it in "
                             "spiking.parallel.summed_change")
        batch = pre_counts.shape[0]
        weight = self.conv_layer.weight
        if not within_bounds(weight, self.lower_bound, self.upper_bound):
            raise ValueError("update_sequential needs weights within the bounds (the first update of "
                             "weights drawn outside them clamps every feature: use update)")
        sample, feature, rates = winner_rates(pre_counts, post_counts, winners, self.a_plus,
                                              self.a_minus, self.kernel_size)
        if feature.numel() == 0:
            return batch, True
        flat = weight.view(weight.shape[0], -1)
        versions, previous, following = chained_versions(flat, feature, rates.flatten(1), self.use_stabilizer,
                                                         self.lower_bound, self.upper_bound)
        rows = torch.where((previous >= 0).unsqueeze(1), versions[previous.clamp(min=0)], flat[feature])
        moved = (versions != rows) & ((rows.abs() >= NEGLIGIBLE_WEIGHT) | (versions.abs() >= NEGLIGIBLE_WEIGHT))
        matters = moved.any(dim=1)
        if bool(matters.any()):
            last = int(sample[matters].min())
            applied, clean = last + 1, False
        else:
            last, applied, clean = batch - 1, batch, True
        kept = sample <= last
        # the last kept update of each feature holds its final row
        latest = kept & ((following == len(feature)) | (sample[following.clamp(max=len(feature) - 1)] > last))
        flat[feature[latest]] = versions[latest]
        mark_within_bounds(weight, self.lower_bound, self.upper_bound)
        return applied, clean

    @torch.no_grad()
    def update_one(self, fields: torch.Tensor, features: torch.Tensor, steps: torch.Tensor) -> bool:
        """One sample's update from its winners' receptive fields, as `update` of that sample
        alone: `rate = a_plus[f]` where the input spiked at the winner's step or earlier
        (`pre >= post`), `a_minus[f]` elsewhere, stabilised, then clamped.

        Returns whether it moved a non-negligible weight (as `update_sequential`: whether
        forward passes computed before it may have changed); always true when the weights were
        outside the bounds, which it clamps as a whole (as `update`, even without winners).

        Shape: fields [n, C * kh * kw] (the winners' receptive fields' spike times, T where
        never), features LongTensor [n] (distinct), steps [n] (the winners' spiking steps).
        """
        weight = self.conv_layer.weight
        bounded = within_bounds(weight, self.lower_bound, self.upper_bound)
        flat = weight.view(weight.shape[0], -1)
        paired = fields <= steps.to(fields.dtype).unsqueeze(1)
        rates = torch.where(paired, self.a_plus[features].unsqueeze(1), self.a_minus[features].unsqueeze(1))
        rows = flat[features]
        new = rule_step(rows, rates, self.use_stabilizer, self.lower_bound, self.upper_bound)
        flat[features] = new
        if not bounded:
            weight.clamp_(self.lower_bound, self.upper_bound)
        mark_within_bounds(weight, self.lower_bound, self.upper_bound)
        if not bounded:
            return True
        moved = (new != rows) & ((rows.abs() >= NEGLIGIBLE_WEIGHT) | (new.abs() >= NEGLIGIBLE_WEIGHT))
        return bool(moved.any())

    @torch.no_grad()
    def update(self, pre_counts, post_counts, winners, combine: str = "sum",
               a_plus=None, a_minus=None) -> None:
        """The update from counts (the fast path's entry point); see the module docstring."""
        if combine == "sum":
            self.apply_(self.rates(pre_counts, post_counts, winners, a_plus, a_minus))
        elif combine == "sequential":
            if parallel.active():
                raise ValueError("combine='sequential' cannot be data-parallel: ranks hold different samples")
            for b in range(pre_counts.shape[0]):
                sample = slice(b, b + 1)
                self.apply_(self.rates(pre_counts[sample], post_counts[sample], winners[sample],
                                       None if a_plus is None or a_plus.dim() == 1 else a_plus[sample],
                                       None if a_minus is None or a_minus.dim() == 1 else a_minus[sample]))
        else:
            raise ValueError(f"combine must be 'sum' or 'sequential', got {combine!r}")


class RSTDP(nn.Module):
    """Reward-modulated STDP: a reward rule and a punish rule (two `STDP`) on one layer.

    Per sample, `reward = +1` applies the reward rule, `-1` the punish rule and `0` nothing.
    Both rules must share the layer, the bounds and the stabiliser setting, so that a batch
    mixing rewarded and punished samples is one summed update.

    Adaptive rates (Mozafari et al.): `adapt(hit, miss)` sets the reward rates to
    `base_reward * (miss * adaptive_int + adaptive_min)` and the punish rates to
    `base_punish * (hit * adaptive_int + adaptive_min)`, where the bases are the rules' rates at
    construction (buffers), so nothing compounds.
    """

    def __init__(self, reward: STDP, punish: STDP):
        super().__init__()
        if reward.conv_layer is not punish.conv_layer:
            raise ValueError("the reward and punish rules must act on the same conv layer")
        if (reward.use_stabilizer, reward.lower_bound, reward.upper_bound) != \
                (punish.use_stabilizer, punish.lower_bound, punish.upper_bound):
            raise ValueError("the reward and punish rules must share bounds and stabiliser")
        self.reward = reward
        self.punish = punish
        self.register_buffer("base_reward", torch.stack((reward.a_plus, reward.a_minus)).clone())
        self.register_buffer("base_punish", torch.stack((punish.a_plus, punish.a_minus)).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """The bases are settings and the current rates are state: loading rules saved with
        other bases (`--init-from` with new rates) keeps the saved adaptive scale and applies
        it to this module's bases (rate = saved rate * own base / saved base, elementwise;
        where the saved base is 0, the own base). Equal bases load unchanged (`--resume`)."""
        for rule, base in (("reward", self.base_reward), ("punish", self.base_punish)):
            theirs = state_dict.get(prefix + "base_" + rule)
            if theirs is None or theirs.shape != base.shape or torch.equal(theirs.to(base.device), base):
                continue
            theirs = theirs.to(base.device).double()
            for row, name in enumerate(("a_plus", "a_minus")):
                key = f"{prefix}{rule}.{name}"
                if key in state_dict and state_dict[key].shape == base[row].shape:
                    saved = state_dict[key].to(base.device).double()
                    scale = torch.where(theirs[row] != 0, saved / torch.where(theirs[row] != 0, theirs[row], 1.0), 1.0)
                    state_dict[key] = (base[row].double() * scale).to(state_dict[key].dtype)
            state_dict[prefix + "base_" + rule] = base.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_rates(cls, conv_layer, reward=(0.004, -0.003), punish=(-0.004, 0.0005),
                   use_stabilizer: bool = False, lower_bound: float = 0.2,
                   upper_bound: float = 0.8) -> "RSTDP":
        """The zoo's decision-layer rules by default."""
        return cls(STDP(conv_layer, reward, use_stabilizer, lower_bound, upper_bound),
                   STDP(conv_layer, punish, use_stabilizer, lower_bound, upper_bound))

    @property
    def conv_layer(self):
        return self.reward.conv_layer

    def sample_rates(self, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample rate tables `[B, F]` (a_plus, a_minus) for a reward vector `[B]`."""
        reward = reward.view(-1, 1).to(self.reward.a_plus.device)
        zero = torch.zeros_like(self.reward.a_plus)
        plus = torch.where(reward > 0, self.reward.a_plus, torch.where(reward < 0, self.punish.a_plus, zero))
        minus = torch.where(reward > 0, self.reward.a_minus, torch.where(reward < 0, self.punish.a_minus, zero))
        return plus, minus

    @torch.no_grad()
    def forward(self, input_spikes, potentials, output_spikes, winners, reward,
                combine: str = "sum") -> None:
        """Reward (+1), punish (-1) or leave (0) each sample; `reward` is a tensor [B].

        Shape: as `STDP.forward`, winners LongTensor [B, k, 3], reward [B].
        """
        pre, post, winners = self.reward._counts(input_spikes, potentials, output_spikes,
                                                 winners, 1, 0)
        self.update(pre, post, winners, torch.as_tensor(reward), combine)

    @torch.no_grad()
    def update(self, pre_counts, post_counts, winners, reward: torch.Tensor,
               combine: str = "sum") -> None:
        if reward.shape != (pre_counts.shape[0],):
            raise ValueError(f"reward must have shape [B={pre_counts.shape[0]}], got {tuple(reward.shape)}")
        plus, minus = self.sample_rates(reward)
        self.reward.update(pre_counts, post_counts, winners, combine, plus, minus)

    @torch.no_grad()
    def adapt(self, hit: float, miss: float, adaptive_min: float = 0.0,
              adaptive_int: float = 1.0) -> None:
        """Scale reward rates by the miss fraction and punish rates by the hit fraction."""
        reward_scale = miss * adaptive_int + adaptive_min
        punish_scale = hit * adaptive_int + adaptive_min
        reward = (self.base_reward.double() * reward_scale).float()
        punish = (self.base_punish.double() * punish_scale).float()
        self.reward.a_plus.copy_(reward[0]); self.reward.a_minus.copy_(reward[1])
        self.punish.a_plus.copy_(punish[0]); self.punish.a_minus.copy_(punish[1])
