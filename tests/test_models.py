"""Every registered model builds, trains one step per stage and predicts; schedules; shapes."""
import pytest
import torch

import models
from frontends import GaborFrontEnd, PixelInput, ReceptiveFields
from models.decision import reward_signal
from models.layers import HiddenLayer, HiddenSpec
from models.stages import RSTDPStage
from spiking import functional as sf
from spiking.learning import STDP
from spiking.times import pad_times, times_to_wave
from tests.conftest import random_times

SHAPES = {   # node shapes on MNIST, spec section 5 and the seed's verified tables
    "mozafari2018": [(6, 28, 28), (30, 14, 14), (250, 4, 4), (600, 1, 1)],
    "deep2024": [(6, 28, 28), (30, 14, 14), (150, 7, 7), (250, 3, 3), (600, 1, 1)],
    "deepr2024": [(6, 28, 28), (30, 14, 14), (150, 7, 7), (250, 3, 3), (600, 1, 1)],
    "deepr2024_greedy": [(6, 28, 28), (30, 14, 14), (150, 7, 7), (250, 3, 3), (600, 1, 1)],
    "inception2024": [(6, 28, 28), (30, 14, 14), (75, 7, 7), (300, 2, 2), (600, 1, 1)],
    "majority2024": [(6, 28, 28), (30, 14, 14), (250, 4, 4), (200, 4, 4)],
    "deeper2024": [(6, 28, 28), (30, 14, 14), (150, 7, 7), (250, 3, 3), (450, 3, 3), (1500, 1, 1)],
    "resnet2024": [(6, 28, 28), (30, 14, 14), (150, 7, 7), (400, 3, 3), (600, 1, 1)],
    "kheradpisheh2018": [(2, 28, 28), (32, 15, 15), (150, 9, 9), (10, 1, 1)],
    "chevalier2019": [(784,), (100,), (10,)],
    "chevalier2019_ann": [(784,), (100,), (10,)],
    "lagacherie2024": [(784,), (100,), (10,)],
    "lagacherie2024_random": [(784,), (100,), (10,)],
    "lagacherie2024_pixels": [(784,), (784,), (10,)],
    "itsadeepizza2023": [(100,), (10,)],
    "tavanaei2017": [(100,), (20,), (10,)],
    "tavanaei2017_mnist": [(784,), (500,), (10,)],
    # 250 x 250 images (the shallow 2018 network's kernels need larger images than MNIST's)
    "mozafari2018_shallow": [(4, 40, 40), (100, 24, 24)],
    "mozafari2018_shallow_eth80": [(4, 61, 61), (100, 31, 31)],
    "mozafari2018_shallow_norb": [(4, 61, 61), (100, 39, 39)],
}


def test_every_registered_model_has_a_shape_table():
    assert sorted(SHAPES) == sorted(models.list_models())


def raw_shape(model):
    """The raw input of a model's front end: 28 x 28 images, Iris's 4 features, or 250 x 250
    images for the Gabor front end of the shallow 2018 network."""
    if isinstance(model.frontend, ReceptiveFields):
        return (len(model.frontend.ranges),)
    return (250, 250) if isinstance(model.frontend, GaborFrontEnd) else (28, 28)


def front_shape(model):
    return model.frontend.output_shape(raw_shape(model))


def node0(model, batch, gen):
    """Random node-0 inputs: pixels for pixel front ends, spike times otherwise."""
    shape = front_shape(model)
    if isinstance(model.frontend, PixelInput):
        return torch.randint(0, 256, (batch,) + shape, generator=gen, dtype=torch.uint8)
    steps = model.frontend.time_steps
    times = torch.randint(0, steps + 1, (batch,) + shape, generator=gen)
    silent = torch.rand(times.shape, generator=gen) < 0.5
    return torch.where(silent, steps, times).to(torch.uint8)


