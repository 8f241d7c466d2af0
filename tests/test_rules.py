"""The non-convolutional learning rules (spiking.rules) against slow per-sample loops written from
their formulas, and each model's learner equals the function it claims to apply."""
import math

import torch

import models
from models.itsadeepizza2023 import reward_vector
from spiking import rules


def test_bp_stdp_deltas_equal_a_loop_over_samples_neurons_and_synapses():
    gen = torch.Generator().manual_seed(0)
    batch, inputs, hidden, outputs = 3, 5, 4, 2
    target = torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), outputs).float()
    fired = (torch.rand(batch, outputs, generator=gen) < 0.5).float()
    counts_in = torch.randint(0, 4, (batch, inputs), generator=gen).float()
    counts_hidden = torch.randint(0, 4, (batch, hidden), generator=gen).float()
    w_out = torch.randn(outputs, hidden, generator=gen)
    for gate in ("count", "indicator"):
        d_out, d_hid = rules.bp_stdp_deltas(target, counts_in, counts_hidden, fired, w_out, gate)
        slow_out, slow_hid = torch.zeros(outputs, hidden), torch.zeros(hidden, inputs)
        for b in range(batch):
            xi = [float(target[b, j] - fired[b, j]) for j in range(outputs)]
            for j in range(outputs):
                for h in range(hidden):
                    slow_out[j, h] += xi[j] * counts_hidden[b, h]
            for h in range(hidden):
                g = float(counts_hidden[b, h]) if gate == "count" else float(counts_hidden[b, h] > 0)
                delta = g * sum(xi[j] * float(w_out[j, h]) for j in range(outputs))
                for m in range(inputs):
                    slow_hid[h, m] += delta * counts_in[b, m]
        assert torch.allclose(d_out, slow_out) and torch.allclose(d_hid, slow_hid, atol=1e-5)


def test_hebbian_rules_equal_their_formulas():
    gen = torch.Generator().manual_seed(1)
    pre = (torch.rand(4, 6, generator=gen) < 0.5).float()
    post = (torch.rand(4, 3, generator=gen) < 0.5).float()
    mean = torch.rand(6, generator=gen)
    slow = torch.zeros(6, 3)
    for b in range(4):
        for m in range(6):
            for n in range(3):
                slow[m, n] += (pre[b, m] - mean[m]) * post[b, n]
    assert torch.allclose(rules.centred_hebbian_sum(pre, post, mean), slow)
    weight = torch.rand(6, 3, generator=gen)
    new = rules.normalized_hebbian_weights(weight, slow, 4, 0.5, 2.0)
    expected = (weight + 0.5 * slow / 4).clamp(0, 1)
    assert torch.allclose(new, expected / expected.sum(dim=0) * 2.0) and torch.allclose(new.sum(dim=0), torch.full((3,), 2.0))
    x, spikes = torch.tensor([0.9, 0.1, 0.7]), torch.tensor([1.0, 0.0])
    assert torch.allclose(rules.sign_hebbian_delta(x, spikes, 0.6, 0.05),
                          torch.tensor([[0.05, 0.0], [-0.05, 0.0], [0.05, 0.0]]))


def test_pair_stdp_rule_equals_its_formula_pair_by_pair():
    gen = torch.Generator().manual_seed(2)
    pre = (torch.rand(2, 6, 3, generator=gen) < 0.4).float()
    post = (torch.rand(2, 6, 2, generator=gen) < 0.4).float()
    weight, reward = torch.rand(2, 3, generator=gen), torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    delta = rules.reward_modulated_pair_stdp(weight, pre, post, reward, 0.1, 1.5, 1.0, 3.0)
    slow = torch.zeros(2, 2, 3)
    for b in range(2):
        for n in range(2):
            for m in range(3):
                ltp = sum(math.exp(-(t - s) / 3.0) for t in range(6) for s in range(t)
                          if post[b, t, n] and pre[b, s, m])
                ltd = sum(math.exp(-(s - t) / 3.0) for s in range(6) for t in range(s + 1)
                          if pre[b, s, m] and post[b, t, n])
                w = float(weight[n, m])
                slow[b, n, m] = 0.1 * reward[b, n] * w * (1 - w) * (1.5 * ltp - 1.0 * ltd)
    assert torch.allclose(delta, slow.mean(dim=0), atol=1e-6)


def test_itsadeepizza_learner_applies_the_pair_stdp_function():
    model = models.create_model("itsadeepizza2023", num_classes=3)
    gen = torch.Generator().manual_seed(3)
    steps = model.time_steps
    times = torch.where(torch.rand(4, 100, generator=gen) < 0.3,
                        torch.randint(0, steps, (4, 100), generator=gen), steps).to(torch.uint8)
    labels = torch.tensor([0, 1, 2, 1])
    before = model.weight.clone()
    post = model.output_spikes(times)
    predicted = post.sum(dim=1).argmax(dim=1)
    pre = (times.unsqueeze(1) == torch.arange(steps).view(1, -1, 1)).float()
    c = model.config
    expected = rules.reward_modulated_pair_stdp(before, pre, post.sum(dim=2, keepdim=True).expand_as(post),
                                                reward_vector(predicted, labels, 3), c.learning_rate,
                                                c.a_plus, c.a_minus, c.tau)
    model.train_batch(times, labels)
    assert torch.equal(model.weight, before + expected) and expected.abs().sum() > 0


def test_tavanaei_learner_applies_the_bp_stdp_function():
    model = models.create_model("tavanaei2017", num_classes=3, hidden=4)
    gen = torch.Generator().manual_seed(4)
    windows = {"in": [(torch.rand(2, 100, generator=gen) < 0.3).float() for _ in range(4)],
               "hidden": [(torch.rand(2, 4, generator=gen) < 0.5).float() for _ in range(4)],
               "out": [(torch.rand(2, 3, generator=gen) < 0.5).float() for _ in range(4)]}
    target = torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()
    before_out, before_hid = model.output_weight.clone(), model.hidden_weight.clone()
    d_out, d_hid = rules.bp_stdp_deltas(target, torch.stack(windows["in"]).sum(0), torch.stack(windows["hidden"]).sum(0),
                                        torch.stack(windows["out"]).amax(0), before_out, model.config.hidden_gate)
    model._update(target, windows)
    lr = model.config.learning_rate
    assert torch.equal(model.output_weight, before_out + lr * d_out)
    assert torch.equal(model.hidden_weight, before_hid + lr * d_hid)
