"""The end of a run: the test split evaluated once (`test_report`, what `NetworkTrainer.test`
and `--eval-only` run), with what the run reports beside the decision's metrics: a linear
readout fitted on the decision's features (`--also-readout`), the per-layer diagnostics, the
test spike rates and the activation maps. Functions of a `network_trainer.NetworkTrainer`."""
from __future__ import annotations

import time

import numpy as np
import torch

from diagnostics import layer_diagnostics
from metrics import classification_metrics, confusion_matrix
from node_cache import as_tensor
from spiking import times as st
from utils import UserError


def test_report(trainer) -> dict:
    """Evaluate the model as it is on the test split (once per reported number), write the
    run's final outputs and return the metrics (what `--eval-only` runs on a checkpoint)."""
    trainer.outputs.open()
    began = time.time()
    labels, predictions, scores = trainer.evaluate("test", 0, trainer.model.predict_needs)
    classes = trainer.meta.get("classes") or [str(c) for c in range(trainer.model.num_classes)]
    metrics = classification_metrics(labels, predictions, scores, trainer.model.num_classes)
    seconds = time.time() - began
    metrics.update(model=trainer.meta["model"], dataset=trainer.meta.get("dataset"),
                   parameters=trainer.model.parameter_count(), test_seconds=seconds,
                   inference_img_per_s=len(labels) / seconds, stage_seconds=dict(trainer.state.elapsed),
                   selected_epochs=dict(trainer.state.selected),
                   train_samples=len(trainer.splits["train"]), val_samples=len(trainer.splits["val"]),
                   spike_rates=test_spike_rates(trainer), layers=layer_report(trainer))
    if trainer.config.also_readout:
        metrics["also_readout"] = also_readout(trainer, trainer.config.also_readout, trainer.config.readout_c,
                                               trainer.config.readout_values or "spiked")
    if trainer.config.feature_images:
        trainer.outputs.features(trainer.model.feature_images())
    if trainer.config.activation_maps:
        activation_maps(trainer, trainer.config.activation_maps)
    trainer.outputs.draw_history(trainer.state.history)       # the whole history, also after --resume
    # metrics.json last: its presence says the run is complete
    trainer.outputs.test(metrics, confusion_matrix(labels, predictions, trainer.model.num_classes), classes)
    return metrics


@torch.no_grad()
def also_readout(trainer, kind: str, C: float | None, values: str = "spiked") -> dict:
    """A linear readout fitted on the features the decision layer reads (the head's input node:
    for deepr2024 its conv3 as its last stage left it; `values`: "spiked" or "latency"), beside
    the model's own decision: trained on the training split, C chosen on the validation split
    (unless given), the test split touched once. Returns its summary and test metrics."""
    from models.readout import LinearReadout
    began = time.time()
    node = len(trainer.model.blocks) - 1
    readout = LinearReadout(kind, trainer.model.num_classes, C, values, trainer.model.time_steps).to(trainer.device)
    nodes = {split: trainer.nodes.get(split, node, readout.needs) for split in ("train", "val", "test")}
    flat = {split: readout.features_of(nodes[split], trainer.config.eval_batch_size) for split in ("train", "val")}
    try:
        fitted = readout.fit(flat["train"], trainer.splits["train"].labels, flat["val"],
                             trainer.splits["val"].labels, seed=trainer.config.seed)
    except ValueError as error:
        raise UserError(f"--also-readout {kind}: {error}") from None
    batch = trainer.config.eval_batch_size
    predictions = [readout.predict(as_tensor(nodes["test"][b:b + batch]).to(trainer.device).float())
                   for b in range(0, len(nodes["test"]), batch)]
    test = classification_metrics(trainer.splits["test"].labels,
                                  np.concatenate([p.classes.cpu().numpy() for p in predictions]),
                                  np.concatenate([p.scores.float().cpu().numpy() for p in predictions]),
                                  trainer.model.num_classes)
    summary = {"kind": kind, "values": values, "node": node,
               "features": int(flat["train"].shape[1]), **fitted,
               "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
               "silence_rate": test["silence_rate"], "seconds": time.time() - began}
    trainer.log(f"also {kind} readout on node {node}: test accuracy {test['accuracy']:.4f} "
             f"(C {fitted['C']:.3g}, validation {fitted['val_accuracy']:.4f}) in {summary['seconds']:.0f}s")
    return summary


def layer_report(trainer) -> dict:
    """Per-layer activity, winners and linear probes on the training and validation splits
    (`diagnostics.layer_diagnostics`); {} when their spike times are not at hand (eval-only)."""
    train, val = trainer.splits["train"], trainer.splits["val"]
    if train.times is None or val.times is None:
        return {}
    began = time.time()
    size = 2 * trainer.config.batch_size if trainer.config.dry_run else len(train) + len(val)
    try:
        layers = layer_diagnostics(trainer.model, train.times[:size], train.labels[:size], val.times[:size],
                                   val.labels[:size], min(trainer.config.probe_samples, size),
                                   trainer.device, trainer.config.eval_batch_size, trainer.config.seed)
    except (MemoryError, RuntimeError, ValueError) as error:
        # diagnostics describe the run; they must never cost it its results
        trainer.log(f"warning: layer diagnostics skipped ({type(error).__name__}: {str(error)[:200]}); "
                 f"--probe-samples 0 skips the probes")
        return {}
    for name, values in layers.items():
        trainer.log(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items()))
    if layers:
        trainer.log(f"layer diagnostics in {time.time() - began:.1f}s")
    return layers


@torch.no_grad()
def test_spike_rates(trainer) -> dict:
    """Fraction of neurons that spike at each node, on up to 256 test images."""
    x = st.final_map(as_tensor((trainer.splits["test"].times[:256])).to(trainer.device),
                     trainer.model.time_steps)
    rates = {}
    for index, block in enumerate(trainer.model.blocks[:-1]):
        x = block.forward_final(x)
        rates[f"node{index + 1}"] = float(x.mean())
    return rates


@torch.no_grad()
def activation_maps(trainer, count: int) -> None:
    """Per-layer activity of `count` test samples (`model.activation_traces`)."""
    inputs = trainer.nodes.get("test", 0, "times")
    trainer.model.start_evaluation("test")
    for sample in range(min(count, len(inputs))):
        traces = trainer.model.activation_traces(as_tensor(inputs[sample:sample + 1]).to(trainer.device))
        trainer.outputs.activation_maps(sample, traces, trainer.model.time_steps)
