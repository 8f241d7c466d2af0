"""Export a trained conv model's inference network to NIR (the Neuromorphic Intermediate
Representation), exactly.

    python export.py RUN_DIR_OR_CHECKPOINT [--out FILE]      # needs: pip install -r requirements-nir.txt

Time semantics. One NIR time step is one of this tool's time steps (`frontend.time_steps` = T of
them). The graph's input is the front end's output as a cumulative spike wave: at step t the
input map [C, H, W] holds 1 where the front end's neuron has spiked at or before t, else 0 (the
DoG filtering and latency coding stay outside the graph: `s1c1.encode` computes them). This
tool's neurons do not leak and do not reset, and their input wave is cumulative, so a layer's
potential at step t is the convolution of its input wave at step t: no state is needed, and the
graph is stateless. Each step's output is therefore exact on its own; the decision is read at
the last step (t = T - 1), where every wave is complete.

Node types, per hidden layer (`HiddenLayer`):

- `Conv2d` (the layer's weights, zero padding `pad`, bias 0) -> `Threshold` (theta = the layer's
  threshold, calibrated or not: a neuron fires where its potential exceeds it, H(v - theta) with
  v > theta; this tool compares with ">"): the layer's cumulative spike wave;
- pooling, where `pool` > 1: spike max-pooling of a binary wave is "any spike in the window",
  i.e. `SumPool2d` (kernel `pool`, stride `pool_stride`) -> `Threshold` (theta = 0); pooling
  padding is a 1x1 identity `Conv2d` with that zero padding in front of it (so the pooling node
  itself never pads).

The decision: the R-STDP decision layer is `Conv2d` (padding `pad`; the kernels it predicts
with, averaged over windows with `decision.averaged`) -> `Output`; its class is
read out as this tool (and SpykeTorch) does (`read_out`): at the last step each positive
potential v scores v + T * max(v) in float32, the largest score over [features, rows, cols]
(the first in that order on ties) decides class `feature // neurons_per_class`, and no
positive potential means silence. (The added term can round nearly equal potentials into a
tie; reading the plain argmax instead changes a few decisions of a poorly trained network.) A linear readout (`--readout svm`
or `logistic`) is `Flatten` -> `Affine` (coef, intercept) -> `Output`, class = the argmax, and a
sample whose readout input has no spike is silent. The graph's metadata repeats these rules
(`readout`, `neurons_per_class`, `time_steps`, `classes`).

A skip path concatenated with a layer's spikes (`Residual` with `merge=concat`: resnet2024,
deeper2024) is kept as separate sources: pooling commutes with concatenation, so each source is
pooled on its own, and the next convolution (or readout) is one `Conv2d` (`Affine`) per source,
`NAME_from_SOURCE`, holding its slice of the input channels, all feeding one node, which sums
its inputs as NIR defines: the next layer's `Threshold`, or for a decision layer (a linear
readout) an identity 1x1 `Conv2d` (`Affine`) named after it.

Exported: every chain of hidden conv layers, with skip paths concatenated or dropped, ending in
an R-STDP decision layer or a linear readout (mozafari2018, deep2024, deeper2024, resnet2024,
deepr2024 and deepr2024_greedy, kheradpisheh2018, and any
of them with `--readout`). Refused in one line: parallel branches (inception2024), a skip path
merged by OR (resnet2024's `merge=or`), voting heads (majority2024) and the non-convolutional
systems, which this export does not cover.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from utils import UserError, eprint

HELP = "python export.py RUN_DIR_OR_CHECKPOINT [--out FILE] [--input-shape C,H,W]"


def _nir():
    try:
        import nir
    except ImportError:
        raise UserError("NIR export needs the nir package: pip install -r requirements-nir.txt") from None
    return nir


def to_nir(model, input_shape: tuple, classes: list | None = None, name: str = ""):
    """The model's inference network as a `nir.NIRGraph` whose input is node 0 (`input_shape`
    = the front end's [C, H, W]); see the module docstring for the semantics."""
    from models.composite import Residual
    from models.decision import DecisionLayer
    from models.layers import HiddenLayer, conv_size
    from models.readout import LinearReadout
    nir = _nir()
    if not hasattr(model, "blocks") or len(model.blocks) == 0:
        raise UserError(f"{name or type(model).__name__}: NIR export covers the conv STDP / R-STDP models only")
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges = []
    # the maps reaching the next layer: (node, [C, H, W]) sources concatenated on channels, in
    # order (one, except after a skip path's concatenation)
    parts = [("input", tuple(input_shape))]

    def add(key, node, *after):
        nodes[key] = node
        edges.extend((source, key) for source in after)
        return key

    def zeros(count):
        return np.zeros(count, np.float32)

    def convolve(key, weight, pad, parts) -> list:
        """Conv2d of the concatenated parts: one node per part with its slice of the weight's
        input channels (named `key` when there is one part); a node fed by all of them sums
        them (NIR adds a node's inputs). Returns the conv nodes."""
        keys, offset = [], 0
        for source, shape in parts:
            piece = weight[:, offset:offset + shape[0]]
            offset += shape[0]
            keys.append(add(key if len(parts) == 1 else f"{key}_from_{source}", nir.Conv2d(
                input_shape=shape[1:], weight=np.ascontiguousarray(piece), stride=1, padding=pad, dilation=1,
                groups=1, bias=zeros(len(weight))), source))
        return keys

    def spatial(parts) -> tuple:
        return (sum(shape[0] for _, shape in parts),) + tuple(parts[0][1][1:])

    def pooled(key, after, shape, pool, stride, padding) -> tuple:
        """Spike max-pooling of a binary wave [C, H, W]: "any spike in the window"."""
        if padding:
            # (a full C x C identity: NIR's shape inference does not read grouped weights)
            identity = np.eye(shape[0], dtype=np.float32)[:, :, None, None]
            after = add(f"{key}_pad", nir.Conv2d(input_shape=shape[1:], weight=identity, stride=1, padding=padding,
                                                 dilation=1, groups=1, bias=zeros(shape[0])), after)
        after = add(key, nir.SumPool2d(kernel_size=np.array([pool, pool]), stride=np.array([stride, stride]),
                                       padding=np.array([0, 0])), after)
        out = (shape[0],) + tuple((s + 2 * padding - pool) // stride + 1 for s in shape[1:])
        return add(f"{key}_fire", nir.Threshold(threshold=np.zeros(out, np.float32)), after), out

    def hidden(layer: HiddenLayer, parts: list) -> list:
        spec, shape = layer.spec, spatial(parts)
        weight = layer.conv.weight.detach().cpu().numpy().astype(np.float32)
        convs = convolve(layer.name, weight, spec.pad, parts)
        conv_shape = (spec.out_channels,) + tuple(conv_size(s, spec.pad, spec.kernel_size) for s in shape[1:])
        key = add(f"{layer.name}_fire", nir.Threshold(threshold=np.full(conv_shape, layer.threshold, np.float32)),
                  *convs)
        if spec.pool > 1:
            key, conv_shape = pooled(f"{layer.name}_pool", key, conv_shape, spec.pool, spec.pool_stride or spec.pool,
                                     spec.pool_padding)
        return [(key, conv_shape)]

    def refuse(block):
        raise UserError(f"{name}: its block {type(block).__name__} ({_describe(block)}) has no exact NIR "
                        f"export here; exported are chains of conv layers (with skip paths concatenated or "
                        f"dropped) ending in a decision layer or a linear readout")

    for block in model.blocks[:-1]:
        if isinstance(block, HiddenLayer):
            parts = hidden(block, parts)
        elif isinstance(block, Residual) and block.merge in ("concat", "none"):
            # pooling commutes with concatenation: each part is pooled on its own
            merged = hidden(block.main, parts) + (parts if block.merge == "concat" else [])
            if block.pool > 1:
                stem = block.main.name
                names = [f"{stem}_pool"] + [f"{stem}_skip_pool{i or ''}" for i in range(len(merged) - 1)]
                merged = [pooled(name, key, shape, block.pool, block.pool, 0)
                          for name, (key, shape) in zip(names, merged)]
            parts = merged
        else:
            refuse(block)
    head = model.blocks[-1]
    metadata = {"model": name, "time_steps": int(model.time_steps), "classes": list(classes or []),
                "input": "cumulative first-spike wave of the front end's maps: 1 where spiked at or before the step",
                "step": "one NIR step = one time step; the graph is stateless; read the decision at the last step"}
    if isinstance(head, DecisionLayer):
        weight = head.evaluation_weight().detach().cpu().numpy().astype(np.float32)
        out_shape = head.output_shape(spatial(parts))
        rows, cols = head.padding(spatial(parts))
        convs = convolve(head.name, weight, rows if rows == cols else np.array([rows, cols]), parts)
        last = convs[0]
        if len(convs) > 1:          # the parts' potentials summed by an identity 1x1 conv
            last = add(head.name, nir.Conv2d(input_shape=out_shape[1:], weight=np.eye(
                len(weight), dtype=np.float32)[:, :, None, None], stride=1, padding=0, dilation=1, groups=1,
                bias=zeros(len(weight))), *convs)
        metadata.update(readout="at the last step, the positive outputs v score v + time_steps * max(v) in "
                                "float32; the largest score over [feature, row, col] (the first on ties) decides "
                                "class = feature // neurons_per_class; silent when no output is > 0",
                        neurons_per_class=int(head.spec.neurons_per_class))
    elif isinstance(head, LinearReadout):
        if head.values != "spiked":
            raise UserError(f"{name}: its readout reads spike latencies, which a NIR graph of spiking "
                            f"layers does not carry; exported are readouts of whether a neuron spiked")
        coef = head.coef.detach().cpu().numpy().astype(np.float32)
        intercept = head.intercept.detach().cpu().numpy().astype(np.float32)
        if coef.shape[1] != int(np.prod(spatial(parts))):
            raise UserError(f"{name}: the linear readout is not fitted (coef {coef.shape}); train it first")
        # flattening [C, H, W] keeps channels outermost: each part owns a block of coef's columns
        affines, offset = [], 0
        for i, (source, shape) in enumerate(parts):
            size = int(np.prod(shape))
            suffix = "" if len(parts) == 1 else f"_from_{source}"
            flat = add(f"flatten{suffix}", nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0), source)
            affines.append(add(f"readout_{head.kind}{suffix}", nir.Affine(
                weight=np.ascontiguousarray(coef[:, offset:offset + size]),
                bias=intercept if i == 0 else zeros(len(intercept))), flat))
            offset += size
        last = affines[0]
        if len(affines) > 1:        # summed by an identity
            last = add(f"readout_{head.kind}", nir.Affine(weight=np.eye(len(coef), dtype=np.float32),
                                                          bias=zeros(len(coef))), *affines)
        out_shape = (coef.shape[0],)
        metadata.update(readout="argmax of the last step's output (first on ties); silent when the "
                                "flattened readout input has no spike", neurons_per_class=1)
    else:
        raise UserError(f"{name}: its head {type(head).__name__} ({_describe(head)}) has no exact NIR export "
                        f"here; exported are a decision layer or a linear readout")
    add("output", nir.Output(output_type={"output": np.array(out_shape)}), last)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _describe(block) -> str:
    from models.heads import MajorityHeads
    from models.composite import Branches, Residual
    if isinstance(block, Branches):
        return "parallel branches concatenated"
    if isinstance(block, Residual):
        return f"a skip path merged with a conv layer by {block.merge}"
    if isinstance(block, MajorityHeads):
        return "three decision heads voting"
    if type(block).__name__ == "FirstSpikeDecision":
        return "a decision by the earliest spike, which a stateless graph cannot read"
    return "not a conv layer"


