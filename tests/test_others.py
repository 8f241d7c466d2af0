"""The other spiking systems: hand-computed traces, slow references, documented pathologies."""
import math

import numpy as np
import pytest
import torch

import models
from models.chevalier2019 import Chevalier2019Config, LeakyReLULayer
from models.itsadeepizza2023 import reward_vector, simulate_lif
from spiking.rules import pair_stdp_sums
from frontends import ReceptiveFields, gaussian_field_times


# ---------------------------------------------------------------- chevalier2019

def one_neuron_layer(reset):
    config = Chevalier2019Config(reset=reset)
    layer = LeakyReLULayer(1, 1, config)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
    return layer


def test_leaky_layer_hand_computed_three_step_trace():
    """Drive 0.6, 0.6, 0.6 with lambda 0.9, theta 1, p 1.5: u = 0.6, 1.14 (fires: o = 0.14,
    v = 1.14 * -0.5 = -0.57), then u = 0.6 + 0.9 * -0.57 = 0.087."""
    layer = one_neuron_layer("scale")
    state = (torch.zeros(1, 1), torch.zeros(1, 1))
    trace = []
    for _ in range(3):
        state = layer.step(torch.full((1, 1), 0.6), state)
        trace.append((round(state[0].item(), 4), round(state[1].item(), 4)))
    assert trace == [(0.6, 0.0), (-0.57, 0.14), (0.087, 0.0)]
    assert all(v <= 1.0 for v, _ in trace)              # stored states never exceed theta
    subtract = one_neuron_layer("subtract")
    state = subtract.step(torch.full((1, 1), 1.14), (torch.zeros(1, 1), torch.zeros(1, 1)))
    assert state[0].item() == pytest.approx(1.0 - 1.5)  # the prose rule: theta - p, a constant


@pytest.mark.parametrize("reset,gradient", [("scale", -0.5), ("subtract", 0.0)])
def test_gradient_through_a_firing_reset(reset, gradient):
    layer = one_neuron_layer(reset)
    x = torch.full((1, 1), 1.4, requires_grad=True)
    v, _ = layer.step(x, (torch.zeros(1, 1), torch.zeros(1, 1)))
    v.sum().backward()
    assert x.grad.item() == pytest.approx(gradient)


def test_two_step_latency_and_mean_reduction():
    model = models.create_model("chevalier2019", time_steps=4)
    with torch.no_grad():
        for layer in (model.layer1, model.layer2):
            layer.linear.bias.zero_()
    # the collected value at t = 0 and t = 1 cannot depend on the image (two-step delay)
    outputs = []
    for image in (torch.zeros(1, 784, dtype=torch.uint8), torch.full((1, 784), 255, dtype=torch.uint8)):
        _, history = model.run(image, torch.Generator().manual_seed(0), record=True)
        outputs.append(torch.stack(history["layer2_state"], dim=1))
    assert torch.equal(outputs[0][:, :2], outputs[1][:, :2]) and outputs[0][:, :2].abs().sum() == 0
    log_probabilities, history = model.run(torch.full((1, 784), 255, dtype=torch.uint8),
                                           torch.Generator().manual_seed(0), record=True)
    mean = torch.stack(history["layer2_state"], dim=1).mean(dim=1)
    assert torch.allclose(log_probabilities, torch.log_softmax(mean.unsqueeze(0), dim=1), atol=1e-6)


def test_evaluation_is_seeded_and_reproducible():
    model = models.create_model("chevalier2019", time_steps=8)
    images = torch.randint(0, 256, (6, 784), dtype=torch.uint8)
    model.start_evaluation("test")
    first = model.predict(images).scores
    model.start_evaluation("test")
    assert torch.equal(model.predict(images).scores, first)


# ---------------------------------------------------------------- lagacherie2024

def slow_faithful_step(weight, state, x, theta=0.6, eta=0.05):
    weight, state = weight.clone(), state.clone()
    inputs, outputs = weight.shape
    state = 0.5 * state + x @ weight
    spikes = torch.zeros(outputs)
    for n in range(outputs):
        if state[n] >= theta:
            spikes[n] = 1
            state[n] = 0
            for i in range(inputs):
                weight[i, n] += eta if x[i] > theta else -eta
    return weight, state, spikes


