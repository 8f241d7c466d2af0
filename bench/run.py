"""Speed and memory benchmark: `python bench/run.py` prints a table and writes bench/results.json.

Every measurement runs in its own subprocess (so its peak RSS is its own) on real MNIST images,
and every speed-up is a ratio of two numbers measured in the same run:

- front-end encoding, inference of every model and training of every mozafari2018 stage
  (batched exact, the default; batched summed, `--batch-update sum`; batch size 1), against
  the reference mode
  (`bench/reference.py`: one image at a time, re-encoded, full waves, the seed's way);
- achieved GFLOP/s of inference against this machine's measured matmul peak;
- with `--full-recipe`, time-to-accuracy of the full mozafari2018 MNIST recipe (train.py).

The mozafari2018 measurements (encoding, training, the reference) use the paper's decision layer
(k5 pad 2, 20 neurons per class) and SpykeTorch's R-STDP (`decision.teacher=0`, predicting with
the last kernels: `decision.averaged=false`), the network and algorithm the reference computes;
`--set KEY=VALUE` (as train.py's) changes the model, e.g. `--set decision.kernel_size=4 --set
decision.pad=0 --set decision.neurons_per_class=60 --set decision.teacher=0.5 --set
decision.averaged=true` for the default recipe's decision layer.

Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ---------------------------------------------------------------- measurements (in subprocesses)

def _mnist(args, count):
    import data
    dataset = data.load_dataset("mnist", args.data_root, download=False)
    return dataset.train_images[:count], dataset.train_labels[:count]


def _encoded(args, count, model):
    """Front-end spike times of the first `count` MNIST training images (through the cache)."""
    import numpy as np
    from encoding_cache import EncodingCache
    from s1c1 import encode
    import data
    dataset = data.load_dataset("mnist", args.data_root, download=False)
    cache = EncodingCache(os.path.join(ROOT, "cache"))
    array = cache.load("mnist-train", model.frontend, dataset.source_id("train"), len(dataset.train_images))
    if array is None:
        array = encode(dataset.train_images[:count], model.frontend)
    return np.array(array[:count]), dataset.train_labels[:count], dataset.train_images[:count]


def _timed(function, count, repeats: int = 1):
    """Wall time of `function` over `count` images; the best of `repeats` runs (only for
    functions without side effects: this machine's timings vary by +-10 % run to run)."""
    seconds = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        seconds = min(seconds, time.perf_counter() - began)
    return {"images": count, "seconds": seconds, "img_per_s": count / seconds, "repeats": repeats}


def _train_stage(stage, inputs, labels, batch, exact=True):
    """One epoch of `stage` in the natural order, through the trainer's own epoch loop."""
    import numpy as np
    from network_trainer import run_epoch
    stage.configure(exact=exact, seed=0)
    run_epoch(stage, inputs, labels, np.arange(len(labels)), batch)
    stage.end_epoch(lambda: (inputs[:0], labels[:0]))


def _node(model, times, index, kind):
    """Node `index` of front-end spike times, in batches of 128 (uint8 numpy)."""
    import torch
    parts = []
    for begin in range(0, len(times), 128):
        x = torch.from_numpy(times[begin:begin + 128])
        if kind == "times":
            parts.append(model.forward_times(x, 0, index))
        else:
            parts.append(model.forward_final((x < model.time_steps).float(), 0, index))
    return torch.cat(parts).to(torch.uint8).numpy()


# the paper's decision layer and SpykeTorch's R-STDP, as bench/reference.py computes them
BENCH_SETTINGS = {"decision.teacher": 0, "decision.kernel_size": 5, "decision.pad": 2,
                  "decision.neurons_per_class": 20, "decision.averaged": False}


def _mozafari(args):
    """mozafari2018 with the bench's settings (BENCH_SETTINGS, then `--set`)."""
    import models
    from run_config import parse_settings
    return models.create_model("mozafari2018", settings={**BENCH_SETTINGS, **parse_settings(args.set)})


def _mozafari_set_args(args) -> list:
    """The same settings as train.py arguments (`--set KEY=VALUE` each, BENCH_SETTINGS first)."""
    pairs = [f"{key}={value}" for key, value in BENCH_SETTINGS.items()] + list(args.set)
    return [part for pair in pairs for part in ("--set", pair)]


def _prepared_model(args, count, stage_index):
    """mozafari2018 with the stages before `stage_index` trained and stage `stage_index`
    warmed up (untimed) on `--warmup` images, so the timed images see an epoch's steady state
    (learning rates at their maximum, features formed). Returns the model and the next
    `count` images (spike times, labels, raw pixels)."""
    import torch
    torch.manual_seed(0)
    model = _mozafari(args)
    total = args.warmup + count
    times, labels, raw = _encoded(args, total, model)
    for stage in model.stages[:stage_index + 1]:
        node = _node(model, times[:args.warmup], stage.input_node, stage.needs)
        _train_stage(stage, node, labels[:args.warmup], 32)
    return model, times[args.warmup:], labels[args.warmup:], raw[args.warmup:]


def _takes_images(name) -> bool:
    """Whether a model's front end encodes 28 x 28 images (not Iris's feature vectors)."""
    import models
    try:
        models.create_model(name).frontend.output_shape((28, 28))
    except (ValueError, TypeError, IndexError):
        return False
    return True


def measure(name, args) -> dict:
    import torch
    if name == "matmul":
        best = 0.0
        for size in (2048, 4096):
            a, b = torch.randn(size, size), torch.randn(size, size)
            a @ b
            for _ in range(3):
                began = time.perf_counter()
                a @ b
                best = max(best, 2 * size ** 3 / (time.perf_counter() - began) / 1e9)
        return {"gflops": best}
    if name == "encode":
        from s1c1 import encode
        images, _ = _mnist(args, args.images)
        model = _mozafari(args)
        return _timed(lambda: encode(images, model.frontend, batch_size=500), len(images), repeats=2)
    if name == "eval_only":
        return eval_only(args)
    if name.startswith("infer_ref:"):
        from bench.reference import ReferenceMozafari
        model, _, _, raw = _prepared_model(args, args.reference_images, -1)
        reference = ReferenceMozafari(model)
        batch = torch.from_numpy(raw).float().unsqueeze(1) / 255
        return _timed(lambda: [reference.decide(batch[i:i + 1]) for i in range(len(batch))], len(batch))
    if name.startswith("infer:"):
        import models
        torch.manual_seed(0)
        name = name.split(":", 1)[1]
        # mozafari2018 as the reference computes it (its ratios compare the same network)
        model = _mozafari(args) if name == "mozafari2018" else models.create_model(name)
        times, _, _ = _encoded(args, args.images, model)
        x = torch.from_numpy(times)

        def run():
            for begin in range(0, len(x), 128):
                model.predict(x[begin:begin + 128])
        run()                                             # warm-up
        run_result = _timed(run, len(x), repeats=3)
        macs = model.inference_macs(tuple(times.shape[1:]))
        run_result.update(macs_per_image=macs, gflops=2 * macs * run_result["img_per_s"] / 1e9)
        return run_result
    stage_index = {"conv1": 0, "conv2": 1, "decision": 2}
    mode, stage_name = name.split(":")
    index = stage_index[stage_name]
    count = {"train": args.images, "train_sum": args.images, "train_b1": args.exact_images,
             "train_ref": args.reference_images}[mode]
    model, times, labels, raw = _prepared_model(args, count, index)
    stage = model.stages[index]
    if mode == "train_ref":
        from bench.reference import ReferenceMozafari
        reference = ReferenceMozafari(model)
        batch = torch.from_numpy(raw).float().unsqueeze(1) / 255
        if index < 2:
            return _timed(lambda: [reference.learn_hidden(batch[i:i + 1], index) for i in range(count)], count)
        return _timed(lambda: [reference.learn_decision(batch[i:i + 1], int(labels[i])) for i in range(count)],
                      count)
    node = _node(model, times, stage.input_node, stage.needs)
    batch = 1 if mode == "train_b1" else args.batch_size
    return _timed(lambda: _train_stage(stage, node, labels, batch, exact=mode != "train_sum"), count)


def full_recipe(args) -> dict:
    """The whole mozafari2018 MNIST recipe through train.py, timed from raw images (no cache)."""
    import tempfile
    out = tempfile.mkdtemp(prefix="bench-recipe-")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--dataset", "mnist",
               "--data-root", args.data_root, "--out-dir", out, "--run-name", "recipe",
               "--cache-dir", os.path.join(out, "cache"), "--batch-size", str(args.batch_size),
               "--no-progress"]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - began
    with open(os.path.join(out, "recipe", "metrics.json")) as handle:
        metrics = json.load(handle)
    return {"seconds": seconds, "test_accuracy": metrics["accuracy"], "run_dir": os.path.join(out, "recipe"),
            "selected_epochs": metrics.get("selected_epochs"), "stage_seconds": metrics.get("stage_seconds"),
            "command": " ".join(command[1:])}


