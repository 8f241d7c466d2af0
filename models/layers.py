"""Hidden conv layers of the STDP / R-STDP zoo (decision layers are in `models.decision`; their
combinations, inception branches and residual blocks, in `models.composite`).

A block maps node `k` to node `k + 1` in two forms: `forward_times` (exact first-spike times
uint8 [B, C, H, W], T = never) and `forward_final` (the final map of the cumulative wave, {0, 1},
one convolution per layer). Weights stay non-negative (every rule clamps to bounds >= 0), so
potentials never decrease in time and both forms agree (`final = times < T`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from spiking import compiled, engine
from spiking import functional as sf
from spiking import parallel
from spiking import times as st
from spiking.layers import Convolution
from spiking.learning import RSTDP, STDP
from spiking.remember import mark_within_bounds, within_bounds
from spiking.sequential import MIN_SHORTCUT_THRESHOLD
from spiking.settings import MAX_COUNT, require, setting, settings

# the zoo's shared constants (Mozafari et al. 2018/2019, SpykeTorch's MozafariDeep)
WEIGHT_MEAN, WEIGHT_STD = 0.8, 0.05
STDP_RATES = (0.004, -0.003)
RATE_DOUBLING_EVERY, MAX_A_PLUS, A_MINUS_RATIO = 500, 0.15, -0.75
ADAPTIVE_WINDOW = 1000
MAX_KERNEL = 64


@settings
class HiddenSpec:
    """A hidden layer: zero-pad the input by `pad` -> conv -> fire(threshold) -> max-pool
    (`pool` = kernel = stride unless `pool_stride`; `pool_padding` is the pooling's own
    padding, which never wins).

    Learning (STDP stage): pointwise inhibition -> k winners (`kwta`, `inhibition_radius`) ->
    STDP with `learning_rate`; every `rate_doubling_every` samples `a_plus` doubles (capped at
    `max_a_plus`) and `a_minus = a_minus_ratio * a_plus` (0 disables the schedule). With
    `inhibit_input`, learning sees the input wave after pointwise inhibition (inference does not).

    Threshold calibration (`target_activity` > 0): after each STDP epoch the layer-wide threshold
    is set so that that fraction of the layer's (pooled) outputs spike on up to
    `CALIBRATION_IMAGES` of the epoch's training images; with `adapt_every` N > 0 it is also
    re-set every N training samples of an epoch, on those N samples (adaptation while STDP
    learns, so the weights grow towards the new threshold). `threshold` is then the start value.
    """
    in_channels: int = setting(low=1, high=MAX_COUNT)
    out_channels: int = setting(low=1, high=MAX_COUNT)
    kernel_size: int = setting(low=1, high=MAX_KERNEL)
    threshold: float = setting(low=0)
    kwta: int = setting(low=1, high=MAX_COUNT)
    inhibition_radius: int = setting(low=0, high=MAX_COUNT)
    pad: int = setting(0, low=0, high=MAX_KERNEL)
    pool: int = setting(1, low=1, high=MAX_KERNEL)
    pool_stride: int | None = setting(None, low=1, high=MAX_KERNEL)
    pool_padding: int = setting(0, low=0, high=MAX_KERNEL)
    learning_rate: tuple = STDP_RATES
    use_stabilizer: bool = True
    lower_bound: float = 0.0
    upper_bound: float = 1.0
    rate_doubling_every: int = setting(RATE_DOUBLING_EVERY, low=0)
    max_a_plus: float = setting(MAX_A_PLUS, low=0)
    a_minus_ratio: float = A_MINUS_RATIO
    weight_mean: float = WEIGHT_MEAN
    weight_std: float = setting(WEIGHT_STD, low=0)
    inhibit_input: bool = False      # pointwise inhibition of the input wave while learning only
    target_activity: float = setting(0.0, low=0, high=1)     # 0: the threshold stays as set
    adapt_every: int = setting(0, low=0, high=MAX_COUNT)

    def check(self) -> None:
        check_rule(self.learning_rate, "learning_rate", self.lower_bound, self.upper_bound)
        require(self.adapt_every == 0 or self.target_activity > 0,
                f"adapt_every ({self.adapt_every}) needs a target_activity > 0")
        require(2 * self.pool_padding <= self.pool,
                f"pool_padding must be <= pool / 2 ({self.pool}), got {self.pool_padding}")


def check_rule(rates: tuple, name: str, lower: float, upper: float) -> None:
    require(len(rates) == 2, f"{name} must be a pair (a_plus, a_minus), got {rates!r}")
    require(0 <= lower < upper, f"the weight bounds must satisfy 0 <= lower_bound < upper_bound "
                                f"(weights stay non-negative), got {lower} and {upper}")


def pad4(pad: int) -> tuple[int, int, int, int]:
    return (pad, pad, pad, pad)


def conv_size(size: int, pad: int, kernel: int) -> int:
    return size + 2 * pad - kernel + 1


def fitting_pad(kernel: int, size: int) -> int:
    """Zero padding on each side that lets a map of `size` fit a kernel: ceil((kernel - size)
    / 2) where the map is smaller, else 0 (as MozafariShallow.py pads its C1 maps)."""
    return -(-max(kernel - size, 0) // 2)


def conv_macs(weight: torch.Tensor, pad: int, kernel: int, shape) -> int:
    """Multiply-adds of one convolution by `weight` on an input of `shape` [C, H, W]."""
    _, height, width = shape
    return weight.numel() * conv_size(height, pad, kernel) * conv_size(width, pad, kernel)


class LayoutError(ValueError):
    """Layers whose settings do not fit together (a `--set` of one layer's maps without the
    next layer's `in_channels`), found from the node shapes before any work."""


def check_input_maps(name: str, setting: str, expected: int, shape) -> None:
    """Refuse an input node of another number of maps than the layer's kernels read; `setting`:
    the config group that sets the layer (inception's conv3a..c: "branch")."""
    if shape[0] != expected:
        raise LayoutError(f"{name} reads {expected} input maps, but its input has {shape[0]} "
                          f"(--set {setting}.in_channels={shape[0]})")


class HiddenLayer(nn.Module):
    """`HiddenSpec` as a block. Node shapes: [B, C, H, W] -> pooled [B, F, H'', W'']."""

    def __init__(self, spec: HiddenSpec, time_steps: int, name: str, setting: str | None = None):
        super().__init__()
        self.spec, self.time_steps, self.name = spec, time_steps, name
        self.setting = setting or name      # the config group that sets it (for error messages)
        self.conv = Convolution(spec.in_channels, spec.out_channels, spec.kernel_size,
                                spec.weight_mean, spec.weight_std)
        self.stdp = STDP(self.conv, spec.learning_rate, spec.use_stabilizer,
                         spec.lower_bound, spec.upper_bound)
        # samples this layer has learned from (drives the rate-doubling schedule; resumable)
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.long))
        if spec.target_activity > 0:
            # the calibrated threshold (checkpointed); absent when the threshold stays as set
            self.register_buffer("calibrated_threshold", torch.tensor(spec.threshold, dtype=torch.float64))
        self.rstdp = None

    def add_reward_rules(self, reward, punish, lower_bound=0.0, upper_bound=1.0,
                         use_stabilizer: bool = False) -> None:
        """Make this layer R-STDP-trainable too (deepr2024, mozafari2018_shallow), sharing the
        conv weights."""
        self.rstdp = RSTDP(STDP(self.conv, reward, use_stabilizer, lower_bound, upper_bound),
                           STDP(self.conv, punish, use_stabilizer, lower_bound, upper_bound))

    @property
    def threshold(self) -> float:
        calibrated = getattr(self, "calibrated_threshold", None)
        return self.spec.threshold if calibrated is None else float(calibrated)

    @torch.no_grad()
    def calibrate(self, times: torch.Tensor, batch_size: int = 128) -> float:
        """Set the threshold so that a fraction `spec.target_activity` of the layer's pooled
        outputs spike on the input spike times [N, C, H, W]: the largest final potential that
        leaves round(target * outputs) of them above it (a final potential is the most a
        neuron reaches, and pooling and thresholding commute). With data parallelism the ranks'
        thresholds are averaged. Returns the threshold."""
        pooled = []
        for begin in range(0, len(times), batch_size):
            potentials = self.final_potentials(st.final_map(times[begin:begin + batch_size], self.time_steps))
            if self.spec.pool > 1:
                potentials = F.max_pool2d(potentials, self.spec.pool, self.spec.pool_stride or self.spec.pool,
                                          self.spec.pool_padding)
            pooled.append(potentials.flatten())
        values = torch.cat(pooled).double() if pooled else None
        if values is None or values.numel() == 0:
            # nothing to calibrate on (an empty data-parallel shard): keep the current threshold
            threshold = torch.tensor(self.threshold, dtype=torch.float64, device=self.calibrated_threshold.device)
        else:
            above = int(round(self.spec.target_activity * values.numel()))
            threshold = values.max() if above <= 0 else values.kthvalue(max(1, values.numel() - above)).values
        if parallel.active():
            threshold = parallel.all_sum_(threshold.reshape(1).to(self.calibrated_threshold.device))[0] \
                / parallel.total(1)
        self.calibrated_threshold.fill_(float(threshold))
        return self.threshold

    # ---- forward
    def padded(self, times: torch.Tensor) -> torch.Tensor:
        return st.pad_times(times, pad4(self.spec.pad), self.time_steps)

    def fire_times(self, times: torch.Tensor) -> torch.Tensor:
        """Un-pooled spike times of every neuron of the conv layer."""
        return engine.spike_times(self.padded(times), self.conv.weight, self.threshold, self.time_steps)

    def final_potentials(self, final: torch.Tensor) -> torch.Tensor:
        # the convolution's own zero padding: oneDNN skips the padded taps (about 2x faster on
        # small maps than convolving an explicitly padded input); subnormal weights as zeros
        # (`engine.forward_weight`: no spike changes, the convolution runs ~10x faster)
        return sf.conv2d(final, engine.forward_weight(self.conv.weight, self.threshold), padding=self.spec.pad)

    def fire_final(self, final: torch.Tensor) -> torch.Tensor:
        return (self.final_potentials(final) > self.threshold).to(final.dtype)

    def forward_times(self, times: torch.Tensor) -> torch.Tensor:
        fired = self.fire_times(times)
        if self.spec.pool <= 1:
            return fired
        return st.pool_times(fired, self.spec.pool, self.spec.pool_stride, self.spec.pool_padding)

    def forward_final(self, final: torch.Tensor) -> torch.Tensor:
        if self.spec.pool <= 1:
            return self.fire_final(final)
        # thresholding is monotone, so pool the potentials first: the comparison and the
        # conversion then touch a pool^2 times smaller tensor
        pooled = F.max_pool2d(self.final_potentials(final), self.spec.pool,
                              self.spec.pool_stride or self.spec.pool, self.spec.pool_padding)
        return (pooled > self.threshold).to(final.dtype)

    # ---- STDP
    def limit(self) -> int:
        """How many samples the next `learn` call may take without straddling a rate change."""
        every = self.spec.rate_doubling_every
        if every <= 0:
            return 1 << 30
        upcoming = int(self.samples_seen) + 1
        return every if upcoming % every == 0 else every - upcoming % every

    @torch.no_grad()
    def _schedule(self) -> None:
        every = self.spec.rate_doubling_every
        if every > 0 and (int(self.samples_seen) + 1) % every == 0:
            # a_plus from feature 0's current rate, in float32 as the original
            a_plus = torch.minimum(self.stdp.a_plus[0] * 2, torch.tensor(self.spec.max_a_plus))
            a_minus = a_plus * self.spec.a_minus_ratio
            self.stdp.update_all_learning_rate(a_plus.item(), a_minus.item())

    def survivors(self, padded: torch.Tensor, weight: torch.Tensor | None = None):
        """Conv, fire and pointwise inhibition of padded input times (`engine.earliest_spikes`),
        with this layer's weights or `weight` (e.g. some features silenced)."""
        weight = self.conv.weight if weight is None else weight
        return engine.earliest_spikes(padded, weight, self.threshold, self.time_steps)

    def pick(self, survivors):
        """k-WTA of survivors: (winners [B, k, 3], the winners' spiking steps [B, k])."""
        winners = engine.survivor_winners(survivors, self.spec.kwta, self.spec.inhibition_radius)
        _, r, c = winners.clamp(min=0).unbind(-1)
        b = torch.arange(winners.shape[0], device=winners.device).unsqueeze(1)
        return winners, (self.time_steps - survivors.times[b, r, c]).float()

    def winners(self, padded: torch.Tensor):
        """Pointwise inhibition and k-WTA from padded input times: (winners [B, k, 3], the
        winners' spiking steps [B, k])."""
        return self.pick(self.survivors(padded))

    @torch.no_grad()
    def learn(self, times: torch.Tensor, exact: bool = True) -> dict:
        """One STDP step on a batch of input spike times [B, C, H, W]; returns batch statistics.

        `exact`: the samples learn one after the other, each forward pass seeing the previous
        sample's update (SpykeTorch's algorithm, whatever the batch size); otherwise every
        sample's rates are computed against the batch's starting weights and summed."""
        batch = times.shape[0]
        if batch > self.limit():
            raise ValueError(f"batch of {batch} straddles a learning-rate change; take <= {self.limit()}")
        self._schedule()
        if exact:
            with parallel.summed_change(self.conv.weight, self.spec.lower_bound, self.spec.upper_bound):
                won = self._learn_sequential(times)
        else:
            winners, post, padded = self.learning_winners(times)
            self.stdp.update(self.time_steps - padded.float(), post, winners)
            won = int((winners[..., 0] >= 0).sum())
        self.samples_seen += parallel.total(batch)      # the global batch when data-parallel
        return {"winners": won}

    def learning_winners(self, times: torch.Tensor):
        """What STDP learns from, for input spike times [B, C, H, W]: (winners [B, k, 3] after
        pointwise inhibition and k-WTA, the winners' spiking steps [B, k], the padded input)."""
        padded = self.learning_input(times)
        winners, post = self.winners(padded)
        return winners, post, padded

    def learning_input(self, times: torch.Tensor) -> torch.Tensor:
        """The padded input spike times STDP sees (with `inhibit_input`, only the earliest map
        at each input position, the lowest index among equals: kheradpisheh2018's STDP stage)."""
        padded = self.padded(times)
        if self.spec.inhibit_input:
            padded = st.pointwise_inhibition_times(padded, torch.ones(padded.shape, device=padded.device),
                                                   self.time_steps)[0]
        return padded

    def _learn_sequential(self, times: torch.Tensor) -> int:
        """The samples of a batch one after the other. On the CPU (numba present, float32
        weights) the whole batch is one call of the compiled loop (`spiking.compiled`).
        Otherwise (CUDA; the tests also force it on the CPU) it runs in chunks whose forward
        passes are batched: a chunk's forward passes (computed with the weights at its start) stay valid
        until a sample's update moves a non-negligible weight (`STDP.update_sequential`); the
        samples after it are taken again. The chunk doubles while no update matters (a
        converged layer: whole batches at once) and shrinks to what was kept when one does
        (early learning: one sample at a time). A chunk of one sample takes the lean path
        (`engine.sample_winners`, `STDP.update_one`: about half the tensor operations of a
        batched call); so do weights outside the bounds (the first update clamps the whole
        tensor) and thresholds below MIN_SHORTCUT_THRESHOLD, one sample at a time."""
        weight, spec = self.conv.weight, self.spec
        padded = self.learning_input(times)
        if compiled.usable(padded, weight):
            # the same loop, compiled: one call for the batch (`spiking.compiled`)
            bounded = within_bounds(weight, spec.lower_bound, spec.upper_bound)
            winners = compiled.stdp_sequential_(
                padded, weight, self.threshold, self.time_steps, spec.kwta, spec.inhibition_radius,
                self.stdp.a_plus, self.stdp.a_minus, spec.use_stabilizer, spec.lower_bound,
                spec.upper_bound, bounded)
            if bounded or len(padded):          # a sample, winners or not, clamps them all
                mark_within_bounds(weight, spec.lower_bound, spec.upper_bound)
            return int((winners[..., 0] >= 0).sum())
        shortcut = self.threshold >= MIN_SHORTCUT_THRESHOLD
        batch, start, won = times.shape[0], 0, 0
        chunk, run = getattr(self, "_chunk", (1, 1.0))
        while start < batch:
            bounded = within_bounds(weight, spec.lower_bound, spec.upper_bound)
            size = min(chunk, batch - start) if bounded and shortcut else 1
            if size == 1:
                features, _, steps, fields = engine.sample_winners(
                    padded[start], weight, self.threshold, self.time_steps, spec.kwta, spec.inhibition_radius)
                # a silent sample updates nothing, but still clamps weights outside the bounds
                since, features = weight._version, torch.tensor(features, dtype=torch.long, device=weight.device)
                moved = self.stdp.update_one(fields, features, torch.tensor(steps, device=weight.device))
                if bounded:          # else the update clamped every row
                    engine.patch_forward_matrix(weight, self.threshold, features, since)
                applied, clean = 1, not moved
                won += len(steps)
            else:
                winners, post = self.winners(padded[start:start + size])
                applied, clean = self.stdp.update_sequential(self.time_steps - padded[start:start + size].float(),
                                                             post, winners)
                won += int((winners[:applied, :, 0] >= 0).sum())
            start += applied
            # chunk size: about the typical run of samples between updates that matter (a
            # chunk costs a fixed overhead plus its forward passes; the passes after the run's
            # end are lost), doubling while nothing matters
            if clean:
                chunk = min(2 * chunk, batch)
            else:
                run = 0.8 * run + 0.2 * applied
                chunk = max(1, min(batch, int(1.25 * run)))
        self._chunk = (chunk, run)
        return won

    def rates(self) -> dict:
        return {"a_plus": float(self.stdp.a_plus[0]), "a_minus": float(self.stdp.a_minus[0])}

    # ---- bookkeeping
    def stdp_layers(self) -> list:
        return [self]

    def macs(self, shape) -> int:
        """Multiply-adds of one convolution of this layer on an input of `shape` [C, H, W]."""
        return conv_macs(self.conv.weight, self.spec.pad, self.spec.kernel_size, shape)

    def output_shape(self, shape):
        check_input_maps(self.name, self.setting, self.spec.in_channels, shape)
        _, height, width = shape
        height, width = (conv_size(s, self.spec.pad, self.spec.kernel_size) for s in (height, width))
        if self.spec.pool > 1:
            stride = self.spec.pool_stride or self.spec.pool
            height, width = ((s + 2 * self.spec.pool_padding - self.spec.pool) // stride + 1
                             for s in (height, width))
        return (self.spec.out_channels, height, width)
