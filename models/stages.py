"""The stage objects the trainer runs: unsupervised STDP of one layer, R-STDP of a head.

A stage reads node `input_node` ("times" or "final", as `needs` says), takes batches through
`step`, and tells the trainer through `limit` how many samples the next step may take without
straddling a learning-rate change (so batched training keeps the schedules exact).
"""
from __future__ import annotations

import torch

from spiking import parallel

from .layers import ADAPTIVE_WINDOW, HiddenLayer


class STDPStage:
    """Unsupervised STDP of one hidden layer."""
    kind = "stdp"
    needs = "times"
    supervised = False
    data_parallel = True        # its updates are sums over samples (spiking.parallel)
    exact = True                # the sequential algorithm at any batch size (False: summed)

    def __init__(self, name: str, layer: HiddenLayer, input_node: int):
        self.name, self.layer, self.input_node = name, layer, input_node

    def limit(self) -> int:
        return self.layer.limit()

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        pass

    def step(self, times: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        return self.layer.learn(times, exact=self.exact)

    def end_epoch(self) -> None:
        pass

    def rates(self) -> dict:
        return self.layer.rates()

    def probe(self, final: torch.Tensor) -> torch.Tensor:
        """The trained layer's (pooled) output final map, for spike-rate reports."""
        return self.layer.forward_final(final)


class RSTDPStage:
    """Supervised R-STDP of a decision head.

    The head's rates adapt after each window of about `window` training samples (silent ones
    included): reward rates = base * (miss * adaptive_int + adaptive_min), punish rates =
    base * (hit * adaptive_int + adaptive_min). The first window uses the base rates. Windows
    restart with every epoch, which is split into round(N / window) windows of nearly equal size
    (60,000 samples: sixty windows of 1,000, as the original's data-loader batches; 54,001: one
    of 1,001 and fifty-three of 1,000, rather than a last window of a single sample whose hit
    rate would zero the reward or punish rates for the next 1,000 samples).
    """
    kind = "rstdp"
    supervised = True           # validated every epoch, best epoch kept, early stopping
    data_parallel = True
    exact = True                # the sequential algorithm at any batch size (False: summed)

    def __init__(self, name: str, head, input_node: int, window: int = ADAPTIVE_WINDOW,
                 adaptive_min: float = 0.0, adaptive_int: float = 1.0):
        self.name, self.head, self.input_node = name, head, input_node
        self.needs = head.needs
        self.window, self.adaptive_min, self.adaptive_int = window, adaptive_min, adaptive_int
        self._counts, self._phase, self._sizes = [0, 0, 0], 0, [window]

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self._counts, self._phase = [0, 0, 0], 0      # correct, wrong, silent in this window
        count = max(1, round(size / self.window)) if size else 1
        self._sizes = [size // count + (1 if i < size % count else 0) for i in range(count)] if size \
            else [self.window]

    def _window_size(self) -> int:
        return self._sizes[min(self._phase, len(self._sizes) - 1)]

    def limit(self) -> int:
        return self._window_size() - sum(self._counts)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
        decisions = self.head.reinforce(inputs, labels, phase=self._phase, exact=self.exact)
        labels = labels.to(decisions.device)
        silent = int((decisions < 0).sum())
        correct = int((decisions == labels).sum())
        # data-parallel: the whole global batch's counts, so every rank adapts its rates alike
        counts = parallel.total(correct, len(labels) - correct - silent, silent)
        self._counts = [a + b for a, b in zip(self._counts, counts)]
        if sum(self._counts) >= self._window_size():
            self._adapt()
        return {"correct": counts[0], "wrong": counts[1], "silent": counts[2]}

    def _adapt(self) -> None:
        total = sum(self._counts)
        if total:
            self.head.adapt(self._counts[0] / total, self._counts[1] / total,
                            self.adaptive_min, self.adaptive_int)
            self._phase += 1
        self._counts = [0, 0, 0]

    def end_epoch(self) -> None:
        self._adapt()

    def rates(self) -> dict:
        return self.head.rates()


class LearnerStage:
    """A stage whose learning rule lives in a model object (`learner`) that trains on whole
    batches: gradient descent (BPTT), Hebbian learning, online teacher-driven rules.

    The learner provides `start_epoch(epoch)` and `train_batch(inputs, labels)`, which returns
    the decisions made while learning ([B], -1 = silent) for supervised stages or None; and
    `rates()` for the history. Supervised stages are validated every epoch by the trainer. A
    learner whose rule is online (`online_rule = True`: updated after every sample) gets its
    batches one sample at a time in exact mode (`--batch-update exact`, the default), so the
    batch size is only a setting of the data pipeline; with `--batch-update sum` it takes whole
    batches (its own batched deviation, e.g. tavanaei2017's `batch_update`).
    """

    data_parallel = False       # the learners keep their own (serial or averaged) updates
    exact = True                # online rules: one sample after the other at any batch size

    def __init__(self, name: str, kind: str, learner, supervised: bool, input_node: int = 0,
                 needs: str = "times"):
        self.name, self.kind, self.learner = name, kind, learner
        self.supervised, self.input_node, self.needs = supervised, input_node, needs

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self.learner.start_epoch(epoch)

    def limit(self) -> int:
        return 1 << 30

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
        if parallel.active():
            raise ValueError(f"stage {self.name} ({self.kind}) cannot be trained data-parallel")
        if self.exact and getattr(self.learner, "online_rule", False) and len(labels) > 1:
            # an online rule is defined sample by sample: a batch is a loop of single samples
            # (their random input draws, made per sample in order, are the batch's own)
            parts = [self.learner.train_batch(inputs[b:b + 1], labels[b:b + 1]) for b in range(len(labels))]
            decisions = None if parts[0] is None else torch.cat(parts)
        else:
            decisions = self.learner.train_batch(inputs, labels)
        if decisions is None:
            return {}
        labels = labels.to(decisions.device)
        silent = int((decisions < 0).sum())
        correct = int((decisions == labels).sum())
        return {"correct": correct, "wrong": len(labels) - correct - silent, "silent": silent}

    def end_epoch(self) -> None:
        pass

    def rates(self) -> dict:
        return self.learner.rates()
