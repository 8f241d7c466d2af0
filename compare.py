"""Compare trained runs: a table (csv, markdown, printed) and a figure.

    python compare.py runs/a runs/b                      # existing run folders
    python compare.py --models mozafari2018 deep2024 --dataset digits --seeds 0 1

    python compare.py --models mozafari2018 --set conv1.threshold=10,15 --seeds 0 1 2 --max-parallel 2
    python compare.py --models deep2024 --seeds 0 1 --ray-address auto --cpus-per-run 4

With `--models`, every (model, `--set` values, seed) of the grid is trained through
`train.main` into `--out-dir` (default `runs/compare-<time>`): in this process, on a local pool
of processes, or as Ray tasks (see `sweep.py`); every other option is passed to train.py as is
(`--epochs` only makes sense for models with the same number of stages). A rerun skips runs
that already finished and resumes interrupted ones. The comparison files go to `--out`
(default: that sweep folder).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import sys

import sweep
from utils import UserError, atomic_write_text, eprint, save_figure

COLUMNS = ("run", "model", "readout", "settings", "seed", "parameters", "stages", "epochs", "val_accuracy", "test_accuracy",
           "silence_rate", "macro_f1", "also_readout", "probe_accuracies", "train_seconds", "inference_img_per_s")


def summarize(run_dir: str) -> dict:
    """One table row from a finished run folder (config.json + metrics.json)."""
    try:
        with open(os.path.join(run_dir, "config.json")) as handle:
            config = json.load(handle)
        with open(os.path.join(run_dir, "metrics.json")) as handle:
            metrics = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserError(f"{run_dir} is not a finished run (config.json and metrics.json): {error}") from None
    # the run configuration ("args" in folders written before it was split from the runtime)
    run = config.get("run") or config.get("args") or {}
    # in training order (metrics.json sorts its keys: deepr2024's "conv3+decision" before "decision")
    order = [stage[0] for stage in config.get("stages") or []]

    def in_order(entries: dict) -> dict:
        return dict(sorted(entries.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    selected = in_order(metrics.get("selected_epochs") or {})
    last = list(selected.values())[-1] if selected else {}
    stages = in_order(metrics.get("stage_seconds") or {})
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "model": metrics.get("model", config.get("model")),
        # the decision: a linear readout ("svm", "svm latency"), else the last stage's kind (rstdp,
        # bptt, bpstdp...)
        "readout": _readout(config.get("hyperparameters") or {})
        or ((config.get("stages") or [[None, "rstdp"]])[-1][1]),
        "settings": _settings(config, run),
        "seed": run.get("seed"),
        "parameters": metrics.get("parameters"),
        "stages": " ".join(stages) or None,
        "epochs": " ".join(str(e) for e in config.get("epochs", [])),
        "val_accuracy": last.get("val_accuracy"),
        "test_accuracy": metrics.get("accuracy"),
        "silence_rate": metrics.get("silence_rate"),
        "macro_f1": metrics.get("macro_f1"),
        # a linear readout fitted beside the R-STDP decision (--also-readout): "svm 0.9812"
        "also_readout": (f"{_readout(metrics['also_readout'], 'kind', 'values')} "
                         f"{metrics['also_readout']['accuracy']:.4f}" if metrics.get("also_readout") else None),
        "also_readout_accuracy": (metrics.get("also_readout") or {}).get("accuracy"),
        "train_seconds": sum(stages.values()) if stages else None,
        "inference_img_per_s": metrics.get("inference_img_per_s"),
        "per_class_f1": {k: v["f1"] for k, v in (metrics.get("per_class") or {}).items()},
        # each layer's linear probe (validation accuracy), in forward order
        "probes": {name: values["probe_accuracy"] for name, values in (metrics.get("layers") or {}).items()
                   if "probe_accuracy" in values},
    }


def _readout(record: dict, kind: str = "readout", values: str = "readout_values") -> str | None:
    """A linear readout's kind, and what it reads when not whether each neuron spiked."""
    if not record.get(kind):
        return None
    return record[kind] + (f" {record[values]}" if record.get(values, "spiked") != "spiked" else "")


def _settings(config: dict, run: dict) -> str:
    """What the run's model differs in from the model's defaults today ("conv3.pool=3"): so a
    row trained before a default changed says so. The run's own --set values when its record
    predates hyperparameters or names a model this version lacks."""
    import models
    name, recorded = config.get("model"), config.get("hyperparameters")
    if not recorded or name not in models.list_models():
        return " ".join(run.get("settings") or [])
    classes = len((config.get("dataset") or {}).get("classes") or []) or 10
    changes = models.setting_changes(name, recorded, classes)
    return " ".join(f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in sorted(changes.items()))


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.1f}"
    return str(value)


CONFIG_COLUMNS = ("configuration", "runs", "seeds", "test_accuracy", "mean_test_accuracy", "mean_macro_f1",
                  "also_readout", "mean_gap", "mean_probes", "mean_train_seconds", "mean_inference_img_per_s")


