"""The R-STDP epoch's throughput, exact against summed, from a trained run's states.

`bench/run.py` times its decision rows inside the first epoch (3,000 warm-up images), where the
exact mode's guesses fail most often. This script times what a recipe spends most of its
R-STDP stage on: one pass of the decision stage over IMAGES training images of a finished
mozafari2018 run, through the trainer's own epoch loop, from two states:

- `fresh`: a freshly initialised decision layer (N(0.8, 0.05) weights, base rates) reading the
  run's trained conv layers: the first epoch;
- `trained`: the run's kept decision layer and rates: a late epoch.

Each state is timed in exact mode and in summed mode (`--batch-update sum`) from the same
weights, in one process, alternately, `--repeats` times each (the best pass is kept). The conv2
maps the decision reads are computed once (untimed) and kept in
`bench/rstdp-data/epoch-inputs-CHECKPOINT-IMAGES.npz` (git-ignored; named by the checkpoint's hash). Results go to
`bench/rstdp_epoch.json`.

    python bench/rstdp_epoch.py --run runs/RUN [--images 20000] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished mozafari2018 run folder (its checkpoints/best.ckpt)")
    parser.add_argument("--images", type=int, default=20000, help="training images per timed pass")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed passes per state and mode, alternated; the best is kept (timings vary +-30 %%)")
    parser.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "rstdp_epoch.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import models
    from bench import run as bench_run
    from checkpoints import load_checkpoint
    from network_trainer import run_epoch

    from utils import UserError
    try:
        payload = load_checkpoint(os.path.join(args.run, "checkpoints", "best.ckpt"))
    except UserError as error:
        raise SystemExit(f"error: {error}") from None
    if payload["model"] != "mozafari2018":
        raise SystemExit(f"error: {args.run} is a {payload['model']} run; this script times mozafari2018's decision")
    torch.manual_seed(0)
    model = models.create_model("mozafari2018", settings=payload.get("overrides") or {})
    fresh = copy.deepcopy(model.state_dict())
    model.load_state_dict(payload["state_dict"])
    trained = copy.deepcopy(model.state_dict())
    stage = model.stages[-1]

    with open(os.path.join(args.run, "checkpoints", "best.ckpt"), "rb") as handle:
        digest = handle.read(40)[8:].hex()[:12]       # the checkpoint's own sha256 (its header)
    cached = os.path.join(ROOT, "bench", "rstdp-data", f"epoch-inputs-{digest}-{args.images}.npz")
    if not os.path.exists(cached):
        times, labels, _ = bench_run._encoded(argparse.Namespace(data_root=args.data_root), args.images, model)
        node = bench_run._node(model, times, stage.input_node, stage.needs)
        np.savez(cached, node=node, labels=labels)
    data = np.load(cached)
    node, labels = data["node"], data["labels"]

    prefix = stage_prefix(model, stage)
    conv_layers = {k: v for k, v in trained.items() if not k.startswith(prefix)}
    results = {"run": args.run, "images": len(labels), "batch_size": args.batch_size, "threads": args.threads,
               "repeats": args.repeats}
    for state_name, state in (("fresh", fresh), ("trained", trained)):
        best = {"exact": float("inf"), "summed": float("inf")}
        for _ in range(args.repeats):          # alternated, each from the same state: the best
            for mode in best:
                model.load_state_dict({**state, **conv_layers})
                stage.configure(exact=mode == "exact", seed=0)
                began = time.perf_counter()
                run_epoch(stage, node, labels, np.arange(len(labels)), args.batch_size)
                best[mode] = min(best[mode], time.perf_counter() - began)
        for mode, seconds in best.items():
            results[f"{state_name}_{mode}_img_per_s"] = len(labels) / seconds
            print(f"{state_name:8s} {mode:7s} {len(labels) / seconds:8.0f} img/s", flush=True)
        results[f"{state_name}_exact_vs_summed"] = (results[f"{state_name}_exact_img_per_s"]
                                                    / results[f"{state_name}_summed_img_per_s"])
        print(f"{state_name:8s} exact / summed {results[f'{state_name}_exact_vs_summed']:.2f}")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1)
    return results


def stage_prefix(model, stage) -> str:
    """The state-dict prefix of the stage's layer (everything else is the conv layers)."""
    for name, module in model.named_modules():
        if module is stage.head:
            return name + "."
    raise SystemExit("error: the decision stage's layer is not in the model")


if __name__ == "__main__":
    main()
