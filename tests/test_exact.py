"""Exact batched learning: every batch size computes SpykeTorch's per-sample algorithm.

A slow reference written from the spec (one sample at a time: decide, reward or punish, update,
clamp) is compared with the batched stages at batch sizes 1, 7, 32 and 128, over a few hundred
samples that cross learning-rate doublings and adaptive-rate windows.
"""
import pytest
import torch
import torch.nn.functional as F

import models
from models.decision import DecisionLayer, DecisionSpec
from models.stages import RSTDPStage
from spiking import compiled
from spiking import functional as sf
from spiking import times as st
from spiking.sequential import decision_picks
from tests.conftest import BATCHES, drive, random_times, whole_map_only

def decision_data(count, channels=20, classes=10, generator=None):
    """Binary decision-layer inputs [N, C, 4, 4] that carry their label (channel = label lit),
    with a few all-zero (silent) samples."""
    final = (torch.rand(count, channels, 4, 4, generator=generator) < 0.3).float()
    labels = torch.randint(0, classes, (count,), generator=generator)
    final[torch.arange(count), labels] = 1.0
    final[::37] = 0.0
    return final, labels


# (kernel, pad) over the 4 x 4 inputs: the paper's sliding decision (16 positions), and one
# position over the whole map (mozafari2018's default: `sf.whole_map_conv2d`)
GEOMETRIES = ((5, 2), (4, 0))


def decision_layer(seed=1, channels=20, per_class=4, geometry=GEOMETRIES[0], **options):
    torch.manual_seed(seed)
    kernel, pad = geometry
    return DecisionLayer(DecisionSpec(in_channels=channels, kernel_size=kernel, neurons_per_class=per_class,
                                      pad=pad, **options), 10, 15)


def reference_rstdp(layer, final, labels, dropped=None, taught=None):
    """The spec's per-sample R-STDP, written with the wave-level primitives; `dropped` [F]:
    those neurons decide with zero weights (dropout) and so never win. With the layer's
    teacher, a punished sample then also updates its label class's neuron with the largest
    potential (by a loop over that class's neurons and positions, the first of equals) with
    the teacher's rates (with `dropped`, among the others); `taught` collects those picks
    (feature, row, col)."""
    weight, pad, per_class = layer.conv.weight, layer.spec.pad, layer.spec.neurons_per_class
    kh = weight.shape[-1]
    decided = []

    def update(x, f, r, c, plus, minus):
        patch = F.pad(x, (pad,) * 4)[0, :, r:r + kh, c:c + kh]
        weight[f] += torch.where(patch >= 1, plus, minus)
        weight.clamp_(layer.spec.lower_bound, layer.spec.upper_bound)

    for i in range(len(final)):
        x = final[i:i + 1]
        seen = weight if dropped is None else weight * (~dropped).float().view(-1, 1, 1, 1)
        potentials = sf.conv2d(x, seen, padding=pad)
        f, r, c = sf.select_winners(st.decision_scores(potentials, 15), 1, 0)[0, 0].tolist()
        decided.append((f, r, c))
        if f < 0:
            continue                                # silence: no update, no clamp
        rewarded = f // per_class == int(labels[i])
        rule = layer.rstdp.reward if rewarded else layer.rstdp.punish
        update(x, f, r, c, rule.a_plus[f], rule.a_minus[f])
        teacher = layer.teacher_rates()
        if teacher is not None and not rewarded:
            best = None
            for g in range(int(labels[i]) * per_class, (int(labels[i]) + 1) * per_class):
                if dropped is not None and dropped[g]:
                    continue                        # a dropped neuron cannot be picked either
                for row in range(potentials.shape[2]):
                    for col in range(potentials.shape[3]):
                        if best is None or potentials[0, g, row, col] > potentials[0][best]:
                            best = (g, row, col)
            taught.append(best)
            update(x, *best, teacher[0, best[0]], teacher[1, best[0]])
    return decided


def exact_winners(layer, final, labels, batch):
    """The (feature, row, col) of every sample's decision, trained by `reinforce_exact` in
    batches of `batch`."""
    decided = []
    for start in range(0, len(final), batch):
        prediction = layer.reinforce_exact(final[start:start + batch], labels[start:start + batch])
        decided += [tuple(w) for w in prediction.winners[:, 0].tolist()]
    return decided


