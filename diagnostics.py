"""Layer diagnostics of a trained convolutional spiking model: what each layer passes on.

For every node between the front end and the decision (the output of each block before the
head):

- `active`: the fraction of the node's outputs (features x positions, after pooling) that spike
  at all, on validation images;
- `silent_features`: the fraction of features (channels) that never spike on those images;
- for each STDP layer of the block, `never_win` (the fraction of its features that never win
  the k-WTA competition its learning uses on those images) and `winner_evenness` (the entropy of
  the winners' distribution over features divided by log(features): 1 = every feature wins
  equally often, 0 = one feature takes every win);
- `probe_accuracy`: a linear probe, i.e. multinomial logistic regression on the node's flattened
  final map, fitted on `probe_samples` training images and scored on up to as many validation
  images. It measures how much class information reaches that point of the network,
  independently of how well the layers after it use it. A node with many features is probed on
  fewer images (at most `PROBE_MAX_VALUES` image x feature values, at least 500 images) or not
  at all (`probe_skipped_features`); `probe_converged` 0 marks a probe whose solver stopped at
  its iteration cap.

For the decision (on validation images): `top_class_share` (the share of decisions taken by the
most chosen class) and, for decision layers whose winner is a neuron, `neurons_used` (the
fraction of decision neurons that decide at least once) and `top_neuron_share`.

Only the training and validation splits are read: the test set stays untouched.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from spiking import times as st

ACTIVITY_IMAGES = 1000      # validation images for activity, winners and the decision's spread
PROBE_MAX_VALUES = 50_000_000   # a probe's training matrix (images x features) at most; larger
                                # nodes are probed on fewer images (at least 500), else skipped


def layer_nodes(model) -> list[tuple[str, int, object]]:
    """(name, node index, block) for every block before the head; a block's name is its own or
    that of its STDP layers ("conv3a+conv3b+conv3c" for parallel branches)."""
    nodes = []
    for index, block in enumerate(model.blocks[:-1]):
        name = getattr(block, "name", None) or "+".join(layer.name for layer in block.stdp_layers())
        nodes.append((name or f"node{index + 1}", index + 1, block))
    return nodes


def evenness(counts: np.ndarray) -> float:
    """Entropy of a count histogram divided by the log of its length (1 = uniform, 0 = one bin;
    1 for a single bin, 0 for no counts)."""
    total = counts.sum()
    if len(counts) <= 1:
        return 1.0
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return max(0.0, float(-(p * np.log(p)).sum() / math.log(len(counts))))     # no -0.0


def fit_probe(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray,
              seed: int = 0, converged: bool = False):
    """Validation accuracy of a multinomial logistic regression (C = 1, at most 300 lbfgs
    iterations) fitted on flattened binary features [N, D]; a constant feature set (nothing to
    separate) scores the majority class's share. `converged`: also return whether the solver
    converged, as (accuracy, bool)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    if len(np.unique(train_labels)) < 2 or train.shape[1] == 0:
        majority = np.bincount(train_labels).argmax() if len(train_labels) else -1
        accuracy = float((val_labels == majority).mean())
        return (accuracy, True) if converged else accuracy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = LogisticRegression(C=1.0, max_iter=300, random_state=seed)
        probe.fit(train, train_labels)
    accuracy = float((probe.predict(val) == val_labels).mean())
    return (accuracy, bool(np.all(probe.n_iter_ < 300))) if converged else accuracy


