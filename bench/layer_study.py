"""How much class information does one STDP layer keep, under other settings, on the layers
a finished run trained below it?

Takes a finished run of a conv model (its `best.ckpt`), keeps the layers below `--layer` as that
run trained them, optionally retrains `--layer` from its seeded start on `--train-images`
training images under `--set` settings (exact STDP, the model's own stage), and reports the
layer's (pooled) activity and a linear probe of it (`diagnostics.fit_probe`: logistic
regression fitted on `--probe-images` training images, scored on as many others) at its own
threshold and at thresholds that let 10-30 % of its outputs spike. Only training images are
read. The layer below is probed on the same images, for reference.

    python bench/layer_study.py RUN_DIR --layer conv4 --data-root ../shared/data
    python bench/layer_study.py RUN_DIR --layer conv4 --train-images 20000 --set conv4.threshold=80
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run folder")
    parser.add_argument("--layer", required=True, help="the hidden layer to study (e.g. conv4)")
    parser.add_argument("--train-images", type=int, default=0,
                        help="retrain the layer on this many training images (0: keep the run's)")
    parser.add_argument("--probe-images", type=int, default=4000)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--cache-dir", default="cache")
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    import torch.nn.functional as F

    import data
    from checkpoints import load_checkpoint, take_modules
    from diagnostics import fit_probe
    from network_trainer import run_epoch
    from pipeline import build_recorded, prepare_splits
    from run_config import RunConfig, Runtime, from_json, parse_settings
    from spiking import times as st
    from utils import derived_seed, seed_everything

    with open(os.path.join(args.run, "config.json")) as handle:
        saved, _ = from_json(json.load(handle))
    payload = load_checkpoint(os.path.join(args.run, "checkpoints", "best.ckpt"))
    seed_everything(saved.seed)
    dataset = data.load_dataset(saved.dataset, args.data_root, download=False)
    # the run's model as it was trained (whatever today's defaults), then --set
    model = build_recorded(saved.model, dataset.num_classes, payload, payload.get("overrides") or {}, None,
                           more=parse_settings(args.settings))
    stages = {stage.name: stage for stage in model.stages}
    if args.layer not in stages or stages[args.layer].kind != "stdp":
        raise SystemExit(f"{args.layer} is not an STDP layer of {saved.model}")
    stage = stages[args.layer]
    layer, node = stage.layer, stage.input_node
    below = [name for name, s in stages.items() if s.kind == "stdp" and s.input_node < node]
    take_modules(payload, model, [module for name in below + ([] if args.train_images else [args.layer])
                                 for module in stages[name].trained_modules()])
    model.eval()
    config = RunConfig(model=saved.model, dataset=saved.dataset, seed=saved.seed, val_size=saved.val_size)
    splits, _ = prepare_splits(config, Runtime(data_root=args.data_root, cache_dir=args.cache_dir,
                                                no_download=True, progress=False), dataset, model.frontend, print)
    train = splits["train"]

    def node_of(times, kind):
        out = []
        with torch.no_grad():
            for begin in range(0, len(times), 256):
                x = torch.as_tensor(np.asarray(times[begin:begin + 256]))
                if kind == "final":
                    x = st.final_map(x, model.time_steps)
                for block in model.blocks[:node]:
                    x = block.forward_final(x) if kind == "final" else block.forward_times(x)
                out.append(x)
        return torch.cat(out)

    if args.train_images:
        count = min(args.train_images, len(train))
        inputs = node_of(train.times[:count], "times")
        stage.configure(True, saved.seed)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(
            derived_seed(saved.seed, "order", stage.name, 0))).numpy()
        run_epoch(stage, inputs, train.labels[:count], order, 32)
        stage.end_epoch()
    probe = args.probe_images
    chosen = np.arange(len(train) - 2 * probe, len(train))      # the split's last images
    finals = node_of(train.times[chosen], "final")
    labels = train.labels[chosen]

    def probe_of(maps):
        flat = maps.reshape(len(maps), -1).float().numpy()
        return fit_probe(flat[:probe], labels[:probe], flat[probe:], labels[probe:], saved.seed)

    rows = [{"what": f"input ({below[-1] if below else 'front end'})", "active": float(finals.mean()),
             "probe": probe_of(finals)}]
    potentials = layer.final_potentials(finals)
    if layer.spec.pool > 1:
        potentials = F.max_pool2d(potentials, layer.spec.pool, layer.spec.pool_stride or layer.spec.pool,
                                  layer.spec.pool_padding)
    sample = potentials.flatten()[::7].double()
    for target in (None, 0.10, 0.15, 0.20, 0.30):
        threshold = layer.threshold if target is None else float(torch.quantile(sample, 1 - target))
        spikes = (potentials > threshold).float()
        rows.append({"what": f"{args.layer} at threshold {threshold:.1f}" + (" (its own)" if target is None else ""),
                     "active": float(spikes.mean()), "probe": probe_of(spikes)})
    for row in rows:
        print(f"{row['what']}: active {row['active']:.3f}, probe {row['probe']:.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
