"""The decision layer's teacher (`DecisionSpec.teacher`): exact at every batch size against the
per-sample reference of `tests.test_exact`, with adaptive windows and dropout; the summed mode;
checkpoints trained without it; the whole-map decision's remembered float64 matrix through exact
R-STDP's updates."""
import pytest
import torch

from models.stages import RSTDPStage
from spiking import functional as sf
from tests.conftest import BATCHES, drive, whole_map_only
from tests.test_exact import GEOMETRIES, decision_data, decision_layer, exact_winners, reference_rstdp


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("batch", BATCHES)
def test_teacher_equals_the_per_sample_reference(batch, geometry, gen, exact_path):
    whole_map_only(geometry, exact_path)
    final, labels = decision_data(300, generator=gen)
    reference = decision_layer(teacher=2.0, geometry=geometry)
    taught = []
    expected = reference_rstdp(reference, final, labels, taught=taught)
    assert len(taught) > 20 and len({t[0] for t in taught}) > 10     # many punished samples taught
    plain = decision_layer(geometry=geometry)
    reference_rstdp(plain, final, labels)
    assert (plain.conv.weight - reference.conv.weight).abs().max() > 1e-3    # the teacher matters
    layer = decision_layer(teacher=2.0, geometry=geometry)
    assert exact_winners(layer, final, labels, batch) == expected
    assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0)


def test_teacher_rates_follow_the_punish_scale_across_windows(gen):
    final, labels = decision_data(260, generator=gen)
    runs = {}
    for batch in BATCHES:
        layer = decision_layer(teacher=1.5)
        stage = RSTDPStage("decision", layer, input_node=0, window=50, adaptive_min=0.1, adaptive_int=0.9)
        counts = drive(stage, final, labels, batch, epochs=2)
        runs[batch] = (layer, [sum(c[k] for c in counts) for k in ("correct", "wrong", "silent")])
    layer, totals = runs[1]
    hit = float(layer.rstdp.punish.a_plus[0] / layer.rstdp.base_punish[0, 0])
    assert hit != 1.0
    assert torch.allclose(layer.teacher_rates(), layer.rstdp.base_reward * 1.5 * hit, rtol=1e-6, atol=0)
    for batch in BATCHES[1:]:
        other, other_totals = runs[batch]
        assert other_totals == totals, batch
        assert torch.allclose(other.conv.weight, layer.conv.weight, atol=1e-5, rtol=0), batch


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_teacher_with_dropout_picks_only_allowed_neurons(geometry, gen, exact_path):
    whole_map_only(geometry, exact_path)
    final, labels = decision_data(200, generator=gen)
    dropped = torch.zeros(40, dtype=torch.bool)
    dropped[::3] = True
    reference = decision_layer(teacher=1.0, geometry=geometry)
    before = reference.conv.weight.clone()
    taught = []
    expected = reference_rstdp(reference, final, labels, dropped, taught)
    assert not any(dropped[t[0]] for t in taught) and len(taught) > 10
    layer = decision_layer(teacher=1.0, dropout=0.5, geometry=geometry)
    layer.dropped.copy_(dropped)
    assert exact_winners(layer, final, labels, 32) == expected
    assert torch.allclose(layer.conv.weight, reference.conv.weight, atol=1e-5, rtol=0)
    assert torch.equal(layer.conv.weight[dropped], before[dropped].clamp(0.2, 0.8))   # never updated


def test_summed_mode_with_the_teacher_updates_the_label_class(gen):
    final, labels = decision_data(64, generator=gen)
    plain, taught = decision_layer(), decision_layer(teacher=1.0)
    decisions = plain.reinforce(final, labels, exact=False)
    assert torch.equal(taught.reinforce(final, labels, exact=False), decisions)
    changed = (plain.conv.weight != taught.conv.weight).flatten(1).any(dim=1).nonzero().flatten()
    missed = labels[(decisions >= 0) & (decisions != labels)]
    assert len(changed) > 0 and set((changed // 4).tolist()) <= set(missed.tolist())


def test_a_layer_trained_without_the_teacher_loads_with_its_punish_scale():
    plain = decision_layer()
    plain.adapt(0.9, 0.1, 0.0, 1.0)
    taught = decision_layer(teacher=2.0)
    taught.load_state_dict(plain.state_dict())
    assert float(taught.teacher_scale) == pytest.approx(0.9)
    assert torch.allclose(taught.teacher_rates(), plain.rstdp.base_reward * 2.0 * 0.9)
    again = decision_layer(teacher=2.0)
    again.load_state_dict(taught.state_dict())             # --resume: saved as it was
    assert float(again.teacher_scale) == pytest.approx(0.9)


def test_exact_rstdp_keeps_the_whole_map_matrix_current(gen, exact_path):
    """Exact R-STDP of a whole-map decision rewrites only its changed rows of the remembered
    float64 matrix (`sf.patch_whole_map_matrix`): after every batch it equals a fresh conversion
    of the weights, and the next batch's potentials are those of the weights as they are."""
    final, labels = decision_data(200, generator=gen)
    layer = decision_layer(teacher=2.0, geometry=(4, 0))
    weight = layer.conv.weight
    patched = 0
    for start in range(0, 200, 32):
        layer.reinforce_exact(final[start:start + 32], labels[start:start + 32])
        cached = getattr(weight, "_whole_map_matrix", None)
        if cached is not None and cached[0][1] == weight._version:
            patched += 1
            assert torch.equal(cached[1], weight.reshape(len(weight), -1).double())
        fresh = torch.nn.functional.conv2d(final[:40].double(), weight.double()).float()
        assert torch.equal(sf.conv2d(final[:40], weight), fresh)
    assert patched >= 5          # every batch but the first (which clamps all weights) was patched


def test_a_patch_from_another_version_forgets_the_matrix():
    weight = torch.rand(3, 2, 2, 2) * 0.5 + 0.25
    x = torch.ones(1, 2, 2, 2)
    sf.conv2d(x, weight)                     # remembers the matrix at this version
    weight[2].add_(0.1)                      # a change no patch is told of
    since = weight._version
    weight[1].add_(0.1)
    sf.patch_whole_map_matrix(weight, torch.tensor([1]), since)
    assert weight._whole_map_matrix is None
    assert torch.equal(sf.conv2d(x, weight).flatten(), weight.reshape(3, -1).double().sum(1).float())


def test_a_batch_whose_last_sample_first_clamps_the_weights_leaves_no_stale_matrix(gen, exact_path):
    """The initial weights lie outside the bounds; when the first update (which clamps every
    weight) comes from a batch's last sample, the remembered matrix must not be patched as if
    only that row had changed."""
    final, labels = decision_data(40, generator=gen)
    final[:7] = 0.0                               # silent: no update until the 8th sample
    layer = decision_layer(teacher=2.0, geometry=(4, 0))
    layer.reinforce_exact(final[:8], labels[:8])
    weight = layer.conv.weight
    assert weight.max() <= torch.tensor(0.8)          # clamped
    fresh = torch.nn.functional.conv2d(final[8:].double(), weight.double()).float()
    assert torch.equal(sf.conv2d(final[8:], weight), fresh)