def configurations(rows: list[dict]) -> list[dict]:
    """The runs grouped by what they compute (model, decision, settings), seeds side by side:
    every seed's test accuracy, the means, and the mean gap between the linear readout fitted
    beside the decision (`--also-readout`) and the decision itself. In first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row.get("model"), row.get("readout"), row.get("settings") or ""), []).append(row)

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    summary = []
    for (model, readout, settings), members in groups.items():
        label = model + ("" if readout in (None, "rstdp") else f" ({readout})") + (f" [{settings}]" if settings else "")
        accuracies = [r.get("test_accuracy") for r in members]
        readouts = [r.get("also_readout_accuracy") for r in members]
        gaps = [b - a for a, b in zip(accuracies, readouts) if a is not None and b is not None]
        probes = {name: mean([(r.get("probes") or {}).get(name) for r in members])
                  for name in (members[0].get("probes") or {})}
        summary.append({
            "configuration": label, "model": model, "runs": " ".join(r["run"] for r in members),
            "seeds": " ".join(str(r.get("seed")) for r in members),
            "test_accuracy": " ".join(_format(a) for a in accuracies),
            "test_accuracies": [a for a in accuracies if a is not None],
            "mean_test_accuracy": mean(accuracies), "mean_macro_f1": mean([r.get("macro_f1") for r in members]),
            "also_readout": " ".join(_format(a) for a in readouts if a is not None) or None,
            "readout_accuracies": [a for a in readouts if a is not None],
            "mean_gap": mean(gaps), "probes": probes,
            "mean_probes": " ".join(f"{k} {v:.4f}" for k, v in probes.items() if v is not None) or None,
            "mean_train_seconds": mean([r.get("train_seconds") for r in members]),
            "mean_inference_img_per_s": mean([r.get("inference_img_per_s") for r in members]),
            "per_class_f1": {c: mean([(r.get("per_class_f1") or {}).get(c) for r in members])
                             for c in (members[0].get("per_class_f1") or {})},
        })
    return summary


def _markdown(columns, rows) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_format(row.get(c)) for c in columns) + " |" for row in rows]


def write_outputs(rows: list[dict], out: str) -> str:
    """comparison.csv (one row per run), comparison.md (the runs, then the configurations:
    seeds grouped) and comparison.png in `out`; returns the markdown."""
    from plots import comparison_figure
    os.makedirs(out, exist_ok=True)
    for row in rows:
        row["probe_accuracies"] = " ".join(f"{k} {v:.4f}" for k, v in row.get("probes", {}).items()) or None
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(out, "comparison.csv"), buffer.getvalue())
    groups = configurations(rows)
    lines = _markdown(COLUMNS, rows)
    if len(groups) < len(rows):
        lines += ["", "By configuration (the seeds of one model and settings together; gap: the "
                  "--also-readout accuracy minus the decision's):", ""] + _markdown(CONFIG_COLUMNS, groups)
    table = "\n".join(lines) + "\n"
    atomic_write_text(os.path.join(out, "comparison.md"), table)
    save_figure(comparison_figure(groups), os.path.join(out, "comparison.png"))
    return table


OWN_OPTIONS = {"--out-dir", "--set", "--ray-address", "--cpus-per-run", "--max-parallel", "--shared-fs",
               "-h", "--help"}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description="Compare trained runs or train and compare models.")
    parser.add_argument("runs", nargs="*", help="finished run folders")
    parser.add_argument("--models", nargs="+", help="train these models (x --set values x --seeds)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=V1,V2",
                        help="sweep a model setting over values (repeatable: the grid of all)")
    parser.add_argument("--out-dir", help="sweep folder for --models (default runs/compare-<time>)")
    parser.add_argument("--out", help="where the comparison files go")
    parser.add_argument("--cpus-per-run", type=int, default=1, help="torch threads (Ray CPUs) per run")
    parser.add_argument("--max-parallel", type=int,
                        help="runs at once (default: cores / --cpus-per-run locally, all on Ray)")
    parser.add_argument("--ray-address", help="run each training as a Ray task: auto, HOST:PORT, "
                                              "or local (start a private Ray instance)")
    parser.add_argument("--shared-fs", action="store_true",
                        help="Ray workers write run folders directly (the sweep folder is on a "
                             "filesystem every node shares); default: runs come back packed")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        mine, train_args = sweep.split_train_args(argv, OWN_OPTIONS)
        args = parser.parse_args(mine)
        if not args.runs and not args.models:
            raise UserError("give run folders or --models (see python compare.py --help)")
        if args.cpus_per_run < 1 or (args.max_parallel is not None and args.max_parallel < 1):
            raise UserError("--cpus-per-run and --max-parallel must be >= 1")
        run_dirs = list(args.runs)
        out = args.out
        failed = []
        if args.models:
            out_dir = os.path.abspath(args.out_dir or os.path.join(
                "runs", "compare-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
            specs = sweep.plan_runs(args.models, args.seeds, sweep.parse_sweep_settings(args.settings),
                                    sweep.absolute_paths(train_args))
            results = sweep.execute_runs(specs, out_dir, args.cpus_per_run, args.max_parallel,
                                         args.ray_address, args.shared_fs)
            failed = [r["name"] for r in results if r["status"] == "failed"]
            run_dirs += [os.path.join(out_dir, r["name"]) for r in results if r["status"] != "failed"]
            out = out or out_dir
        elif train_args or args.settings:
            raise UserError(f"training options ({' '.join(train_args + args.settings)}) need --models")
        rows = [summarize(path) for path in run_dirs]
        table = write_outputs(rows, out or "comparison") if rows else ""
    except UserError as error:
        eprint(f"error: {error}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        eprint("interrupted: finished runs are kept; rerun the same command to resume the sweep")
        raise SystemExit(130) from None
    print(table, end="")
    if failed:
        eprint(f"{len(failed)} run(s) failed: {', '.join(failed)}; rerun the same command to retry them")
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
