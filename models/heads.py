"""Several R-STDP layers trained as one: a decision head of voting layers (majority2024), and
the chain that trains a hidden layer by reward together with the decision layer after it
(deepr2024's last stage, joint or greedy; not a head: the two layers are the model's blocks).

A head maps the final map of its input node to a `Prediction`; both offer what `RSTDPStage`
drives: `reinforce` runs one R-STDP step (the chain reads spike times, `needs == "times"`), and
`phase` is the index of the adaptive-rate window since the stage began, counted across epochs
(used by the greedy alternation).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from spiking import parallel
from spiking import times as st

from .decision import DecisionLayer, Prediction, reward_signal
from .layers import HiddenLayer


def majority_vote(votes: torch.Tensor, num_classes: int, fallback: int) -> torch.Tensor:
    """The class with at least 2 votes, else head `fallback`'s vote (-1 votes = silent heads).

    Shape: votes [B, heads] (-1 = silent) -> [B].
    """
    classes = torch.arange(num_classes, device=votes.device)
    counts = (votes.unsqueeze(2) == classes).sum(dim=1)                  # [B, C]; silence never counts
    best = counts.max(dim=1)
    return torch.where(best.values >= 2, best.indices, votes[:, fallback])


class MajorityHeads(nn.Module):
    """Several decision layers on one input voting; each learns from its own vote (a silent
    head learns nothing), and all adapt their rates from the combined decision.

    The seed crashed when one or two heads were silent; here silent heads simply do not vote,
    and with no majority the `fallback` head's vote (possibly silence) decides."""
    needs = "final"

    def __init__(self, heads: list[DecisionLayer], fallback: int):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.fallback = fallback
        self.num_classes = heads[0].num_classes

    def _votes(self, final, training: bool = False):
        parts = [head.potentials(final) for head in self.heads]
        predictions = [head.decide(potentials, training) for head, (_, potentials) in zip(self.heads, parts)]
        votes = torch.stack([p.classes for p in predictions], dim=1)
        return parts, predictions, votes

    def predict(self, final: torch.Tensor) -> Prediction:
        predictions = [head.predict(final) for head in self.heads]      # each with its evaluation weights
        votes = torch.stack([p.classes for p in predictions], dim=1)
        scores = torch.stack([p.scores for p in predictions]).mean(dim=0)
        return Prediction(majority_vote(votes, self.num_classes, self.fallback), scores,
                          predictions[self.fallback].winners)

    @torch.no_grad()
    def reinforce(self, final: torch.Tensor, labels: torch.Tensor, phase: int = 0,
                  exact: bool = True) -> torch.Tensor:
        if exact:       # each head learns from its own votes only: three independent sequences
            votes = torch.stack([head.reinforce_exact(final, labels).classes for head in self.heads], dim=1)
            return majority_vote(votes, self.num_classes, self.fallback)
        parts, predictions, votes = self._votes(final, training=True)
        for head, (padded, _), prediction in zip(self.heads, parts, predictions):
            head.learn_from(padded, prediction, reward_signal(prediction.classes, labels))
        return majority_vote(votes, self.num_classes, self.fallback)

    def start_epoch(self, epoch: int, seed: int) -> None:
        for head in self.heads:
            head.start_epoch(epoch, seed)

    def adapt(self, hit, miss, adaptive_min, adaptive_int) -> None:
        for head in self.heads:
            head.adapt(hit, miss, adaptive_min, adaptive_int)

    def rates(self) -> dict:
        return {f"{head.name}_{k}": v for head in self.heads for k, v in head.rates().items()}

    def stdp_layers(self) -> list:
        return []

    def macs(self, shape) -> int:
        return sum(head.macs(shape) for head in self.heads)

    def output_shape(self, shape):
        """The fallback head's output shape, or the first head's that does not fit the input."""
        shapes = [head.output_shape(shape) for head in self.heads]
        return next((s for s in shapes if min(s) < 1), shapes[self.fallback])