def test_faithful_hebbian_update_matches_a_double_loop():
    torch.manual_seed(0)
    model = models.create_model("lagacherie2024", mode="faithful", neurons=6)
    layer = model.layer
    x = torch.rand(784)
    weight, state, spikes = slow_faithful_step(layer.weight.data, layer.state, x)
    got_spikes, got_state = layer.faithful_step(x, layer.state.clone(), learn=True)
    assert torch.equal(got_spikes, spikes) and torch.allclose(got_state, state)
    assert torch.allclose(layer.weight, weight)
    at_threshold = layer.faithful_step(x, torch.full((6,), 0.6 / 0.5) - (x @ layer.weight) / 0.5 + 1e-6, False)
    assert at_threshold[0].sum() == 6                    # >= theta fires (not >)


def test_faithful_mode_pathologies_silence_on_sparse_and_runaway_on_dense():
    """The article's rule falls silent on MNIST-like sparse input and runs away on dense input."""
    torch.manual_seed(0)
    sparse = models.create_model("lagacherie2024", mode="faithful", neurons=10)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(3000, 784, generator=gen) < 0.15).float() * torch.rand(3000, 784, generator=gen)
    spiking = []
    state = sparse.layer.state.clone()
    for x in images:
        spikes, state = sparse.layer.faithful_step(x, state, learn=True)
        spiking.append(spikes.mean().item())
    assert np.mean(spiking[:100]) > 0.01 and np.mean(spiking[-500:]) < 0.02 * np.mean(spiking[:100])
    dense = models.create_model("lagacherie2024", mode="faithful", neurons=10)
    dense.layer.weight.data = torch.randn(100, 10)
    state = torch.randn(10)
    fired = []
    for _ in range(3000):
        spikes, state = dense.layer.faithful_step((torch.rand(100, generator=gen) < 0.7).float(), state, True)
        fired.append(spikes)
    # a neuron that fires early potentiates 70 % of its inputs per spike: it then fires at every
    # step and its weights grow without bound (a neuron that never fired never learns)
    late = torch.stack(fired[-100:]).mean(0)
    runaway = late == 1
    assert runaway.sum() >= 5 and ((late == 0) | runaway).all()
    assert dense.layer.weight[:, runaway].mean() > 20


def test_usable_mode_keeps_bounds_and_k_winners():
    torch.manual_seed(0)
    model = models.create_model("lagacherie2024", neurons=20, kwta=2, time_steps=10)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 784, generator=gen) * 255).to(torch.uint8)
    model.start_epoch(0)
    for _ in range(5):
        model.train_batch(images, None)
    weight = model.layer.weight
    assert weight.min() >= 0 and weight.max() <= 1
    assert torch.allclose(weight.sum(dim=0), torch.full((20,), model.config.weight_norm), rtol=1e-4)
    from models.lagacherie2024 import _top_k_above
    above = torch.tensor([[0.5, -1.0, 2.0, 0.1], [-1.0, -2.0, -0.5, 0.3]])
    assert _top_k_above(above, 2).tolist() == [[1, 0, 1, 0], [0, 0, 0, 1]]


# ---------------------------------------------------------------- itsadeepizza2023

def test_receptive_field_encoder_hand_computed():
    config = ReceptiveFields()
    centres = torch.stack([torch.linspace(lo, hi, 25, dtype=torch.float64) for lo, hi in config.ranges])
    features = torch.tensor([[4.0, 2.0 + 2.5 / 24 * 0.5, 7.0, 10.0]])
    times = gaussian_field_times(features, centres, 0.5, 0.01, 100)[0].view(4, 25)
    assert times[0, 0] == 0                                   # exactly on a centre: t = 0
    g = math.exp(-((2.5 / 24) * 0.5) ** 2 / 0.5)              # half a spacing from the centre
    assert times[1, 0] == round((1 - g) * 100) and times[1, 1] == round((1 - g) * 100)
    assert (times[3] == 100).all()                            # far outside: silent
    g_far = math.exp(-(7.0 - 6.75) ** 2 / 0.5)
    assert times[2, 23] == round((1 - g_far) * 100)


def slow_stdp(pre_times, post_times, tau):
    """The original's loop over every pre and post spike pair of one sample."""
    ltp = np.zeros((len(post_times), len(pre_times)))
    ltd = np.zeros_like(ltp)
    for j, posts in enumerate(post_times):
        for i, pres in enumerate(pre_times):
            for tp in pres:
                for tq in posts:
                    if tq - tp > 0:
                        ltp[j, i] += math.exp(-(tq - tp) / tau)
                    else:
                        ltd[j, i] += math.exp(-(tp - tq) / tau)
    return ltp, ltd


