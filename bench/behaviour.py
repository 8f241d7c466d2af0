"""Behaviour fingerprint of the shell: seeded runs whose metrics and final weights must not
change when the trainer, the CLI or the zoo's structure is refactored.

    python bench/behaviour.py record     # writes bench/behaviour.json (before a refactoring)
    python bench/behaviour.py check      # reruns and compares (after it); exit 1 on a difference

Every run is a `train.py` command in its own process (one thread, so the float32 results do not
depend on the machine's load). A fingerprint is the run's `metrics.json` without its timings and
the SHA-256 of every tensor of its final checkpoint: equal fingerprints mean bit-identical
weights and identical decisions (metrics' floats are compared to 1e-12 relative: the ROC AUC's
summation order may move their last bits). The runs cover several models (STDP + R-STDP, linear readouts,
BPTT and online learners), digits and an MNIST subset, a run killed mid-epoch and resumed, and a
two-process data-parallel run. Bit-equality holds on one machine and torch build; fingerprints
recorded elsewhere are compared on metrics only (`--metrics-only`).

Not part of the test suite (about four minutes on two cores).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FILE = os.path.join(ROOT, "bench", "behaviour.json")
# timings depend on the machine's load; the layer diagnostics are read off the final weights
# (hashed below) and tested on their own (tests/test_diagnostics.py)
TIMING_KEYS = {"test_seconds", "inference_img_per_s", "stage_seconds", "run_dir", "layers"}

DIGITS = ["--dataset", "digits"]
RUNS = {
    "mozafari2018-digits": ["--model", "mozafari2018", *DIGITS, "--epochs", "1", "1", "6"],
    "mozafari2018-digits-sum": ["--model", "mozafari2018", *DIGITS, "--epochs", "1", "1", "4",
                                "--batch-update", "sum", "--seed", "3"],
    "mozafari2018-svm-digits": ["--model", "mozafari2018", *DIGITS, "--epochs", "1", "1", "1",
                                "--readout", "svm"],
    "kheradpisheh2018-digits": ["--model", "kheradpisheh2018", *DIGITS, "--epochs", "1", "1", "1"],
    "majority2024-digits": ["--model", "majority2024", *DIGITS, "--epochs", "1", "1", "3"],
    "deepr2024-digits": ["--model", "deepr2024", *DIGITS, "--epochs", "1", "1", "1", "2", "2"],
    "lagacherie2024-digits": ["--model", "lagacherie2024", *DIGITS, "--epochs", "1", "1"],
    "tavanaei2017-iris": ["--model", "tavanaei2017", "--dataset", "iris", "--epochs", "3"],
    "tavanaei2017_mnist-digits": ["--model", "tavanaei2017_mnist", *DIGITS, "--epochs", "1"],
    "chevalier2019-digits": ["--model", "chevalier2019", *DIGITS, "--epochs", "1"],
    "itsadeepizza2023-iris": ["--model", "itsadeepizza2023", "--dataset", "iris", "--epochs", "5"],
    "mozafari2018-mnist-subset": ["--model", "mozafari2018", "--dataset", "mnist", "--ratio", "0.03",
                                  "--epochs", "1", "1", "3", "--seed", "1"],
    # killed by SIGKILL at its 40th training batch (fault injection), then resumed
    "mozafari2018-digits-resumed": ["--model", "mozafari2018", *DIGITS, "--epochs", "1", "1", "4",
                                    "--seed", "2"],
    "mozafari2018-digits-nproc2": ["--model", "mozafari2018", *DIGITS, "--epochs", "1", "1", "3",
                                   "--nproc", "2"],
}
KILLED_AT = {"mozafari2018-digits-resumed": "batch:40"}


def _train(arguments, env):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def fingerprint(name: str, data_root: str, cache: str, out: str) -> dict:
    """Run one of RUNS and return its fingerprint."""
    import torch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SNN_FAULT", None)
    arguments = [*RUNS[name], "--data-root", data_root, "--no-download", "--cache-dir", cache,
                 "--out-dir", out, "--run-name", name, "--no-progress", "--threads", "1"]
    if name in KILLED_AT:
        killed = _train(arguments, {**env, "SNN_FAULT": KILLED_AT[name]})
        if killed.returncode != -9:
            raise RuntimeError(f"{name}: the fault did not kill the run (exit {killed.returncode})")
        arguments = ["--resume", os.path.join(out, name), "--data-root", data_root, "--cache-dir", cache,
                     "--no-progress", "--threads", "1"]
    if "--nproc" in arguments:     # each rank takes its share of the cores
        at = arguments.index("--threads")
        del arguments[at:at + 2]
    result = _train(arguments, env)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    folder = os.path.join(out, name)
    with open(os.path.join(folder, "metrics.json")) as handle:
        metrics = {k: v for k, v in json.load(handle).items() if k not in TIMING_KEYS}
    sys.path.insert(0, ROOT)
    from checkpoints import load_checkpoint
    payload = load_checkpoint(os.path.join(folder, "checkpoints", "last.ckpt"))
    weights = {key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
               for key, value in payload["state_dict"].items() if isinstance(value, torch.Tensor)}
    return {"metrics": metrics, "weights": weights}


def _same(a, b) -> bool:
    """Equal values; floats to 1e-12 relative (a metric computed in another summation order
    moves in its last bits, a changed decision moves it by >= 1 / test size)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def _differences(expected: dict, actual: dict, metrics_only: bool) -> list[str]:
    problems = []
    for key in sorted(set(expected["metrics"]) | set(actual["metrics"])):
        if not _same(expected["metrics"].get(key), actual["metrics"].get(key)):
            problems.append(f"metrics.{key}: {expected['metrics'].get(key)!r} -> {actual['metrics'].get(key)!r}")
    if not metrics_only:
        for key in sorted(set(expected["weights"]) | set(actual["weights"])):
            if expected["weights"].get(key) != actual["weights"].get(key):
                problems.append(f"weights {key} differ")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("--file", default=DEFAULT_FILE)
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="these runs only")
    parser.add_argument("--data-root", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, "cache"))
    parser.add_argument("--metrics-only", action="store_true", help="compare metrics, not weights")
    parser.add_argument("--keep", help="keep the run folders in this folder")
    args = parser.parse_args(argv)
    out = args.keep or tempfile.mkdtemp(prefix="behaviour-")
    recorded = {}
    if os.path.exists(args.file):
        with open(args.file) as handle:
            recorded = json.load(handle)
    failed = 0
    try:
        for name in args.only or RUNS:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            print(f"{name} ...", end=" ", flush=True)
            result = fingerprint(name, args.data_root, args.cache_dir, out)
            if args.action == "record":
                recorded[name] = {"command": RUNS[name], **result}
                with open(args.file, "w") as handle:
                    json.dump(recorded, handle, indent=1, sort_keys=True)
                    handle.write("\n")
                print(f"accuracy {result['metrics']['accuracy']:.4f}")
                continue
            if name not in recorded:
                print("not recorded")
                failed += 1
                continue
            problems = _differences(recorded[name], result, args.metrics_only)
            print("same" if not problems else "DIFFERENT\n    " + "\n    ".join(problems[:12]))
            failed += bool(problems)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if args.action == "record":
        print(f"wrote {args.file}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