class RewardedChain:
    """A hidden layer with reward rules and the decision layer after it, trained together by
    R-STDP from the decision's outcome (deepr2024's last stage). Not a block: both layers are
    the model's own blocks (the chain only trains them), reading the hidden layer's input spike
    times.

    The hidden layer's R-STDP winners come from pointwise inhibition and its own k-WTA; its
    un-inhibited spikes feed the decision layer. Schedules:
    - "joint": both layers learn from every sample;
    - "greedy": the layers take turns, one adaptive-rate window each: windows 0, 2, 4... of the
      stage (counted across epochs) train the hidden layer, windows 1, 3, 5... the decision
      layer (a real alternation, replacing the seed's `epoch + iteration % 2 == 0` precedence
      bug, which trained the hidden layer only on even batches of epoch 0). Counting per epoch
      instead left the decision untrained whenever an epoch had a single window (fewer than
      1,500 samples). Both layers adapt their rates after every window.
    """
    SCHEDULES = ("joint", "greedy")
    needs = "times"

    def __init__(self, hidden: HiddenLayer, decision: DecisionLayer, schedule: str = "joint"):
        if hidden.rstdp is None:
            raise ValueError("the hidden layer of a RewardedChain needs reward rules (add_reward_rules)")
        if schedule not in self.SCHEDULES:
            raise ValueError(f"schedule must be 'joint' or 'greedy', got {schedule!r}")
        self.hidden, self.decision, self.schedule = hidden, decision, schedule
        self.num_classes = decision.num_classes

    def learners(self, phase: int) -> tuple[bool, bool]:
        """(hidden learns, decision learns) in adaptive-rate window `phase` of the stage."""
        if self.schedule == "joint":
            return True, True
        return phase % 2 == 0, phase % 2 == 1

    @torch.no_grad()
    def reinforce(self, times: torch.Tensor, labels: torch.Tensor, phase: int = 0,
                  exact: bool = True) -> torch.Tensor:
        """One R-STDP step of both layers. `exact`: sample after sample (a loop of single-sample
        steps: the hidden layer's update changes the decision layer's input for the next
        sample); otherwise one summed update from the batch's starting weights."""
        if exact and times.shape[0] > 1:
            hidden, decision = self.hidden.conv.weight, self.decision.conv.weight
            with parallel.summed_change(hidden, self.hidden.rstdp.reward.lower_bound,
                                        self.hidden.rstdp.reward.upper_bound), \
                    parallel.summed_change(decision, self.decision.spec.lower_bound, self.decision.spec.upper_bound):
                return torch.cat([self._reinforce(times[b:b + 1], labels[b:b + 1], phase)
                                  for b in range(times.shape[0])])
        return self._reinforce(times, labels, phase)

    def _reinforce(self, times: torch.Tensor, labels: torch.Tensor, phase: int) -> torch.Tensor:
        steps = self.hidden.time_steps
        padded = self.hidden.padded(times)
        winners, post = self.hidden.winners(padded)
        decision_input = self.hidden.forward_final(st.final_map(times, steps))
        padded_decision, potentials = self.decision.potentials(decision_input)
        prediction = self.decision.decide(potentials, training=True)
        reward = reward_signal(prediction.classes, labels)
        learn_hidden, learn_decision = self.learners(phase)
        if learn_hidden:
            self.hidden.rstdp.update(steps - padded.float(), post, winners, reward)
        if learn_decision:
            self.decision.learn_from(padded_decision, prediction, reward)
        return prediction.classes

    def start_epoch(self, epoch: int, seed: int) -> None:
        self.decision.start_epoch(epoch, seed)

    def adapt(self, hit, miss, adaptive_min, adaptive_int) -> None:
        self.hidden.rstdp.adapt(hit, miss, adaptive_min, adaptive_int)
        self.decision.adapt(hit, miss, adaptive_min, adaptive_int)

    def rates(self) -> dict:
        return {f"{self.hidden.name}_reward_a_plus": float(self.hidden.rstdp.reward.a_plus[0]),
                **self.decision.rates()}

    def modules(self) -> list:
        """The model's modules it trains."""
        return [self.hidden, self.decision]
