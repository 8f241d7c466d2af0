"""--init-from: stages given 0 epochs take their layers from another run's checkpoint."""
import os
import shutil

import pytest
import torch

import train
from checkpoints import load_checkpoint

pytestmark = pytest.mark.cli


def run(tmp_path, cache_dir, name, *extra):
    return train.main(["--dataset", "synthetic", "--out-dir", str(tmp_path), "--run-name", name,
                       "--cache-dir", cache_dir, "--no-progress", "--batch-size", "16", "--threads", "2",
                       "--dry-run", "--probe-samples", "0", *extra])


def state(run_dir):
    return load_checkpoint(os.path.join(run_dir, "checkpoints", "best.ckpt"))["state_dict"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Runs other runs take layers from, trained once for the module (lazily): `sources(name)`
    -> (cache dir, run result); "mozafari" is the default model, "deep" deep2024 (1 epoch a stage)."""
    root, cache_dir, done = tmp_path_factory.mktemp("sources"), str(tmp_path_factory.mktemp("cache")), {}
    extra = {"mozafari": (), "deep": ("--model", "deep2024", "--epochs", "1", "1", "1", "1")}

    def get(name):
        if name not in done:
            done[name] = run(root, cache_dir, name, *extra[name])
        return cache_dir, done[name]
    return get


def test_retraining_the_decision_on_taken_layers_equals_training_it_in_one_run(sources, tmp_path):
    rates = ["--set", "decision.reward=(0.01, -0.005)"]
    cache_dir, features = sources("mozafari")                            # default decision rates
    retrained = run(tmp_path, cache_dir, "retrained", "--init-from", features["run_dir"],
                    "--epochs", "0", "0", "1", *rates)
    whole = run(tmp_path, cache_dir, "whole", "--epochs", "1", "1", "1", *rates)
    taken, ours, reference = state(features["run_dir"]), state(retrained["run_dir"]), state(whole["run_dir"])
    conv = [k for k in ours if k.startswith(("blocks.0.", "blocks.1."))]
    decision = [k for k in ours if k.startswith("blocks.2.") and k.endswith("weight")]
    assert conv and decision
    for key in conv:
        assert torch.equal(ours[key], taken[key]), key
    # the decision learned from the taken layers under the new rates, from this run's seeded start
    assert any(not torch.equal(ours[k], taken[k]) for k in decision)
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key
    assert retrained["accuracy"] == whole["accuracy"]
    config = open(os.path.join(retrained["run_dir"], "config.json")).read()
    assert os.path.join(features["run_dir"], "checkpoints", "best.ckpt") in config


def test_init_from_errors_are_one_line(sources, tmp_path, capsys):
    cache_dir, source = sources("mozafari")
    source = source["run_dir"]
    cases = [(["--epochs", "1", "1", "1"], "gives none 0"),
             (["--epochs", "0", "1", "1", "--set", "conv1.kernel_size=3"], "blocks.0.conv.weight is"),
             # deep2024's conv2 has 150 maps, mozafari2018's 250
             (["--model", "deep2024", "--epochs", "0", "0", "1", "1"], "blocks.1.conv.weight is")]
    for index, (extra, message) in enumerate(cases):
        with pytest.raises(SystemExit):
            run(tmp_path, cache_dir, f"bad{index}", "--init-from", source, *extra)
        err = capsys.readouterr().err
        assert err.startswith("error: --init-from") and err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit):
        run(tmp_path, cache_dir, "missing", "--init-from", str(tmp_path / "nothing"), "--epochs", "0", "0", "1")
    assert "no checkpoint at" in capsys.readouterr().err
    # a run folder without a selected model: its checkpoints are named, none is guessed
    unselected = tmp_path / "conv-only" / "checkpoints"
    unselected.mkdir(parents=True)
    for name in ("last.ckpt", "stage-conv1.ckpt"):
        shutil.copy(os.path.join(source, "checkpoints", "best.ckpt"), unselected / name)
    with pytest.raises(SystemExit):
        run(tmp_path, cache_dir, "unselected", "--init-from", str(tmp_path / "conv-only"), "--epochs", "0", "0", "1")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no best.ckpt" in err and "last.ckpt, stage-conv1.ckpt" in err, err


def test_another_models_layers_of_the_same_names_and_shapes_are_taken(sources, tmp_path):
    """deepr2024's first four stages are deep2024's: its conv1-conv3 can come from a deep2024
    run, and its decision stage then learns what deep2024's learned (same seed, same start)."""
    cache_dir, source = sources("deep")
    taken = state(source["run_dir"])
    for seed in ("0", "1"):
        # the last stage gets 0 epochs: its conv3 is taken, its decision trains in the decision stage
        target = run(tmp_path, cache_dir, f"deepr{seed}", "--model", "deepr2024", "--init-from", source["run_dir"],
                     "--epochs", "0", "0", "0", "1", "0", "--seed", seed)
        ours = state(target["run_dir"])
        conv = [k for k in taken if k.startswith(("blocks.0.", "blocks.1.", "blocks.2."))]
        assert "blocks.2.conv.weight" in conv
        for key in conv:
            assert torch.equal(ours[key], taken[key]), key
        # seed 0: deep2024's decision stage exactly; seed 1: another start, so not copied
        same = torch.equal(ours["blocks.3.conv.weight"], taken["blocks.3.conv.weight"])
        assert same == (seed == "0")


def test_a_module_is_taken_when_the_first_stage_that_learns_it_is_given_0_epochs():
    import models
    from checkpoints import taken_modules
    model = models.create_model("deepr2024")
    conv1, conv2, conv3, decision = model.blocks
    assert taken_modules(model.stages, (0, 0, 0, 1, 0)) == [conv1, conv2, conv3]     # the decision trains here
    assert taken_modules(model.stages, (0, 0, 0, 0, 3)) == [conv1, conv2, conv3, decision]
    assert taken_modules(model.stages, (0, 1, 1, 1, 1)) == [conv1]


def test_taken_reward_rules_keep_their_adaptive_scale_under_new_base_rates():
    """A taken layer's R-STDP bases are settings (`--set conv3_reward=...` applies), its
    current rates state: the saved adaptive scale carries over to the new bases."""
    import models
    from checkpoints import take_modules, taken_modules
    saved = models.create_model("deepr2024")
    saved.blocks[2].rstdp.adapt(0.9, 0.1)          # reward rates x 0.1, punish x 0.9
    payload = {"state_dict": saved.state_dict(), "num_classes": 10, "frontend_key": saved.frontend.key()}
    model = models.create_model("deepr2024", settings={"conv3_reward": (0.0001, -0.000075),
                                                       "conv3_punish": (-0.0002, 0.00025)})
    take_modules(payload, model, taken_modules(model.stages, (0, 0, 0, 0, 3)))
    rules = model.blocks[2].rstdp
    assert torch.allclose(rules.base_reward[:, 0].double(), torch.tensor([0.0001, -0.000075], dtype=torch.float64))
    assert torch.allclose(rules.reward.a_plus.double(), torch.full_like(rules.reward.a_plus.double(), 0.00001))
    assert torch.allclose(rules.punish.a_minus.double(), torch.full_like(rules.punish.a_minus.double(), 0.000225))
    # the same bases: loaded as saved (resume)
    again = models.create_model("deepr2024")
    again.load_state_dict(saved.state_dict())
    assert torch.equal(again.blocks[2].rstdp.reward.a_plus, saved.blocks[2].rstdp.reward.a_plus)


def test_a_layer_is_taken_by_name_where_its_module_path_differs(sources, tmp_path):
    """resnet2024's conv3 sits inside its residual block (`blocks.2.main`), deep2024's is a
    block of its own (`blocks.2`): the layer named conv3 is taken all the same, and it is the
    layer resnet2024 would have trained itself (same seed, same input, STDP before pooling)."""
    cache_dir, source = sources("deep")
    taken = state(source["run_dir"])
    target = run(tmp_path, cache_dir, "res", "--model", "resnet2024", "--init-from", source["run_dir"],
                 "--epochs", "0", "0", "0", "1")
    whole = run(tmp_path, cache_dir, "whole", "--model", "resnet2024", "--epochs", "1", "1", "1", "1")
    ours, reference = state(target["run_dir"]), state(whole["run_dir"])
    assert torch.equal(ours["blocks.2.main.conv.weight"], taken["blocks.2.conv.weight"])
    assert torch.equal(ours["blocks.2.main.conv.weight"], reference["blocks.2.main.conv.weight"])
    for key in ("blocks.0.conv.weight", "blocks.1.conv.weight"):
        assert torch.equal(ours[key], taken[key]), key
    for key in ours:        # and so the whole model is the one training resnet2024 alone gives
        assert torch.equal(ours[key], reference[key]), key