def test_decision_picks_equal_select_winners(gen):
    potentials = torch.randint(-2, 4, (50, 8, 3, 3), generator=gen).float()   # many exact ties
    potentials[3] = -1.0                                                        # a silent sample
    winners = sf.select_winners(st.decision_scores(potentials, 15), 1, 0)[:, 0]
    index, silent = decision_picks(potentials.flatten(1), 15)
    assert torch.equal(silent, winners[:, 0] < 0)
    expected = winners[:, 0] * 9 + winners[:, 1] * 3 + winners[:, 2]
    assert torch.equal(index[~silent], expected[~silent])


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch", BATCHES)
def test_sequential_rstdp_equals_the_per_sample_reference(batch, geometry, gen, exact_path):
    whole_map_only(geometry, exact_path)
    final, labels = decision_data(300, generator=gen)
    reference = decision_layer(geometry=geometry)
    expected = reference_rstdp(reference, final, labels)
    layer = decision_layer(geometry=geometry)
    decided = exact_winners(layer, final, labels, batch)
    assert decided == expected
    assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0)
    # the initial N(0.8, 0.05) weights were clamped by the first update, and learning happened
    assert layer.conv.weight.max() <= torch.tensor(0.8) and len({d for d in decided if d[0] >= 0}) > 5


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_sequential_rstdp_with_the_stabiliser_and_per_feature_rates(geometry, gen, exact_path):
    whole_map_only(geometry, exact_path)
    final, labels = decision_data(200, generator=gen)
    kernel, pad = geometry
    spec = DecisionSpec(in_channels=20, kernel_size=kernel, neurons_per_class=4, pad=pad, use_stabilizer=True,
                        reward=(0.05, -0.04), punish=(-0.05, 0.01))
    torch.manual_seed(2)
    one = DecisionLayer(spec, 10, 15)
    torch.manual_seed(2)
    many = DecisionLayer(spec, 10, 15)
    for layer in (one, many):                       # per-feature rates differ
        layer.rstdp.reward.a_plus.mul_(torch.linspace(0.5, 1.5, 40))
    for i in range(200):
        one.reinforce_exact(final[i:i + 1], labels[i:i + 1])
    for start in range(0, 200, 32):
        many.reinforce_exact(final[start:start + 32], labels[start:start + 32])
    assert torch.allclose(one.conv.weight, many.conv.weight, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stabilizer", [False, True])
@pytest.mark.parametrize("start", ["grid", "outside the bounds"])
def test_the_compiled_rstdp_loop_learns_the_rounds_bits_through_ties(stabilizer, start, gen, monkeypatch):
    """A whole-map decision with weights on a grid of 1/8 and rates of 1/64 (potentials tie often), with
    the teacher and dropout: the compiled loop and the speculative rounds must decide, teach and
    update identically, bit for bit (both round exact float64 sums once)."""
    if not compiled.ENABLED:
        pytest.skip("numba is not installed")
    final, labels = decision_data(400, generator=gen)
    grid = 0.25 + torch.randint(0, 5, (40, 20, 4, 4), generator=gen) / 8
    dropped = torch.rand(40, generator=gen) < 0.2
    runs = {}
    for enabled in (True, False):
        monkeypatch.setattr(compiled, "ENABLED", enabled)
        layer = decision_layer(geometry=(4, 0), teacher=1.0, dropout=0.2, use_stabilizer=stabilizer,
                               lower_bound=0.25, upper_bound=0.75, reward=(1 / 64, -1 / 64),
                               punish=(-1 / 64, 1 / 64))
        layer.dropped.copy_(dropped)
        if start == "grid":
            layer.conv.weight.data.copy_(grid)
        decided = exact_winners(layer, final, labels, 32)
        runs[enabled] = (decided, layer.conv.weight.detach().clone())
    assert runs[True][0] == runs[False][0] and len({d for d in runs[True][0] if d[0] >= 0}) > 5
    assert torch.equal(runs[True][1], runs[False][1])


def test_the_cpu_runs_the_compiled_loops(gen, monkeypatch):
    """With numba, exact training on the CPU takes the compiled loops (conv STDP; R-STDP of a
    decision read at one position), and the paper's sliding decision the speculative rounds."""
    if not compiled.ENABLED:
        pytest.skip("numba is not installed")
    calls = []
    for name in ("_learn", "_reinforce"):
        original = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *args, _name=name, _original=original:
                            calls.append(_name) or _original(*args))
    final, labels = decision_data(40, generator=gen)
    for geometry in GEOMETRIES:
        exact_winners(decision_layer(geometry=geometry), final, labels, 16)
    assert calls == ["_reinforce"] * 3            # the whole-map decision's three batches
    model = models.create_model("mozafari2018")
    times = random_times(8, *model.frontend.output_shape((28, 28)), 15, generator=gen)
    del calls[:]
    model.stages[0].layer.learn(times, exact=True)
    assert calls == ["_learn"]


def test_summed_mode_is_a_different_algorithm(gen):
    final, labels = decision_data(128, generator=gen)
    exact, summed = decision_layer(), decision_layer()
    exact.reinforce(final, labels, exact=True)
    summed.reinforce(final, labels, exact=False)
    assert (exact.conv.weight - summed.conv.weight).abs().max() > 1e-3