@torch.no_grad()
def layer_diagnostics(model, train_times: np.ndarray, train_labels: np.ndarray, val_times: np.ndarray,
                      val_labels: np.ndarray, probe_samples: int = 5000, device=torch.device("cpu"),
                      batch_size: int = 128, seed: int = 0) -> dict:
    """{node name: {active, silent_features, probe_accuracy, <layer>.never_win,
    <layer>.winner_evenness}, "decision": {...}} for a `SpikingModel` (node-0 spike times uint8
    [N, C, H, W] and labels of the training and validation splits); {} for other models.
    `probe_samples` 0 skips the probes (and draws no training images)."""
    if not hasattr(model, "head") or len(model.blocks) == 0:
        return {}
    nodes = layer_nodes(model)
    model.eval()
    model.start_evaluation("val")
    results = {name: {} for name, _, _ in nodes}

    def finals(times: np.ndarray) -> dict:
        """{node name: final maps [N, ...] uint8} of every diagnosed node."""
        out = {name: [] for name in results}
        for begin in range(0, len(times), batch_size):
            x = st.final_map(torch.as_tensor(times[begin:begin + batch_size]).to(device), model.time_steps)
            for name, _, block in nodes:
                x = block.forward_final(x)
                out[name].append(x.to(torch.uint8).cpu())
        return {name: torch.cat(parts).numpy() for name, parts in out.items()}

    # activity and winners on up to ACTIVITY_IMAGES validation images
    sample = val_times[:ACTIVITY_IMAGES]
    for name, maps in finals(sample).items():
        per_feature = maps.reshape(len(maps), maps.shape[1], -1).max(axis=(0, 2))
        results[name].update(active=float(maps.mean()), silent_features=float((per_feature == 0).mean()))
    for name, counts in _winner_counts(model, nodes, sample, device, batch_size).items():
        results[name].update(counts)
    decision = _decision_spread(model, sample, device, batch_size)
    if probe_samples > 0 and len(train_times) and len(val_times):
        generator = np.random.default_rng(seed)
        chosen = np.sort(generator.permutation(len(train_times))[:probe_samples])
        train_maps = finals(train_times[chosen])
        val_maps = finals(val_times[:probe_samples])
        for name in results:
            features = int(np.prod(train_maps[name].shape[1:]))
            count = min(len(chosen), PROBE_MAX_VALUES // max(1, features))
            if count < min(500, len(chosen)):
                results[name]["probe_skipped_features"] = float(features)      # too many to probe
                continue
            results[name]["probe_accuracy"], converged = fit_probe(
                train_maps[name][:count].reshape(count, -1).astype(np.float32), train_labels[chosen][:count],
                val_maps[name][:count].reshape(min(count, len(val_maps[name])), -1).astype(np.float32),
                val_labels[:probe_samples][:count], seed, converged=True)
            if not converged:
                results[name]["probe_converged"] = 0.0
    if decision:
        results["decision"] = decision
    return results


def _winner_counts(model, nodes, times: np.ndarray, device, batch_size: int) -> dict:
    """{node name: {"<layer>.never_win": f, "<layer>.winner_evenness": e}} for the STDP layers of
    each block (their input is the block's input)."""
    layers = [(name, index - 1, layer) for name, index, block in nodes for layer in block.stdp_layers()]
    counts = {id(layer): np.zeros(layer.spec.out_channels, dtype=np.int64) for _, _, layer in layers}
    for begin in range(0, len(times), batch_size):
        x = torch.as_tensor(times[begin:begin + batch_size]).to(device)
        inputs = [x]
        for block in model.blocks[:-1]:
            inputs.append(block.forward_times(inputs[-1]))
        for _, node, layer in layers:
            winners = layer.learning_winners(inputs[node])[0][..., 0].flatten()
            winners = winners[winners >= 0].cpu().numpy()
            counts[id(layer)] += np.bincount(winners, minlength=layer.spec.out_channels)
    out = {}
    for name, _, layer in layers:
        c = counts[id(layer)]
        prefix = "" if layer.name == name else f"{layer.name}."
        out.setdefault(name, {}).update({f"{prefix}never_win": float((c == 0).mean()),
                                         f"{prefix}winner_evenness": evenness(c)})
    return out


def _decision_spread(model, times: np.ndarray, device, batch_size: int) -> dict:
    """How the decisions spread over classes (and decision neurons) on validation images."""
    classes, neurons = [], []
    for begin in range(0, len(times), batch_size):
        prediction = model.predict(torch.as_tensor(times[begin:begin + batch_size]).to(device))
        classes.append(prediction.classes.cpu().numpy())
        if prediction.winners.ndim == 3:
            neurons.append(prediction.winners[:, 0, 0].cpu().numpy())
    if not classes:
        return {}
    classes = np.concatenate(classes)
    decided = classes[classes >= 0]
    out = {"top_class_share": float(np.bincount(decided).max() / len(decided)) if len(decided) else 0.0}
    from models.decision import DecisionLayer
    neurons = np.concatenate(neurons) if neurons else np.zeros(0, dtype=np.int64)
    neurons = neurons[neurons >= 0]
    if isinstance(model.head, DecisionLayer) and len(neurons):
        total = model.head.conv.weight.shape[0]
        counts = np.bincount(neurons, minlength=total)
        out.update(neurons_used=float((counts > 0).mean()), top_neuron_share=float(counts.max() / len(neurons)))
    return out