def stage_input(model, stage, batch, gen):
    if stage.input_node == 0 and model.predict_needs == "times":
        return node0(model, batch, gen)
    if model.encoded_input:          # a later node of a model that encodes per step
        return model.forward_final(node0(model, batch, gen), 0, stage.input_node)
    shape = model.node_shapes(front_shape(model))[stage.input_node]
    times = random_times(batch, *shape, model.time_steps, never=0.5, generator=gen)
    if stage.needs == "final":
        return (times < model.time_steps).float()
    return times


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("num_classes", [10, 3])
def test_every_model_trains_one_step_per_stage_and_predicts(name, num_classes):
    gen = torch.Generator().manual_seed(0)
    model = models.create_model(name, num_classes=num_classes)
    assert model.stages and all(isinstance(s.supervised, bool) and s.needs in ("times", "final")
                                for s in model.stages)
    assert len(model.config.default_epochs) == len(model.stages)
    for stage in model.stages:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        labels = torch.randint(0, num_classes, (12,), generator=gen)
        x = stage_input(model, stage, 12, gen)
        if stage.kind == "readout":          # a closed-form fit needs two classes in its split
            labels = torch.arange(12) % num_classes
        stage.configure(exact=True, seed=0)
        stage.start_epoch(12)
        stats = stage.step(x, labels)
        stage.end_epoch(lambda: (stage_input(model, stage, 6, gen).numpy(), (torch.arange(6) % num_classes).numpy()))
        assert isinstance(stats, dict)
        changed = [k for k, v in model.state_dict().items()
                   if not torch.equal(v, before[k]) and k.endswith(("weight", "coef"))]
        assert changed, f"{name}: stage {stage.name} changed nothing"
    times = node0(model, 5, gen)
    model.start_evaluation("test")             # stochastic models: the same draws each time
    prediction = model.predict(times)
    assert prediction.classes.shape == (5,) and prediction.scores.shape == (5, num_classes)
    assert ((prediction.classes >= -1) & (prediction.classes < num_classes)).all()
    model.start_evaluation("test")
    assert torch.equal(model(times), prediction.classes)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_tables(name):
    model = models.create_model(name)
    assert model.node_shapes(front_shape(model)) == SHAPES[name]


def test_rate_doubling_happens_before_the_500th_sample_batched_or_not(gen):
    spec = HiddenSpec(in_channels=2, out_channels=4, kernel_size=3, threshold=1.0, kwta=1,
                      inhibition_radius=0, rate_doubling_every=5, max_a_plus=0.02)
    times = random_times(23, 2, 6, 6, 4, generator=gen)
    rates = {}
    for batch in (1, 4, 7):
        torch.manual_seed(0)
        layer = HiddenLayer(spec, 4, "conv")
        seen, history = 0, []
        while seen < 23:
            size = min(batch, layer.limit(), 23 - seen)
            layer.learn(times[seen:seen + size])
            seen += size
            history.append((seen, round(layer.stdp.a_plus[0].item(), 6), round(layer.stdp.a_minus[0].item(), 6)))
        rates[batch] = {s: (p, m) for s, p, m in history}
    # the 5th, 10th... sample learns with doubled rates, capped at 0.02, a_minus = -0.75 a_plus
    assert rates[1][4] == (0.004, -0.003) and rates[1][5] == (0.008, -0.006)
    assert rates[1][10] == (0.016, -0.012) and rates[1][15] == (0.02, -0.015)
    for batch in (4, 7):
        for seen, value in rates[batch].items():
            assert value == rates[1][seen]


def test_sequential_training_equals_the_wave_reference_loop(gen):
    """Batch size 1 through the fast engine = SpykeTorch's per-sample recipe written with the
    wave primitives (conv -> fire -> pointwise inhibition -> k winners -> STDP)."""
    spec = HiddenSpec(in_channels=3, out_channels=6, kernel_size=3, threshold=4.0, kwta=2,
                      inhibition_radius=1, pad=1, learning_rate=(0.05, -0.04))
    times = random_times(12, 3, 7, 7, 6, never=0.4, generator=gen)
    torch.manual_seed(1)
    layer = HiddenLayer(spec, 6, "conv")
    torch.manual_seed(1)
    reference = HiddenLayer(spec, 6, "conv")
    rule = STDP(reference.conv, (0.05, -0.04))
    for i in range(12):
        layer.learn(times[i:i + 1])
        wave = times_to_wave(pad_times(times[i:i + 1], (1, 1, 1, 1), 6), 6)
        pot = reference.conv(wave)
        _, thresholded = sf.fire(pot, 4.0, True)
        inhibited = sf.pointwise_inhibition(thresholded)
        spikes = inhibited.sign()
        rule(wave, inhibited, spikes, sf.get_k_winners(inhibited, 2, 1, spikes))
    assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-6)