def read_out(output, silent, graph):
    """Classes [B] from the graph's last-step output by its metadata's readout rule.

    A decision layer's output [B, F, H, W] is read as this tool (and SpykeTorch) reads it: the
    positive potentials v score v + T * max(v) in float32 (zero elsewhere), the largest score
    over [F, H, W] wins (the first on ties; the added term can round nearly equal potentials
    into a tie), class = feature // neurons_per_class, and no positive potential is silence. A
    linear readout's output [B, classes] is read by its argmax; `silent` [B] bool marks its
    samples without an input spike (-1)."""
    import torch
    flat = output.flatten(1)
    if output.dim() == 4:
        spiking = flat > 0
        truncated = torch.where(spiking, flat, torch.zeros_like(flat))
        top = truncated.max(dim=1).values.mul_(graph.metadata["time_steps"]).view(-1, 1)
        scores = torch.where(spiking, truncated + top, torch.zeros_like(flat))
        feature = scores.argmax(dim=1) // (output.shape[2] * output.shape[3])
        picked = torch.div(feature, graph.metadata["neurons_per_class"], rounding_mode="floor")
        silent = silent | ~spiking.any(dim=1)
    else:
        picked = flat.argmax(dim=1)
    return torch.where(silent, -1, picked)


def load_trained(path: str):
    """(model, payload) of a finished run folder (its final checkpoint) or a checkpoint file."""
    from checkpoints import load_checkpoint
    from pipeline import restore_model
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "metrics.json")):
            raise UserError(f"{path} is not a finished run (no metrics.json); give a checkpoint file instead")
        path = os.path.join(path, "checkpoints", "last.ckpt")
    payload = load_checkpoint(path)
    return restore_model(payload), payload


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage=HELP)
    parser.add_argument("source", help="a finished run folder or a checkpoint file")
    parser.add_argument("--out", help="the .nir file (default: RUN_DIR/model.nir or CHECKPOINT.nir)")
    parser.add_argument("--input-shape", metavar="C,H,W",
                        help="the front end's output shape, for checkpoints written before it was recorded")
    args = parser.parse_args(argv)
    try:
        model, payload = load_trained(args.source)
        name = payload.get("model")
        dataset_name = payload.get("dataset")
        shape = payload.get("input_shape")
        if args.input_shape:
            try:
                shape = [int(v) for v in args.input_shape.split(",")]
            except ValueError:
                shape = []
            if len(shape) != 3 or min(shape) < 1:
                raise UserError(f"--input-shape must be C,H,W (three whole numbers >= 1), got {args.input_shape!r}")
        if shape is None:
            raise UserError(f"{args.source} does not record its input shape (a checkpoint from before NIR "
                            f"export): give it as --input-shape C,H,W (mozafari2018 on MNIST: 6,28,28)")
        graph = to_nir(model, tuple(shape), payload.get("classes"), name)
        out = args.out or (os.path.join(args.source, "model.nir") if os.path.isdir(args.source)
                           else os.path.splitext(args.source)[0] + ".nir")
        _nir().write(out, graph)
        print(f"{name} ({dataset_name}) -> {out}: {len(graph.nodes)} nodes, time steps {model.time_steps}")
        return out
    except UserError as error:
        eprint(f"error: {error}")
        sys.exit(2)


if __name__ == "__main__":
    main()
