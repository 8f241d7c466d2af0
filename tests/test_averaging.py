"""`decision.averaged`: the decision layer predicts with its kernels averaged over the epoch's
adaptive-rate windows; training is unchanged."""
import torch

import models
from models.decision import DecisionLayer, DecisionSpec
from models.heads import majority_vote
from models.stages import RSTDPStage
from spiking import functional as sf
from tests.conftest import BATCHES, drive
from tests.test_exact import decision_data

WINDOW = 50


def layer(averaged: bool) -> DecisionLayer:
    torch.manual_seed(1)
    return DecisionLayer(DecisionSpec(in_channels=20, kernel_size=5, neurons_per_class=4, pad=2,
                                      averaged=averaged), 10, 15)


def window_end_kernels(final, labels, epochs):
    """One sample at a time: the kernels after the last sample of every window of the last
    epoch (an epoch of N samples has round(N / WINDOW) windows, the first N mod that one longer)."""
    plain = layer(False)
    stage = RSTDPStage("decision", plain, input_node=0, window=WINDOW)
    count = round(len(final) / WINDOW)
    sizes = [len(final) // count + (1 if i < len(final) % count else 0) for i in range(count)]
    ends = {sum(sizes[:i + 1]) for i in range(count)}
    for _ in range(epochs):
        kept = []
        stage.start_epoch(len(final))
        for i in range(len(final)):
            stage.step(final[i:i + 1], labels[i:i + 1])
            if i + 1 in ends:
                kept.append(plain.conv.weight.clone())
        stage.end_epoch()
    return plain, kept


def test_prediction_uses_the_mean_of_the_epochs_window_end_kernels(gen):
    final, labels = decision_data(260, generator=gen)
    plain, kept = window_end_kernels(final, labels, epochs=2)
    assert len(kept) == 5                                # the second epoch's windows only
    mean = torch.stack(kept).double().mean(dim=0).float()
    assert (mean - plain.conv.weight).abs().max() > 1e-3  # the average is not the last kernels
    expected = plain.decide(sf.conv2d(final, mean, padding=2)).classes
    for batch in BATCHES:
        averaged = layer(True)
        drive(RSTDPStage("decision", averaged, input_node=0, window=WINDOW), final, labels, batch, epochs=2)
        # training itself is unchanged: the same kernels as without averaging
        assert torch.allclose(averaged.conv.weight, plain.conv.weight, atol=1e-5, rtol=0), batch
        assert int(averaged.average_count) == 5, batch
        assert torch.allclose(averaged.evaluation_weight(), mean, atol=1e-5, rtol=0), batch
        assert torch.equal(averaged.predict(final).classes, expected), batch


def test_before_any_window_ends_and_from_a_checkpoint_without_the_average_it_predicts_with_the_weights(gen):
    final, labels = decision_data(40, generator=gen)
    averaged = layer(True)
    assert torch.equal(averaged.evaluation_weight(), averaged.conv.weight)
    plain = layer(False)
    plain.reinforce(final, labels)
    averaged.load_state_dict(plain.state_dict())            # an older checkpoint: no average in it
    assert int(averaged.average_count) == 0
    assert torch.equal(averaged.predict(final).classes, plain.predict(final).classes)
    # and a checkpoint with one round-trips it
    drive(RSTDPStage("decision", averaged, input_node=0, window=WINDOW), final, labels, 8)
    other = layer(True)
    other.load_state_dict(averaged.state_dict())
    assert int(other.average_count) == 1
    assert torch.equal(other.evaluation_weight(), averaged.evaluation_weight())


def test_majority_heads_vote_with_their_averaged_kernels(gen):
    head = models.create_model("majority2024", settings={"head.averaged": True}).blocks[-1]
    averages = []
    for decision in head.heads:           # as if two windows had averaged to other kernels
        averages.append(torch.rand(decision.conv.weight.shape, generator=gen))
        decision.average_sum.copy_(2 * averages[-1].double())
        decision.average_count.fill_(2)
    final = (torch.rand(16, 250, 4, 4, generator=gen) < 0.3).float()
    votes = torch.stack([d.decide(sf.conv2d(final, a, padding=d.spec.pad)).classes
                         for d, a in zip(head.heads, averages)], dim=1)
    raw = torch.stack([d.decide(d.potentials(final)[1]).classes for d in head.heads], dim=1)
    assert not torch.equal(votes, raw)
    assert torch.equal(head.predict(final).classes, majority_vote(votes, head.num_classes, head.fallback))


def test_the_average_is_remembered_until_the_sum_or_the_count_changes(gen):
    final, labels = decision_data(40, generator=gen)
    averaged = layer(True)
    averaged.adapt(0.5, 0.5, 0.0, 1.0)              # a window ends: the kernels join the average
    first = averaged.evaluation_weight()
    kernels = averaged.conv.weight.clone()
    assert torch.equal(first, kernels) and averaged.evaluation_weight() is first
    averaged.reinforce(final, labels)               # training moves the weights, not the average
    assert averaged.evaluation_weight() is first
    averaged.adapt(0.5, 0.5, 0.0, 1.0)
    second = averaged.evaluation_weight()
    assert torch.equal(second, ((kernels.double() + averaged.conv.weight.double()) / 2).float())
    other = layer(True)
    other.load_state_dict(averaged.state_dict())
    other.average_sum.mul_(3)                       # an in-place change of the sum is seen
    assert torch.equal(other.evaluation_weight(), (3 * averaged.average_sum / 2).float())
    averaged.start_epoch(1, 0)                      # a new epoch restarts the average
    assert averaged.evaluation_weight() is averaged.conv.weight