class FakeHead:
    num_classes = 2

    def __init__(self, decisions):
        self.decisions, self.adapted = decisions, []

    def reinforce(self, final, labels, phase=0, exact=True):
        out, self.decisions = self.decisions[:len(labels)], self.decisions[len(labels):]
        return out

    def adapt(self, hit, miss, adaptive_min, adaptive_int):
        self.adapted.append((round(hit, 4), round(miss, 4)))

    def rates(self):
        return {}


def test_rstdp_windows_adapt_every_window_and_at_epoch_end():
    decisions = torch.tensor([1] * 6 + [0] * 4 + [-1] * 10 + [1] * 5)     # labels are all 1
    head = FakeHead(decisions)
    head.needs = "final"
    stage = RSTDPStage("decision", head, input_node=0, window=10)
    stage.start_epoch(25)                         # round(25 / 10) = 2 windows: 13 and 12 samples
    seen = 0
    while seen < 25:
        size = min(4, stage.limit(), 25 - seen)
        stage.step(torch.zeros(size, 1), torch.ones(size, dtype=torch.long))
        seen += size
    stage.end_epoch()
    assert head.adapted == [(round(6 / 13, 4), round(4 / 13, 4)), (round(5 / 12, 4), 0.0)]
    stage.start_epoch(60)
    assert stage._sizes == [10] * 6


def test_reward_signal():
    assert reward_signal(torch.tensor([2, 1, -1, 0]), torch.tensor([2, 2, 0, 0])).tolist() == [1, -1, 0, 1]


@pytest.mark.parametrize("name", [m for m in models.list_models() if len(SHAPES[m][0]) == 3])
def test_final_map_path_agrees_with_spike_time_path(name):
    """Every block: final(forward_times(t)) == forward_final(final(t)) (potentials never decrease)."""
    gen = torch.Generator().manual_seed(1)
    model = models.create_model(name)
    times = random_times(3, *front_shape(model), model.time_steps, never=0.7, generator=gen)
    steps = model.time_steps
    for block in model.blocks[:-1]:
        out_times = block.forward_times(times)
        final = block.forward_final((times < steps).float())
        assert torch.equal((out_times < steps).float(), final), name
        times = out_times


def test_majority_vote_with_silent_heads():
    from models.heads import majority_vote
    votes = torch.tensor([[3, 3, 1], [2, -1, 2], [4, 5, 6], [-1, -1, -1], [7, -1, -1], [-1, 8, -1],
                          [-1, -1, 9]])
    assert majority_vote(votes, 10, fallback=1).tolist() == [3, 2, 5, -1, -1, 8, -1]


def test_majority_heads_learn_from_their_own_votes(gen):
    model = models.create_model("majority2024")
    heads = model.head
    final = (random_times(6, 250, 4, 4, 15, never=0.5, generator=gen) < 15).float()
    labels = torch.randint(0, 10, (6,), generator=gen)
    before = [h.conv.weight.clone() for h in heads.heads]
    votes = torch.stack([h.predict(final).classes for h in heads.heads], dim=1)
    decisions = heads.reinforce(final, labels, exact=False)      # summed: all vote with the same weights
    from models.heads import majority_vote
    assert torch.equal(decisions, majority_vote(votes, 10, fallback=1))
    for head, old, vote in zip(heads.heads, before, votes.t()):
        assert torch.equal(head.conv.weight, old) == bool((vote < 0).all())


def test_greedy_schedule_alternates_by_window_and_joint_trains_both():
    greedy = models.create_model("deepr2024_greedy").stages[-1].head
    assert [greedy.learners(w) for w in range(4)] == [(True, False), (False, True), (True, False), (False, True)]
    joint = models.create_model("deepr2024").stages[-1].head
    assert all(joint.learners(w) == (True, True) for w in range(4))


