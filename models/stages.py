"""The stage contract between the trainer and a model, and the stage kinds of the zoo.

A model's `build_stages()` returns its stages in training order. The trainer treats every stage
alike (`Stage`): for each of its epochs it walks the training split's node `input_node` (spike
times or final maps, as `needs` says) in batches, in the order `sample_order` says, calling
`step`, and `limit` tells it how many samples the next step may take without straddling a
learning-rate change (so batched training keeps the schedules exact). Supervised stages are then
validated: the best epoch is kept and early stopping applies. Stage kinds: unsupervised STDP
(`STDPStage`), R-STDP of a decision head (`RSTDPStage`), a learner object's own rule
(`LearnerStage`: BPTT, Hebbian, online rules) and a closed-form linear readout
(`models.readout.ReadoutStage`, which gathers features in its steps and fits at the epoch's end).
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from spiking import parallel

from .layers import ADAPTIVE_WINDOW, HiddenLayer

CALIBRATION_IMAGES = 1024       # training images an after-epoch threshold calibration looks at

Validation = Callable[[], tuple]      # () -> (validation node [N, ...] numpy, labels [N])


@runtime_checkable
class Stage(Protocol):
    """What the trainer calls on every stage.

    - `name`, `kind` (for logs and history only: the trainer never branches on it);
    - `input_node`, `needs` ("times" | "final"): what the stage reads;
    - `supervised`: validated after every epoch, best epoch kept, early stopping;
    - `data_parallel`: whether it can be trained data-parallel: its steps run sharded over the
      ranks (`spiking.parallel` sums their updates), or, when `replicated`, every rank takes
      whole batches and computes the same result;
    - `sample_order`: "shuffled" (a seeded permutation per epoch) or "natural" (split order);
    - `configure(exact, seed)`: once before training: `exact` is `--batch-update exact`;
    - `epochs(requested)`: how many epochs it runs when the run asks for `requested`;
    - `limit()`, `start_epoch(size, epoch)`, `step(inputs, labels) -> counts`, `end_epoch(validation)`:
      the epoch; `step` returns summed counts ("correct", "wrong", "silent" for decisions made
      while learning); `end_epoch` may fit (given the validation data) and returns entries for the
      history row ("val_accuracy" when it measured it itself, which the trainer then keeps);
    - `rates()`: learning rates for the history; `activity(final)`: the fraction of its output
      neurons that spike on a final map of its input (None when it has no spiking output);
    - `trained_modules()`: the modules whose weights and buffers it learns (what `--init-from`
      copies for a stage given 0 epochs);
    - `validates_start`: (supervised stages) the trainer also validates the weights the stage
      starts from, as its epoch 0, and keeps them unless an epoch beats them: for a stage that
      refines layers an earlier stage trained (deepr2024's conv3+decision).
    """
    name: str
    kind: str
    input_node: int
    needs: str
    supervised: bool
    data_parallel: bool
    replicated: bool
    sample_order: str
    validates_start: bool

    def configure(self, exact: bool, seed: int) -> None: ...
    def epochs(self, requested: int) -> int: ...
    def limit(self) -> int: ...
    def start_epoch(self, size: int, epoch: int) -> None: ...
    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict: ...
    def end_epoch(self, validation: Validation) -> dict: ...
    def rates(self) -> dict: ...
    def activity(self, final: torch.Tensor) -> float | None: ...
    def trained_modules(self) -> list: ...


class StageBase:
    """Defaults of the `Stage` contract: shuffled, as many epochs as asked, no rate limit,
    nothing to do at the epoch's ends, no rates, no spiking output."""
    needs = "times"
    supervised = False
    data_parallel = False
    replicated = False
    sample_order = "shuffled"
    validates_start = False
    exact = True                # the sequential algorithm at any batch size (False: summed)
    seed = 0

    def configure(self, exact: bool, seed: int) -> None:
        self.exact, self.seed = exact, seed

    def epochs(self, requested: int) -> int:
        return requested

    def limit(self) -> int:
        return 1 << 30

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        pass

    def end_epoch(self, validation: Validation | None = None) -> dict:
        return {}

    def rates(self) -> dict:
        return {}

    def activity(self, final: torch.Tensor) -> float | None:
        return None

    def trained_modules(self) -> list:
        return []


def decision_counts(decisions: torch.Tensor, labels: torch.Tensor) -> dict:
    """{"correct", "wrong", "silent"} counts of decisions [B] (-1 = silent) against labels [B]."""
    labels = labels.to(decisions.device)
    silent = int((decisions < 0).sum())
    correct = int((decisions == labels).sum())
    return {"correct": correct, "wrong": len(labels) - correct - silent, "silent": silent}


class STDPStage(StageBase):
    """Unsupervised STDP of one hidden layer, with its threshold calibration when the layer's
    spec asks for it (`target_activity`: re-set after each epoch on the epoch's first
    `CALIBRATION_IMAGES` samples; `adapt_every` N: also after every N samples of an epoch, on
    those samples; steps never straddle such a boundary, so every batch size computes the same)."""
    kind = "stdp"
    data_parallel = True        # its updates are sums over samples (spiking.parallel)

    def __init__(self, name: str, layer: HiddenLayer, input_node: int):
        self.name, self.layer, self.input_node = name, layer, input_node
        self._calibrating = layer.spec.target_activity > 0
        self.start_epoch()

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self._position = 0                      # samples of this epoch (all ranks)
        self._first, self._window = [], []      # the epoch's first samples; the current window

    def limit(self) -> int:
        every = self.layer.spec.adapt_every
        if not (self._calibrating and every):
            return self.layer.limit()
        return min(self.layer.limit(), every - self._position % every)

    def step(self, times: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        counts = self.layer.learn(times, exact=self.exact)
        if self._calibrating:
            kept = sum(len(t) for t in self._first)
            if kept < CALIBRATION_IMAGES:
                self._first.append(times[:CALIBRATION_IMAGES - kept])
            every = self.layer.spec.adapt_every
            if every:
                self._position += parallel.total(len(times))     # all ranks' samples
                self._window.append(times)
                if self._position % every == 0:
                    self.layer.calibrate(torch.cat(self._window))
                    self._window = []
        return counts

    def end_epoch(self, validation: Validation | None = None) -> dict:
        if not (self._calibrating and self._first):
            return {}
        threshold = self.layer.calibrate(torch.cat(self._first))
        self.start_epoch()
        return {"threshold": threshold}

    def rates(self) -> dict:
        return self.layer.rates()

    def trained_modules(self) -> list:
        return [self.layer]

    def activity(self, final: torch.Tensor) -> float:
        """Fraction of the trained layer's (pooled) output neurons that spike."""
        return float(self.layer.forward_final(final).mean())


class RSTDPStage(StageBase):
    """Supervised R-STDP of a decision head (`needs`, `num_classes`, `reinforce(inputs, labels,
    phase, exact) -> decisions`, `adapt(hit, miss, adaptive_min, adaptive_int)`, `rates()`).

    The head's rates adapt after each window of about `window` training samples (silent ones
    included): reward rates = base * (miss * adaptive_int + adaptive_min), punish rates =
    base * (hit * adaptive_int + adaptive_min). The first window uses the base rates, or with
    `start_at_chance` the rates of decisions at chance (hit 1 / classes, miss 1 - 1 / classes),
    as SpykeTorch's MozafariShallow.py starts. Windows
    restart with every epoch, which is split into round(N / window) windows of nearly equal size
    (60,000 samples: sixty windows of 1,000, as the original's data-loader batches; 54,001: one
    of 1,001 and fifty-three of 1,000, rather than a last window of a single sample whose hit
    rate would zero the reward or punish rates for the next 1,000 samples).
    The head's `phase` (the greedy alternation of deepr2024_greedy) counts windows since the
    stage began, across epochs, so an epoch of one window (or an odd number) still alternates.
    `validate_start`: validate the starting weights as epoch 0 (`Stage.validates_start`). A head
    that is not a module itself (a `RewardedChain`) names the modules it trains (`modules()`).
    """
    kind = "rstdp"
    supervised = True           # validated every epoch, best epoch kept, early stopping
    data_parallel = True

    def __init__(self, name: str, head, input_node: int, window: int = ADAPTIVE_WINDOW,
                 adaptive_min: float = 0.0, adaptive_int: float = 1.0, start_at_chance: bool = False,
                 validate_start: bool = False):
        self.name, self.head, self.input_node = name, head, input_node
        self.validates_start = validate_start
        self.needs = head.needs
        self.window, self.adaptive_min, self.adaptive_int = window, adaptive_min, adaptive_int
        self.start_at_chance = start_at_chance
        self._counts, self._phase, self._sizes = [0, 0, 0], 0, [window]
        self._earlier = 0               # windows of the stage's earlier epochs (every epoch has as many)
        self._decided = [0] * head.num_classes

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self._counts, self._phase = [0, 0, 0], 0      # correct, wrong, silent in this window
        self._decided = [0] * self.head.num_classes    # decisions per class in this epoch
        count = max(1, round(size / self.window)) if size else 1
        self._sizes = [size // count + (1 if i < size % count else 0) for i in range(count)] if size \
            else [self.window]
        self._earlier = epoch * len(self._sizes)
        if epoch == 0 and self.start_at_chance:
            classes = self.head.num_classes
            self.head.adapt(1 / classes, 1 - 1 / classes, self.adaptive_min, self.adaptive_int)
        start = getattr(self.head, "start_epoch", None)      # e.g. drawing this epoch's dropout
        if start is not None:
            start(epoch, self.seed)

    def _window_size(self) -> int:
        return self._sizes[min(self._phase, len(self._sizes) - 1)]

    def limit(self) -> int:
        return self._window_size() - sum(self._counts)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
        decisions = self.head.reinforce(inputs, labels, phase=self._earlier + self._phase, exact=self.exact)
        local = decision_counts(decisions, labels)
        classes = torch.bincount(decisions[decisions >= 0].cpu(), minlength=len(self._decided)).tolist()
        self._decided = [a + b for a, b in zip(self._decided, classes)]
        # data-parallel: the whole global batch's counts, so every rank adapts its rates alike
        counts = parallel.total(local["correct"], local["wrong"], local["silent"])
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

    def end_epoch(self, validation: Validation | None = None) -> dict:
        """Adapts the rates for the last window; returns the largest share of the epoch's
        (non-silent) training decisions that went to one class (`top_class_share`: 1 / classes
        when balanced; near 1 when the decision layer has collapsed onto a few neurons)."""
        self._adapt()
        decided = parallel.total(*self._decided)
        decided = decided if isinstance(decided, tuple) else (decided,)      # one class: an int
        return {"top_class_share": max(decided) / sum(decided)} if sum(decided) else {}

    def rates(self) -> dict:
        return self.head.rates()

    def trained_modules(self) -> list:
        return [self.head] if isinstance(self.head, torch.nn.Module) else self.head.modules()


class LearnerStage(StageBase):
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

    def __init__(self, name: str, kind: str, learner, supervised: bool, input_node: int = 0,
                 needs: str = "times"):
        self.name, self.kind, self.learner = name, kind, learner
        self.supervised, self.input_node, self.needs = supervised, input_node, needs

    def start_epoch(self, size: int = 0, epoch: int = 0) -> None:
        self.learner.start_epoch(epoch)

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
        return {} if decisions is None else decision_counts(decisions, labels)

    def rates(self) -> dict:
        return self.learner.rates()

    def trained_modules(self) -> list:
        return [self.learner] if isinstance(self.learner, torch.nn.Module) else []
