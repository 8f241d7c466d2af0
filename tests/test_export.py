"""NIR export (export.py), checked by software nobody here wrote: `nir` writes and reads the
file, `nirtorch` builds and runs the graph (its own Conv2d, SumPool2d, Affine and Flatten
modules; only NIR's Threshold node, which nirtorch does not map, is given here, as H(v - theta)
with v > theta; Flatten, whose dimensions NIR counts without the batch (as snnTorch's
exporter writes them) while nirtorch 2.6's default passes them to torch unshifted; and Affine,
whose bias nirtorch 2.6's default drops (it sets `weight.bias`)). Decisions must equal the
tool's own on every image."""
import os

import pytest
import torch

import export
import models
import train
from utils import UserError

nir = pytest.importorskip("nir", reason="NIR export is the optional nir extra (requirements-nir.txt)")
nirtorch = pytest.importorskip("nirtorch", reason="the export tests run graphs through nirtorch (requirements-nir.txt)")


class Heaviside(torch.nn.Module):
    def __init__(self, threshold):
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(threshold))

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)


def affine(node):
    module = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
    module.weight.data, module.bias.data = torch.from_numpy(node.weight), torch.from_numpy(node.bias)
    return module


def run_graph(path, times, time_steps):
    """Decisions of the exported file for node-0 spike times [B, C, H, W], step by step."""
    graph = nir.read(path)
    module = nirtorch.nir_to_torch(graph, {
        nir.Threshold: lambda node: Heaviside(node.threshold),
        nir.Affine: affine,
        nir.Flatten: lambda node: torch.nn.Flatten(node.start_dim + 1, node.end_dim if node.end_dim < 0 else node.end_dim + 1)})
    state = None
    for step in range(time_steps):
        wave = (times <= step).float()          # the cumulative input wave at this step
        output, state = module(wave) if state is None else module(wave, state)
    # a linear readout is silent where its input has no spike (all the tool's inputs here have one)
    silent = torch.zeros(len(times), dtype=torch.bool)
    return export.read_out(output, silent, graph), output


def export_and_compare(model, times, tmp_path, name):
    graph = export.to_nir(model, tuple(times.shape[1:]), [str(c) for c in range(model.num_classes)], name)
    path = str(tmp_path / f"{name}.nir")
    nir.write(path, graph)
    got, _ = run_graph(path, times, model.time_steps)
    expected = model.predict(times).classes
    return got, expected


CONV4_ALONE = {"merge": "none", "decision.in_channels": 200}


@pytest.mark.parametrize("name, extra, readout", [
    ("mozafari2018", {}, None), ("deep2024", {}, None), ("deeper2024", {}, None), ("deeper2024", CONV4_ALONE, None),
    ("deepr2024", {}, None), ("kheradpisheh2018", {}, None), ("resnet2024", {}, None), ("resnet2024", {}, "logistic")])