def test_greedy_stage_trains_only_the_scheduled_layer(gen):
    model = models.create_model("deepr2024_greedy")
    stage = model.stages[-1]
    stage.window = 4
    chain = stage.head
    times = random_times(8, 150, 7, 7, 15, never=0.3, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    stage.start_epoch()
    hidden0, decision0 = chain.hidden.conv.weight.clone(), chain.decision.conv.weight.clone()
    stage.step(times[:4], labels[:4])                      # window 0: conv3 only
    assert not torch.equal(chain.hidden.conv.weight, hidden0)
    assert torch.equal(chain.decision.conv.weight, decision0)
    hidden1 = chain.hidden.conv.weight.clone()
    stage.step(times[4:], labels[4:])                      # window 1: decision only
    assert torch.equal(chain.hidden.conv.weight, hidden1)
    assert not torch.equal(chain.decision.conv.weight, decision0)


def test_greedy_turns_continue_across_epochs_of_one_window(gen):
    """An epoch of a single window (fewer than 1.5 windows of samples) alternates by epoch; counted
    per epoch, the decision layer never learned on such data."""
    # a rate floor: a window of only misses (or hits) must not adapt a layer's rates to zero,
    # which would hide whether its turn came
    model = models.create_model("deepr2024_greedy", settings={"adaptive_min": 0.2})
    stage = model.stages[-1]
    chain = stage.head
    times = random_times(8, 150, 7, 7, 15, never=0.3, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    learned = []
    for epoch in range(3):                                  # resuming at epoch 2 sees the same turn
        stage.start_epoch(8, epoch=epoch)                   # one window of 8 (the default window: 1,000)
        before = chain.hidden.conv.weight.clone(), chain.decision.conv.weight.clone()
        stage.step(times, labels)
        stage.end_epoch()
        learned.append((not torch.equal(chain.hidden.conv.weight, before[0]),
                        not torch.equal(chain.decision.conv.weight, before[1])))
    assert learned == [(True, False), (False, True), (True, False)]


@pytest.mark.parametrize("merge", ["concat", "or", "none"])
def test_residual_merges(merge, gen):
    from spiking import engine
    from spiking import times as st
    channels = 400 if merge == "concat" else 250
    block = models.create_model("resnet2024", settings={"merge": merge, "decision.in_channels": channels}).blocks[2]
    times = random_times(2, 150, 7, 7, 15, never=0.5, generator=gen)
    main = block.main.fire_times(times)
    if merge == "or":        # the earlier of conv3's and the 1x1 skip's spike times
        merged = torch.minimum(main, engine.spike_times(times, block.skip.weight, block.skip_threshold, 15))
    elif merge == "concat":  # conv3's maps, then the block's input maps unchanged
        merged = torch.cat([main, times], dim=1)
    else:
        merged = main
    assert torch.equal(block.forward_times(times), st.pool_times(merged, 2))
    final = st.final_map(times, 15)
    assert torch.equal(block.forward_final(final), st.final_map(block.forward_times(times), 15))
    assert block.output_shape((150, 7, 7)) == (channels, 3, 3)


@pytest.mark.parametrize("merge", ["concat", "none"])
def test_deeper2024_conv4_with_and_without_its_skip(merge, gen):
    from spiking import times as st
    channels = 450 if merge == "concat" else 200
    # conv4 pooled by 2 (the full-MNIST run's layout): with a skip, the block pools after the merge
    model = models.create_model("deeper2024", settings={"merge": merge, "decision.in_channels": channels,
                                                        "conv3.pool": 1, "conv4.pool": 2})
    block = model.blocks[3]
    conv4 = block.main if merge == "concat" else block
    assert [layer.name for b in model.blocks[:4] for layer in b.stdp_layers()] == ["conv1", "conv2", "conv3", "conv4"]
    assert conv4.spec.pool == (1 if merge == "concat" else 2)
    times = random_times(2, 250, 7, 7, 15, never=0.5, generator=gen)
    fired = conv4.fire_times(times)
    merged = torch.cat([fired, times], dim=1) if merge == "concat" else fired
    assert torch.equal(block.forward_times(times), st.pool_times(merged, 2))
    assert block.output_shape((250, 7, 7)) == (channels, 3, 3)
    with pytest.raises(ValueError, match=f"set decision.in_channels={channels}"):
        models.create_model("deeper2024", settings={"merge": merge, "decision.in_channels": 300})


def test_a_run_recorded_before_a_setting_existed_is_rebuilt_as_it_ran():
    import json
    # deeper2024 recorded before `merge` existed: conv4 alone, its decision reading 200 maps
    # (nor `decision.averaged`: it predicted with its weights, where today's default averages)
    earlier = {"merge": "none", "decision.in_channels": 200, "decision.pad": 1, "conv4.pool": 2,
               "decision.averaged": False}
    record = json.loads(json.dumps(models.create_model("deeper2024", settings=earlier).hyperparameters()))
    del record["merge"], record["decision"]["averaged"]
    settings = models.recorded_settings("deeper2024", record)
    assert settings["merge"] == "none"               # its `absent` value, not today's default
    assert settings["decision.in_channels"] == 200 and settings["decision.averaged"] is False
    rebuilt = models.create_model("deeper2024", settings=settings)
    assert rebuilt.blocks[3].name == "conv4" and rebuilt.blocks[3].spec.pool == 2
    assert not rebuilt.blocks[4].spec.averaged
    assert models.setting_changes("deeper2024", record) == earlier     # what compare.py's settings column shows


@pytest.mark.parametrize("name", ["mozafari2018", "deep2024"])
def test_a_run_recorded_before_the_teacher_existed_learned_without_it(name):
    """The teacher is on by default in these models; a record written before the setting
    existed ran SpykeTorch's R-STDP, and is rebuilt (and resumed, and compared) as such."""
    import json
    record = json.loads(json.dumps(models.create_model(name).hyperparameters()))
    assert record["decision"].pop("teacher") > 0
    assert models.recorded_settings(name, record)["decision.teacher"] == 0.0
    assert models.setting_changes(name, record) == {"decision.teacher": 0.0}


def test_checkpoints_written_before_a_setting_existed_still_load():
    import json
    from checkpoints import check_compatible
    from utils import UserError
    model = models.create_model("mozafari2018")
    old = json.loads(json.dumps(model.hyperparameters()))
    for layer in ("conv1", "conv2"):             # settings added after such a checkpoint was written
        del old[layer]["target_activity"], old[layer]["adapt_every"]
    del old["frontend"]["kind"]
    payload = {"model": "mozafari2018", "num_classes": 10, "frontend_key": model.frontend.key(),
               "hyperparameters": old, "state_dict": model.state_dict()}
    check_compatible(payload, model, "mozafari2018")
    old["conv1"]["threshold"] = 99.0
    with pytest.raises(UserError, match=r"other hyperparameters \(conv1\)"):
        check_compatible(payload, model, "mozafari2018")


@pytest.mark.parametrize("exact", [True, False])
def test_a_decision_reads_a_map_smaller_than_its_kernel_as_if_padded_to_it(exact, gen):
    """mozafari2018's whole-map decision (k4, pad 0) on the 2 x 2 maps of 16 x 16 images: the
    map is zero-padded by ceil((4 - 2) / 2) = 1 on each side, so it decides and learns as the
    same layer with pad 1 does; a map that fits is left as it is."""
    from models.decision import DecisionLayer, DecisionSpec

    def layer(pad):
        torch.manual_seed(3)
        return DecisionLayer(DecisionSpec(in_channels=12, kernel_size=4, neurons_per_class=3, pad=pad,
                                          teacher=0.5), 10, 15)
    fitted, explicit = layer(0), layer(1)
    assert fitted.output_shape((12, 2, 2)) == explicit.output_shape((12, 2, 2)) == (30, 1, 1)
    assert fitted.output_shape((12, 3, 2)) == (30, 2, 1) and fitted.output_shape((12, 5, 4)) == (30, 2, 1)
    assert fitted.macs((12, 2, 2)) == explicit.conv.weight.numel()
    final = (random_times(64, 12, 2, 2, 15, never=0.5, generator=gen) < 15).float()
    labels = torch.randint(0, 10, (64,), generator=gen)
    for start in range(0, 64, 16):
        a = fitted.reinforce(final[start:start + 16], labels[start:start + 16], exact=exact)
        b = explicit.reinforce(final[start:start + 16], labels[start:start + 16], exact=exact)
        assert torch.equal(a, b)
    assert not torch.equal(fitted.conv.weight, layer(0).conv.weight)          # it learned
    assert torch.equal(fitted.conv.weight, explicit.conv.weight)
    assert torch.equal(fitted.predict(final).classes, explicit.predict(final).classes)
    # a whole 4 x 4 map (MNIST) is not padded
    assert fitted.padding((12, 4, 4)) == (0, 0) and fitted.output_shape((12, 4, 4)) == (30, 1, 1)