def rstdp_run(batch, final, labels, window=50):
    layer = decision_layer()
    stage = RSTDPStage("decision", layer, input_node=0, window=window)
    counts = drive(stage, final, labels, batch, epochs=2)
    totals = [sum(c[k] for c in counts) for k in ("correct", "wrong", "silent")]
    rates = (layer.rstdp.reward.a_plus.clone(), layer.rstdp.punish.a_plus.clone())
    return layer.conv.weight.clone(), totals, rates, stage._phase


def test_rstdp_stage_is_the_same_at_every_batch_size_across_adaptive_windows(gen):
    final, labels = decision_data(260, generator=gen)
    runs = {batch: rstdp_run(batch, final, labels) for batch in BATCHES}
    weight, totals, rates, phase = runs[1]
    assert phase == 5 and rates[0][0] != 0.004        # five windows of 52; the rates adapted
    for batch in BATCHES[1:]:
        other = runs[batch]
        assert torch.allclose(other[0], weight, atol=1e-5, rtol=0), batch
        assert other[1] == totals and other[3] == phase, batch
        assert torch.equal(other[2][0], rates[0]) and torch.equal(other[2][1], rates[1]), batch


def test_majority_heads_are_three_independent_sequences(gen):
    model = models.create_model("majority2024")
    final = (random_times(64, 250, 4, 4, 15, never=0.8, generator=gen) < 15).float()
    labels = torch.randint(0, 10, (64,), generator=gen)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    decisions = torch.cat([model.head.reinforce(final[s:s + 16], labels[s:s + 16]) for s in range(0, 64, 16)])
    batched = [h.conv.weight.clone() for h in model.head.heads]
    model.load_state_dict(state)
    single = torch.cat([model.head.reinforce(final[i:i + 1], labels[i:i + 1]) for i in range(64)])
    assert torch.equal(decisions, single)
    for head, weight in zip(model.head.heads, batched):
        assert torch.allclose(head.conv.weight, weight, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["deepr2024", "deepr2024_greedy"])
def test_rewarded_chain_is_the_same_at_every_batch_size(name, gen):
    model = models.create_model(name)
    stage = model.stages[-1]
    stage.window = 10
    times = random_times(40, 150, 7, 7, 15, never=0.7, generator=gen)
    labels = torch.randint(0, 10, (40,), generator=gen)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results = {}
    for batch in (1, 7, 32):
        model.load_state_dict(state)
        counts = drive(stage, times, labels, batch)
        results[batch] = ({k: v.clone() for k, v in model.state_dict().items()},
                          [sum(c[k] for c in counts) for k in ("correct", "wrong", "silent")])
    for batch in (7, 32):
        assert results[batch][1] == results[1][1]
        for key, value in results[1][0].items():
            assert torch.allclose(results[batch][0][key].float(), value.float(), atol=1e-5, rtol=0), key


@pytest.mark.parametrize("name", ["itsadeepizza2023", "tavanaei2017", "tavanaei2017_mnist"])
def test_online_learners_are_the_same_at_every_batch_size(name):
    from tests.test_models import node0
    gen = torch.Generator().manual_seed(4)
    probe = models.create_model(name)
    inputs = node0(probe, 40, gen)
    labels = torch.randint(0, probe.num_classes, (40,), generator=gen)
    results = {}
    for batch in (1, 7, 32):
        torch.manual_seed(0)
        model = models.create_model(name)
        stage = model.stages[0]
        counts = drive(stage, inputs, labels, batch)
        results[batch] = ({k: v.clone() for k, v in model.state_dict().items()},
                          [sum(c[k] for c in counts) for k in ("correct", "wrong", "silent")])
    for batch in (7, 32):
        assert results[batch][1] == results[1][1], batch
        for key, value in results[1][0].items():
            assert torch.allclose(results[batch][0][key], value, atol=1e-5, rtol=0), (batch, key)
    # and the batched deviation differs
    torch.manual_seed(0)
    model = models.create_model(name)
    model.stages[0].exact = False
    drive(model.stages[0], inputs, labels, 32)
    assert any(not torch.allclose(v, results[1][0][k], atol=1e-5) for k, v in model.state_dict().items())


def shallow_model(seed=0):
    torch.manual_seed(seed)
    return models.create_model("mozafari2018_shallow", num_classes=3,
                               settings={"kernel_size": 5, "threshold": 6.0, "dropout": 0.3})


