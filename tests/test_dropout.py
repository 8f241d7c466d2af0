"""Decision-neuron dropout (`decision.dropout`): exact at every batch size, as zero weights."""
import dataclasses

import pytest
import torch

from models.decision import draw_dropout
from tests.conftest import BATCHES
from tests.test_exact import decision_data, decision_layer, reference_rstdp


def dropout_layer(p=0.4, seed=1):
    layer = decision_layer(seed)
    spec = dataclasses.replace(layer.spec, dropout=p)
    torch.manual_seed(seed)             # the same initial weights as decision_layer(seed)
    return type(layer)(spec, 10, 15)


# the summed update is the sequential algorithm only one sample at a time
@pytest.mark.parametrize("batch, exact", [(b, True) for b in BATCHES] + [(1, False)])
def test_dropped_neurons_decide_as_zero_weights_and_never_learn(batch, exact, gen):
    final, labels = decision_data(300, generator=gen)
    layer = dropout_layer()
    layer.start_epoch(0, seed=3)
    dropped = layer.dropped.clone()
    assert 0 < int(dropped.sum()) < len(dropped)
    assert torch.equal(dropped, draw_dropout(len(dropped), 0.4, 3, "dropout", "decision", 0))
    reference = decision_layer()
    if not exact:       # the summed update clamps all weights even on a silent sample: start clamped
        for each in (layer, reference):
            each.conv.weight.data.clamp_(0.2, 0.8)
    start_weights = reference.conv.weight.clone().clamp_(0.2, 0.8)
    expected = reference_rstdp(reference, final, labels, dropped)
    decided = []
    for begin in range(0, len(final), batch):
        part = slice(begin, begin + batch)
        if exact:
            decided += [tuple(w) for w in layer.reinforce_exact(final[part], labels[part]).winners[:, 0].tolist()]
        else:
            padded, potentials = layer.potentials(final[part])
            prediction = layer.decide(potentials, training=True)
            layer.reinforce(final[part], labels[part], exact=False)
            decided += [tuple(w) for w in prediction.winners[:, 0].tolist()]
    assert decided == expected
    assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0)
    winners = {d[0] for d in decided if d[0] >= 0}
    assert len(winners) > 5 and not winners & set(dropped.nonzero().flatten().tolist())
    assert torch.equal(layer.conv.weight[dropped], start_weights[dropped])     # clamped once, then untouched
    # evaluation uses every neuron: a dropped one still decides where it has the top potential
    padded, potentials = layer.potentials(final)
    assert torch.equal(layer.predict(final).classes, layer.decide(potentials).classes)


def test_a_new_epoch_draws_new_dropped_neurons_and_no_dropout_draws_nothing():
    layer = dropout_layer(p=0.5)
    layer.start_epoch(0, seed=0)
    first = layer.dropped.clone()
    layer.start_epoch(1, seed=0)
    assert not torch.equal(first, layer.dropped)
    plain = decision_layer()
    plain.start_epoch(0, seed=0)
    assert "dropped" not in dict(plain.named_buffers())     # old checkpoints keep loading