def eval_only(args) -> dict:
    """`train.py --eval-only` of a mozafari2018 checkpoint over the 10,000 MNIST test images,
    timed end to end as a user runs it: process start, imports, loading the data and the
    cached encoding, evaluation and the output files. The checkpoint comes from a short
    training run (untimed; its accuracy does not matter here)."""
    import tempfile
    out = tempfile.mkdtemp(prefix="bench-eval-")
    common = ["--data-root", args.data_root, "--no-download", "--out-dir", out,
              "--cache-dir", os.path.join(ROOT, "cache"), "--no-progress", "--threads", str(args.threads)]
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset", "mnist", "--ratio", "0.02",
                    "--epochs", "1", "1", "1", "--run-name", "trained", *_mozafari_set_args(args), *common],
                   check=True, cwd=ROOT, capture_output=True)
    checkpoint = os.path.join(out, "trained", "checkpoints", "best.ckpt")

    def evaluate(run_name):
        subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--eval-only", checkpoint,
                        "--run-name", run_name, *common], check=True, cwd=ROOT, capture_output=True)

    evaluate("warm-up")                 # the file cache, as on a machine that just trained
    seconds = float("inf")
    for attempt in range(2):
        began = time.perf_counter()
        evaluate(f"eval{attempt}")
        seconds = min(seconds, time.perf_counter() - began)
    return {"images": 10000, "seconds": seconds, "img_per_s": 10000 / seconds, "repeats": 2,
            "command": "python train.py --eval-only CHECKPOINT (MNIST test set, cached encoding)"}