def test_exported_graphs_decide_as_the_tool(name, extra, readout, tmp_path):
    from models.readout import ReadoutChoice
    torch.manual_seed(0)
    layers = models.create_model(name).config.LAYERS + {"deeper2024": ("conv4",),
                                                         "resnet2024": ("conv3",)}.get(name, ())
    # every layer calibrated to 30 % activity (untrained weights fire nearly everywhere), so
    # the calibrated thresholds are exported too
    settings = {f"{layer}.target_activity": 0.3 for layer in layers}
    model = models.create_model(name, num_classes=4, settings={"frontend.time_steps": 8, **settings, **extra},
                                readout_choice=ReadoutChoice(readout) if readout else None)
    model.eval()
    images = (torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    times = model.frontend.build()(images)
    generator = torch.Generator().manual_seed(2)
    x = times
    with torch.no_grad():
        for block in model.blocks[:-1]:
            layer = getattr(block, "main", block)       # a skip block's conv layer reads the block's input
            layer.conv.weight.uniform_(0, 1, generator=generator)
            layer.calibrate(x)
            x = block.forward_times(x)
        head = model.blocks[-1]
        if hasattr(head, "conv"):
            head.conv.weight.uniform_(0, 1, generator=generator)
        if hasattr(head, "coef"):       # a linear readout, fitted here at random
            head.coef = torch.randn(4, x.flatten(1).shape[1], generator=generator)
            head.intercept = torch.randn(4, generator=generator)
    got, expected = export_and_compare(model, times, tmp_path, name)
    assert torch.equal(got, expected)
    assert len(set(expected.tolist())) > 1      # the decisions differ between images
    if getattr(model.blocks[-2], "merge", None) == "concat":
        # the concatenated maps reach the next layer as two sources whose convolutions are summed
        nodes = nir.read(str(tmp_path / f"{name}.nir")).nodes
        assert sum("_from_" in key for key in nodes) >= 2


@pytest.mark.parametrize("name, extra", [("resnet2024", {"merge": "or", "decision.in_channels": 250}),
                                         ("inception2024", {}), ("majority2024", {}), ("tavanaei2017", {})])
def test_models_without_an_exact_export_are_refused_in_one_line(name, extra):
    model = models.create_model(name, settings=extra)
    with pytest.raises(UserError, match="(has no exact NIR export|covers the conv)"):
        export.to_nir(model, (6, 28, 28), None, name)


@pytest.mark.cli
def test_a_trained_digits_run_exports_and_nirtorch_agrees_on_every_test_image(tmp_path):
    """Both heads: the R-STDP decision, then a logistic readout on the same conv layers (taken
    from the first run, so they are trained once)."""
    # a quarter of digits' training set: the graph must agree with the tool, not learn well
    base = ["--dataset", "digits", "--model", "mozafari2018", "--ratio", "0.25", "--out-dir", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--threads", "2", "--probe-samples", "0"]
    import data
    dataset = data.load_dataset("digits")
    first = None
    for head in ([], ["--readout", "logistic"]):
        schedule = ["--epochs", "1", "1", "2"] if first is None else ["--init-from", first, "--epochs", "0", "0", "1"]
        metrics = train.main(base + schedule + head)
        first = first or metrics["run_dir"]
        out = export.main([metrics["run_dir"]])
        assert out == os.path.join(metrics["run_dir"], "model.nir") and os.path.isfile(out)
        model, _ = export.load_trained(metrics["run_dir"])
        times = model.frontend.build()(torch.as_tensor(dataset.test_images).float().unsqueeze(1) / 255)
        got, _ = run_graph(out, times, model.time_steps)
        expected = model.predict(times).classes
        assert torch.equal(got, expected), head
        accuracy = float((got.numpy() == dataset.test_labels).mean())
        assert accuracy == pytest.approx(metrics["accuracy"])
        assert ("readout_logistic" in nir.read(out).nodes) == bool(head)


MNIST_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.path.join(MNIST_ROOT, "MNIST")), reason="real MNIST is not at ../shared/data")
def test_an_mnist_subset_run_exports_and_nirtorch_agrees_on_every_test_image(tmp_path):
    metrics = train.main(["--dataset", "mnist", "--data-root", MNIST_ROOT, "--no-download", "--ratio", "0.05",
                          "--epochs", "1", "1", "10", "--out-dir", str(tmp_path / "runs"),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--probe-samples", "0"])
    out = export.main([metrics["run_dir"]])
    model, _ = export.load_trained(metrics["run_dir"])
    import data
    dataset = data.load_dataset("mnist", MNIST_ROOT, download=False)
    times = model.frontend.build()(torch.as_tensor(dataset.test_images).float().unsqueeze(1) / 255)
    got, _ = run_graph(out, times, model.time_steps)
    assert torch.equal(got, model.predict(times).classes)
    assert float((got.numpy() == dataset.test_labels).mean()) == pytest.approx(metrics["accuracy"])


def test_a_checkpoint_without_its_input_shape_needs_it_given(tmp_path, capsys):
    import json
    from checkpoints import save_checkpoint
    torch.manual_seed(0)
    model = models.create_model("mozafari2018", num_classes=10)
    payload = {"format": 1, "model": "mozafari2018", "overrides": {}, "num_classes": 10,
               "hyperparameters": json.loads(json.dumps(model.hyperparameters())),
               "frontend_key": model.frontend.key(), "dataset": "mnist", "classes": None,
               "readout_choice": None, "state_dict": model.state_dict(), "trainer": {}}
    path = str(tmp_path / "old.ckpt")
    save_checkpoint(path, payload)
    with pytest.raises(SystemExit):
        export.main([path])
    assert "give it as --input-shape C,H,W" in capsys.readouterr().err
    out = export.main([path, "--input-shape", "6,28,28"])
    assert nir.read(out).nodes["input"].input_type["input"].tolist() == [6, 28, 28]