def test_trace_stdp_equals_the_pair_loop_including_simultaneous_spikes():
    gen = torch.Generator().manual_seed(3)
    pre = (torch.rand(1, 30, 5, generator=gen) < 0.1).float()
    post = (torch.rand(1, 30, 3, generator=gen) < 0.2).float()
    post[0, 7, 1] = pre[0, 7, 2] = 1.0                        # a same-step pair: LTD
    ltp, ltd = pair_stdp_sums(pre, post, 10.0)
    to_times = lambda trains: [list(np.flatnonzero(trains[0, :, n].numpy())) for n in range(trains.shape[2])]
    expected_ltp, expected_ltd = slow_stdp(to_times(pre), to_times(post), 10.0)
    assert np.allclose(ltp[0].numpy(), expected_ltp) and np.allclose(ltd[0].numpy(), expected_ltd)


def test_pooled_post_histories_share_every_output_spike():
    model = models.create_model("itsadeepizza2023", num_classes=3)
    own = models.create_model("itsadeepizza2023", num_classes=3, post="own")
    own.weight.data.copy_(model.weight.data)
    times = torch.full((1, 100), 100, dtype=torch.uint8)
    times[0, :20] = torch.arange(20, dtype=torch.uint8)
    labels = torch.tensor([2])
    before = model.weight.clone()
    model.train_batch(times, labels)
    own.train_batch(times, labels)
    assert not torch.equal(model.weight, own.weight)
    assert (model.weight > 0).all() and (model.weight < 1).all()       # the soft bound
    assert not torch.equal(model.weight, before)


def test_reward_vector_and_lif_delay():
    assert reward_vector(torch.tensor([1, 0]), torch.tensor([1, 2]), 3).tolist() == [[0, 1, 0], [-1, 0, 1]]
    weight = torch.full((1, 1), 3.0)
    spikes = simulate_lif(torch.zeros(1, 1, dtype=torch.uint8), weight, 4, 0.5, 0.5, 1.0)
    # input at t = 0 raises I; U sees it at t = 1: U = 0.5 * 3 = 1.5 > 1
    assert spikes[0, :, 0].tolist() == [0.0, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------- tavanaei2017

def test_bpstdp_error_table_and_hidden_gate():
    model = models.create_model("tavanaei2017", num_classes=3, hidden=2)
    with torch.no_grad():
        model.output_weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
        model.hidden_weight.zero_()
    target = torch.tensor([[1.0, 0.0, 0.0]])
    windows = {"in": [torch.ones(1, 100)], "hidden": [torch.tensor([[2.0, 0.0]])],
               "out": [torch.tensor([[0.0, 1.0, 0.0]])]}
    # xi = target - fired = [+1 (silent target), -1 (firing non-target), 0]
    out_before = model.output_weight.clone()
    model._update(target, windows)
    lr = model.config.learning_rate
    assert torch.allclose(model.output_weight - out_before,
                          lr * torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 0.0]]))
    # delta_h = count_h * sum_j xi_j W_jh (pre-update W): h0: 2 * (1 - 3) = -4, h1: 0
    assert torch.allclose(model.hidden_weight[:, 0], torch.tensor([-4.0 * lr, 0.0]))
    paper = models.create_model("tavanaei2017", num_classes=3, hidden=2, hidden_gate="indicator")
    with torch.no_grad():
        paper.output_weight.copy_(out_before)
        paper.hidden_weight.zero_()
    paper._update(target, windows)
    assert torch.allclose(paper.hidden_weight[:, 0], torch.tensor([-2.0 * lr, 0.0]))


def test_double_reset_potential_sequence():
    """An input spiking every step with weight 1 and threshold 0.9: with the double reset U runs
    1 (fires, zeroed), 0 + 1 - 1 = 0, 1 (fires)...: every other step; zeroing alone: every step."""
    drive = torch.zeros(1, 4, 100)
    drive[0, :, 0] = 1.0
    patterns = []
    for double in (True, False):
        model = models.create_model("tavanaei2017", num_classes=1, hidden=1, time_steps=4, double_reset=double)
        with torch.no_grad():
            model.hidden_weight.zero_()
            model.hidden_weight[0, 0] = 1.0
        _, hidden = model.simulate(drive, return_hidden=True)
        patterns.append(hidden[0, :, 0].tolist())
    assert patterns == [[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]]


def test_mnist_rate_coding_lights_exactly_the_spiking_pixel():
    """Regression for the original's 2-D indexing bug (each spike lit whole rows)."""
    model = models.create_model("tavanaei2017_mnist")
    image = torch.zeros(1, 784, dtype=torch.uint8)
    image[0, 3 * 28 + 5] = 255
    spikes = model.input_spikes(image, torch.Generator().manual_seed(0))
    assert spikes.sum(dim=2).max() <= 1                                  # one pixel at most
    assert set(torch.nonzero(spikes[0])[:, 1].tolist()) <= {3 * 28 + 5}
    assert spikes.sum() > 0