# ---------------------------------------------------------------- orchestration

def _subprocess(name, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--measure", name, "--data-root", args.data_root,
               "--images", str(args.images), "--warmup", str(args.warmup), "--exact-images", str(args.exact_images),
               "--reference-images", str(args.reference_images), "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), *(f"--set={item}" for item in args.set)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--images", type=int, default=6000, help="images per batched measurement")
    parser.add_argument("--warmup", type=int, default=3000,
                        help="untimed training images before a stage is timed (steady state)")
    parser.add_argument("--exact-images", type=int, default=1000, help="images for batch-size-1 runs")
    parser.add_argument("--only", nargs="+", help="measure only these names (e.g. train:decision)")
    parser.add_argument("--reference-images", type=int, default=200, help="images for reference runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--full-recipe", action="store_true", help="also time the full MNIST recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a mozafari2018 setting, as train.py's (over BENCH_SETTINGS: the paper's decision, teacher 0)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.measure:
        result = measure(args.measure, args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return result
    import models
    from utils import UserError
    try:
        _mozafari(args)        # a bad --set fails here, in one line, before any subprocess
    except (UserError, ValueError, TypeError) as error:
        parser.error(str(error))
    names = ["matmul", "encode", "infer_ref:mozafari2018", "eval_only"] + [
        f"infer:{m}" for m in models.list_models() if _takes_images(m)]
    for stage in ("conv1", "conv2", "decision"):
        names += [f"train:{stage}", f"train_sum:{stage}", f"train_b1:{stage}", f"train_ref:{stage}"]
    if args.only:
        names = [n for n in names if n in args.only or n.split(":")[0] in ("matmul",)]
    results = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__},
               "settings": {k: v for k, v in vars(args).items() if k != "measure"}, "measurements": {}}
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results["measurements"][name] = _subprocess(name, args)
    if args.full_recipe:
        print("running the full mozafari2018 MNIST recipe ...", file=sys.stderr, flush=True)
        results["full_recipe"] = full_recipe(args)
    results["ratios"] = ratios(results["measurements"])
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print(table(results))
    return results


def ratios(m) -> dict:
    out = {}
    if "infer:mozafari2018" in m and "infer_ref:mozafari2018" in m:
        out["inference_vs_reference"] = m["infer:mozafari2018"]["img_per_s"] / m["infer_ref:mozafari2018"]["img_per_s"]
        out["inference_fraction_of_matmul_peak"] = m["infer:mozafari2018"]["gflops"] / m["matmul"]["gflops"]
    if "eval_only" in m and "infer_ref:mozafari2018" in m:
        out["eval_only_vs_reference_inference"] = m["eval_only"]["img_per_s"] / m["infer_ref:mozafari2018"]["img_per_s"]
    if "eval_only" in m and "infer:mozafari2018" in m:
        out["eval_only_fraction_of_kernel"] = m["eval_only"]["img_per_s"] / m["infer:mozafari2018"]["img_per_s"]
    for stage in ("conv1", "conv2", "decision"):
        if f"train:{stage}" not in m:
            continue
        speed = m[f"train:{stage}"]["img_per_s"]
        for other, label in (("train_sum", "summed"), ("train_b1", "batch1"), ("train_ref", "reference")):
            if f"{other}:{stage}" in m:
                out[f"{stage}_exact_vs_{label}"] = speed / m[f"{other}:{stage}"]["img_per_s"]
    return out


def table(results) -> str:
    m = results["measurements"]
    rows = [("measurement", "images/s", "peak RSS MB", "note")]
    rows.append(("matmul peak", "", f"{m['matmul']['peak_rss_mb']:.0f}", f"{m['matmul']['gflops']:.0f} GFLOP/s"))
    for name, value in m.items():
        if name == "matmul":
            continue
        note = f"{value['gflops']:.0f} GFLOP/s" if "gflops" in value else ""
        rows.append((name, f"{value['img_per_s']:.0f}", f"{value['peak_rss_mb']:.0f}", note))
    lines = [" | ".join(f"{c:<28}" if i == 0 else f"{c:>12}" for i, c in enumerate(r)) for r in rows]
    lines.append("")
    for key, value in results["ratios"].items():
        lines.append(f"{key}: {value:.2f}")
    if "full_recipe" in results:
        recipe = results["full_recipe"]
        lines.append(f"full recipe: {recipe['seconds']:.0f} s, test accuracy {recipe['test_accuracy']:.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