def test_first_spike_decision_from_the_definition(gen):
    model = shallow_model()
    layer = model.head.layer
    with torch.no_grad():
        layer.conv.weight.uniform_(0, 1, generator=gen)
    times = random_times(12, 4, 9, 9, 15, never=0.6, generator=gen)
    prediction = model.predict(times)
    got = prediction.classes
    decided = got >= 0          # the class scores rank classes as the decision does
    assert torch.equal(prediction.scores.argmax(dim=1)[decided], got[decided])
    for b in range(len(times)):
        expected = -1
        for t in range(15):      # the earliest step with a spike; its largest potential (first on ties)
            potentials = F.conv2d((times[b:b + 1] <= t).float(), layer.conv.weight)[0]
            spiking = potentials > layer.threshold
            if spiking.any():
                feature = int(torch.where(spiking, potentials, -1.0).flatten().argmax()) // potentials[0].numel()
                expected = feature // 10
                break
        assert int(got[b]) == expected, b
    assert len(set(got.tolist())) > 1


def shallow_run(batch, times, labels, epochs=2):
    model = shallow_model()
    stage = model.stages[0]
    stage.configure(exact=True, seed=7)
    totals = {"correct": 0, "wrong": 0, "silent": 0}
    dropped = []
    for epoch in range(epochs):
        stage.start_epoch(len(times), epoch)
        dropped.append(model.head.dropped.clone())
        position = 0
        while position < len(times):
            size = min(batch, stage.limit(), len(times) - position)
            for key, value in stage.step(times[position:position + size], labels[position:position + size]).items():
                totals[key] += int(value)
            position += size
        stage.end_epoch()
    return model, totals, dropped


def test_shallow_rstdp_is_the_same_at_every_batch_size_across_epochs_and_dropout(gen):
    times = random_times(120, 4, 9, 9, 15, never=0.6, generator=gen)
    labels = torch.randint(0, 3, (120,), generator=gen)
    reference, totals, dropped = shallow_run(1, times, labels)
    assert not torch.equal(dropped[0], dropped[1]) and 0 < int(dropped[0].sum()) < 30
    assert totals["correct"] > 0 and totals["wrong"] > 0
    for batch in BATCHES[1:]:
        model, other, _ = shallow_run(batch, times, labels)
        assert other == totals, batch
        assert torch.allclose(model.head.layer.conv.weight, reference.head.layer.conv.weight, atol=1e-5, rtol=0)
        assert model.head.rates() == reference.head.rates()


def test_dropped_features_never_win_while_training_and_decide_otherwise(gen):
    model = shallow_model()
    head = model.head
    head.start_epoch(0, seed=3)
    times = random_times(40, 4, 9, 9, 15, never=0.5, generator=gen)
    trained = head._winners(times, training=True)[0][:, 0, 0]
    evaluated = head._winners(times, training=False)[0][:, 0, 0]
    assert not head.dropped[trained[trained >= 0]].any()
    assert head.dropped[evaluated[evaluated >= 0]].any()        # at inference every feature competes


def test_dropout_drops_each_feature_with_its_probability():
    """MozafariShallow.py draws bernoulli(p) per feature each epoch: the count varies around p F."""
    head = shallow_model().head                 # 30 features, dropout 0.3
    counts = []
    for epoch in range(300):
        head.start_epoch(epoch, seed=1)
        counts.append(int(head.dropped.sum()))
    assert abs(sum(counts) / len(counts) - 9) < 0.6 and len(set(counts)) > 4


def test_the_first_epoch_starts_at_chance_rates_and_later_epochs_adapt():
    model = shallow_model()                     # 3 classes, adaptive_min 0.2, adaptive_int 0.8
    stage, rstdp = model.stages[0], model.head.layer.rstdp
    stage.configure(exact=True, seed=0)
    stage.start_epoch(30, epoch=0)
    assert float(rstdp.reward.a_plus[0]) == pytest.approx(0.005 * ((1 - 1 / 3) * 0.8 + 0.2))
    assert float(rstdp.punish.a_plus[0]) == pytest.approx(-0.005 * ((1 / 3) * 0.8 + 0.2))
    rstdp.adapt(0.9, 0.1, 0.2, 0.8)             # what the end of an epoch sets
    stage.start_epoch(30, epoch=1)              # later epochs keep the adapted rates
    assert float(rstdp.reward.a_plus[0]) == pytest.approx(0.005 * (0.1 * 0.8 + 0.2))


def test_maps_smaller_than_the_kernel_are_padded_to_it(gen):
    model = shallow_model()                     # kernel 5
    head = model.head
    times = random_times(3, 4, 3, 2, 15, never=0.3, generator=gen)
    padded = head.padded(times)
    # ceil((5 - 3) / 2) = 1 row, ceil((5 - 2) / 2) = 2 columns on each side, never spiking
    assert padded.shape[-2:] == (5, 6) and torch.equal(padded[..., 1:4, 2:4], times)
    assert (padded[..., 0, :] == 15).all() and (padded[..., :, :2] == 15).all()
    assert head.output_shape((4, 3, 2)) == (30, 1, 2)
    assert model.predict(times).classes.shape == (3,)
