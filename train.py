"""Train and evaluate a spiking model: `python train.py --model mozafari2018 --dataset digits`.

`main(argv)` is importable and returns the final test metrics (a dict). Errors in the input or
the environment end with a one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys

import torch

import data
import image_folders
import launcher
import models
import run_config
from checkpoints import load_checkpoint, take_modules, taken_modules
from network_trainer import NetworkTrainer, TrainConfig
from pipeline import (build_model, build_recorded, check_input_size, prepare_splits, readout_choice,
                      restore_model)
from run_config import parse_settings
from run_folder import RunDirectory, default_run_name
from utils import (UserError, atomic_write_json, eprint, git_commit, package_versions, resolve_device,
                   seed_everything, set_threads)

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see python train.py --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description="Train, evaluate and inspect convolutional spiking networks "
                                       "(STDP layer by layer, R-STDP decision layer).")
    parser.add_argument("--model", default="mozafari2018", help="a registered model (see --list-models)")
    parser.add_argument("--list-models", action="store_true", help="print the models and their stages")
    parser.add_argument("--dataset", default="mnist",
                        help=f"one of {', '.join(data.DATASETS)}, folder:PATH (an image tree: "
                             f"PATH/train/CLASS/*, PATH/test/CLASS/* or PATH/CLASS/*) or tonic:CLASS "
                             f"(an event-camera dataset of tonic, e.g. tonic:NMNIST = nmnist)")
    parser.add_argument("--image-size", metavar="HxW",
                        help="folder datasets: resize every image to H x W (or N x N) grey levels")
    parser.add_argument("--holdout-group", type=int, metavar="K",
                        help="folder datasets of PATH/CLASS/GROUP/* (e.g. ETH-80's objects): test on "
                             "every class's K-th group (sorted by name), train on the others")
    parser.add_argument("--data-root", default="data", help="torchvision dataset folder")
    parser.add_argument("--no-download", action="store_true", help="never try to download data")
    parser.add_argument("--epochs", type=int, nargs="+", help="one epoch count per stage "
                        "(default: the model's own); R-STDP counts are maxima (early stopping)")
    parser.add_argument("--init-from", metavar="CHECKPOINT",
                        help="take the layers of the stages given 0 epochs from this checkpoint (or a run "
                             "folder's best.ckpt), e.g. --init-from runs/a --epochs 0 0 60 retrains only the "
                             "decision; other settings, even the model, may differ if the copied layers' "
                             "names and shapes do not")
    parser.add_argument("--readout", choices=("rstdp", "svm", "logistic"),
                        help="decision: the R-STDP layer (default for R-STDP models) or a linear "
                             "classifier on the STDP features")
    parser.add_argument("--readout-c", type=float, help="the linear readout's C (default: chosen "
                        "on the validation split, or the model's own)")
    parser.add_argument("--readout-values", choices=models.readout.VALUES,
                        help="what the linear readout reads of each input neuron: whether it spiked "
                             "(default, the papers') or its first spike's latency, T - t (0: none)")
    parser.add_argument("--also-readout", choices=("svm", "logistic"),
                        help="keep the R-STDP decision and also fit this linear readout on the "
                             "features it reads; both test accuracies are reported (metrics.json "
                             "also_readout)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model setting (repeatable): threshold=15, "
                             "conv1.threshold=20, frontend.time_steps=30, post=own; "
                             "values are Python literals, else strings")
    parser.add_argument("--batch-size", type=int,
                        help="samples per step (default: the model's own, 32 for the conv models); "
                             "with --batch-update exact a pure speed setting")
    parser.add_argument("--batch-update", choices=("exact", "sum"), default="exact",
                        help="exact (default): the samples of a batch learn one after the other, "
                             "SpykeTorch's algorithm at any batch size; sum: every sample's update "
                             "computed from the batch's starting weights and summed (faster "
                             "conv STDP, a different algorithm)")
    parser.add_argument("--ratio", type=float, default=1.0, help="stratified fraction of the training set")
    parser.add_argument("--augment", action="store_true",
                        help="add one rotated (+-10 deg) and shifted (+-2 px) copy of each training image")
    parser.add_argument("--val-size", type=float, default=0.1,
                        help="validation split carved from the training set: a fraction (<1) or a count")
    parser.add_argument("--patience", type=int,
                        help="epochs of a supervised stage without validation improvement before "
                             "stopping (default: the model's own, 10 for the conv models)")
    parser.add_argument("--smoothing", type=int,
                        help="early stopping watches the median validation accuracy of the last N "
                             "epochs (default: the model's own, 5; 1: each epoch's own)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads per process (default: all cores / processes)")
    parser.add_argument("--nproc", type=int, default=1,
                        help="data-parallel training in N processes on this machine (gloo on CPU, "
                             "NCCL on GPUs); under torchrun the ranks come from its environment")
    parser.add_argument("--seed", type=int, default=0, help="fixes weights, splits, order, augmentation")
    parser.add_argument("--out-dir", default="runs", help="where run folders are created")
    parser.add_argument("--run-name", help="the run folder's name (default: model-dataset-time)")
    parser.add_argument("--cache-dir", default="cache", help="encoded-input cache folder")
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard events")
    parser.add_argument("--activation-maps", type=int, default=0, metavar="N",
                        help="save per-layer first-spike-time maps of N test images")
    parser.add_argument("--probe-samples", type=int, default=5000, metavar="N",
                        help="layer diagnostics: fit each layer's linear probe on N training images "
                             "(0: no probes)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--eval-only", metavar="CHECKPOINT", help="evaluate a checkpoint on the test set")
    parser.add_argument("--dry-run", action="store_true", help="one epoch of two batches per stage")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show progress bars (default: only on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def validate(args) -> None:
    if args.model not in models.list_models():
        raise UserError(f"unknown model {args.model!r}; choose one of {', '.join(models.list_models())}")
    if args.dataset not in data.DATASETS and not args.dataset.startswith(("folder:", "tonic:")):
        raise UserError(f"unknown dataset {args.dataset!r}; choose one of {', '.join(data.DATASETS)}, "
                        f"folder:PATH or tonic:CLASS")
    if args.image_size is not None:
        image_folders.parse_image_size(args.image_size)
    checks = [(args.batch_size is None or args.batch_size >= 1, "--batch-size must be >= 1"),
              (0 < args.ratio <= 1, "--ratio must be in (0, 1]"),
              (args.readout_c is None or args.readout_c > 0, "--readout-c must be > 0"),
              (args.val_size > 0 and (args.val_size < 1 or float(args.val_size).is_integer()),
               "--val-size must be a fraction in (0, 1) or a whole count >= 1"),
              (args.patience is None or args.patience >= 1, "--patience must be >= 1"),
              (args.smoothing is None or args.smoothing >= 1, "--smoothing must be >= 1"),
              (args.threads is None or 1 <= args.threads <= 1024, "--threads must be in [1, 1024]"),
              (1 <= args.nproc <= 256, "--nproc must be in [1, 256]"),
              (args.nproc == 1 or not args.eval_only, "--eval-only runs in one process (no --nproc)"),
              (0 <= args.activation_maps <= 100, "--activation-maps must be in [0, 100]"),
              (args.probe_samples >= 0, "--probe-samples must be >= 0"),
              (args.holdout_group is None or args.holdout_group >= 0, "--holdout-group must be >= 0"),
              (args.epochs is None or all(e >= 0 for e in args.epochs), "--epochs counts must be >= 0"),
              (0 <= args.seed < 2 ** 63, "--seed must be a non-negative integer")]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    parse_settings(args.settings)
    if args.also_readout and args.readout not in (None, "rstdp"):
        raise UserError(f"--also-readout {args.also_readout} sits beside an R-STDP decision; "
                        f"--readout {args.readout} replaces it (give one of the two)")
    if args.eval_only:
        given = [flag for flag, value in (("--set", args.settings), ("--also-readout", args.also_readout),
                                          ("--readout", args.readout), ("--readout-c", args.readout_c),
                                          ("--readout-values", args.readout_values),
                                          ("--epochs", args.epochs), ("--init-from", args.init_from)) if value]
        if given:
            raise UserError(f"--eval-only evaluates the checkpoint as it was trained; {', '.join(given)} "
                            f"apply to training runs")
    if args.resume and args.eval_only:
        raise UserError("--resume and --eval-only cannot be combined")


def list_models_text() -> str:
    lines = []
    for name in models.list_models():
        model = models.create_model(name)
        stages = ", ".join(f"{s.name} ({s.kind})" for s in model.stages)
        epochs = " ".join(str(e) for e in model.config.default_epochs)
        lines.append(f"{name}: {models.model_description(name)}\n    stages: {stages}\n"
                     f"    default --epochs {epochs}")
    return "\n".join(lines)


# ---------------------------------------------------------------- main

def main(argv=None) -> dict:
    try:
        return _main(argv)
    except UserError as error:
        if os.environ.get("RANK", "0") == "0":      # data-parallel: one line, from rank 0
            eprint(f"error: {error}")
        raise SystemExit(2) from None
    except OSError as error:      # a full disk, a vanished folder... after atomic writes: nothing half-written
        where = f": {error.filename}" if error.filename else ""
        eprint(f"error: {error.strerror or error}{where}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        eprint("interrupted: the last completed epoch is saved; continue with --resume RUN_DIR")
        raise SystemExit(130) from None


def _main(argv) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_models:
        print(list_models_text())
        return {}
    validate(args)
    if args.init_from:      # absolute, and a run folder's best.ckpt: the run records what it took
        args.init_from = init_checkpoint_path(args.init_from)
    config, runtime = run_config.from_namespace(args)
    if args.resume:     # spawn and join as the run did (its saved --nproc, --device), unless given again
        runtime = _saved_runtime(parser, argv, args.resume, runtime)
    if runtime.nproc > 1 and "RANK" not in os.environ:
        return launcher.spawn_ranks(argv, runtime)
    rank, world = launcher.join_group(runtime, evaluating=bool(args.eval_only))
    run, recorded = None, None
    try:
        if args.resume and rank == 0:
            config, run, recorded = _resume(parser, argv, args)     # its runtime: _saved_runtime above
        if world > 1:       # every rank trains with rank 0's (resumed) configuration
            import torch.distributed as dist
            box = [config, runtime, recorded]
            dist.broadcast_object_list(box, src=0)
            config, runtime, recorded = box
        if rank != 0:
            runtime = dataclasses.replace(runtime, progress=False)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        threads = set_threads(runtime.threads or (max(1, (os.cpu_count() or 1) // local_world)
                                                  if world > 1 else None))
        device = resolve_device(runtime.device)     # the run's own device when resuming
        if world > 1 and device.type == "cuda":     # each local rank its own GPU
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        log = print if rank == 0 else (lambda *_: None)
        if args.eval_only:
            return _evaluate_only(args.eval_only, config, runtime, device, log)
        return _train(config, runtime, argv, run, recorded, rank, world, threads, device, log)
    finally:
        if run is not None:
            run.release()
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()


def _train(config, runtime, argv, run, recorded, rank: int, world: int, threads: int, device, log) -> dict:
    """One training run; `recorded` (when resuming): the interrupted run's config.json."""
    resuming = recorded is not None
    writes = rank == 0
    if world > 1 and not writes:
        torch.distributed.barrier()     # rank 0 downloads, encodes and fills the cache first
    dataset = data.load_dataset(config.dataset, runtime.data_root, download=not runtime.no_download,
                                image_size=config.image_size and image_folders.parse_image_size(config.image_size),
                                split_seed=config.seed, holdout_group=config.holdout_group)
    # canonical (a folder's absolute path and split): --resume reads it back
    config = dataclasses.replace(config, dataset=dataset.name)
    seed_everything(config.seed)
    # the dataset's own settings (event data: the binning front end, 2 input channels), then --set
    overrides = {**dataset.model_settings, **config.overrides()}
    # with --also-readout, --readout-c and --readout-values are the extra readout's, not the decision's
    if config.also_readout and config.readout in (None, "rstdp"):
        choice = readout_choice(config.readout, None)
    else:
        choice = readout_choice(config.readout, config.readout_c, config.readout_values)
    if resuming:        # the model as the run recorded it, whatever today's defaults are
        model = build_recorded(config.model, dataset.num_classes, recorded, overrides, choice, dataset)
    else:
        model = build_model(config.model, dataset.num_classes, overrides, choice, dataset)
    check_input_size(model, dataset)
    serial = [s.name for s in model.stages if not s.data_parallel]
    if world > 1 and serial:
        raise UserError(f"{config.model}: stage {', '.join(serial)} has its own serial learner and cannot "
                        f"be trained data-parallel (--nproc / torchrun work for STDP, R-STDP and readout stages)")
    if config.also_readout and model.stages[-1].kind != "rstdp":
        raise UserError(f"--also-readout compares a linear readout with an R-STDP decision; "
                        f"{config.model}'s decision is {model.stages[-1].kind}")
    epochs = tuple(config.epochs) if config.epochs else tuple(model.config.default_epochs)
    if len(epochs) != len(model.stages):  # fail before any encoding work
        names = ", ".join(s.name for s in model.stages)
        raise UserError(f"{config.model} has {len(model.stages)} stages ({names}): --epochs needs "
                        f"{len(model.stages)} counts, got {len(epochs)}")
    if config.init_from:    # also when resuming: a run stopped before its first checkpoint restarts
        taken = [s for s, e in zip(model.stages, epochs) if s.epochs(e) == 0]
        if not taken:
            raise UserError("--init-from copies the layers of the stages given 0 epochs, and --epochs gives "
                            "none 0 (e.g. --epochs 0 0 60 keeps conv1 and conv2)")
        source = load_checkpoint(config.init_from)
        keys = take_modules(source, model, taken_modules(model.stages, epochs))
        log(f"--init-from: {', '.join(s.name for s in taken)} taken from {config.init_from} "
            f"(model {source.get('model')}, {len(keys)} tensors)")
    batch_size = config.batch_size or getattr(model.config, "default_batch_size", 32)
    patience = config.patience or getattr(model.config, "default_patience", 10)
    smoothing = config.smoothing or getattr(model.config, "default_smoothing", 5)
    trainer_config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=patience, smoothing=smoothing,
                                 batch_update=config.batch_update, seed=config.seed, dry_run=config.dry_run,
                                 activation_maps=config.activation_maps, probe_samples=runtime.probe_samples,
                                 also_readout=config.also_readout, readout_c=config.readout_c,
                                 readout_values=config.readout_values,
                                 tensorboard=config.tensorboard, progress=runtime.progress, rank=rank, world=world)
    meta = {"model": config.model, "overrides": overrides, "dataset": dataset.name, "classes": dataset.classes,
            "readout_choice": None if choice is None else dataclasses.asdict(choice)}
    # config.json: the run configuration and, resolved from the model's defaults, what it ran with
    record = {**run_config.to_json(config, runtime), "epochs": list(epochs), "batch_size": batch_size,
              "patience": patience, "smoothing": smoothing, "batch_update": config.batch_update,
              "model": config.model, "stages": [[s.name, s.kind] for s in model.stages],
              "hyperparameters": model.hyperparameters(), "frontend_key": model.frontend.key(),
              "threads": threads, "device": str(device), "world_size": world, "versions": package_versions(),
              "git_commit": git_commit(), "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "python train.py " + " ".join(argv)}
    if run is None and writes:
        # the run folder exists (with its configuration) before any long work, so that a run
        # killed even during encoding can be resumed
        run = RunDirectory.create(runtime.out_dir, runtime.run_name or default_run_name(config.model, dataset.slug))
        atomic_write_json(run.file("config.json"), record)
    try:
        if writes:
            log(f"run folder: {run.path}")
        splits, summary = prepare_splits(config, runtime, dataset, model.frontend, log)
        if world > 1 and writes:
            torch.distributed.barrier()
        if writes and not resuming:
            atomic_write_json(run.file("config.json"), {**record, "dataset": summary})
        trainer = NetworkTrainer(model, splits, run, trainer_config, meta, device=device, log=log)
        if writes and resuming and os.path.exists(run.file("checkpoints", "last.ckpt")):
            trainer.resume(run.file("checkpoints", "last.ckpt"))
        metrics = trainer.fit()
    finally:
        if run is not None:
            run.release()
    if not writes:
        return {}
    log(f"test accuracy {metrics['accuracy']:.4f} (silence {metrics['silence_rate']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f}) -> {run.path}")
    metrics["run_dir"] = run.path
    return metrics


def init_checkpoint_path(path: str) -> str:
    """--init-from's checkpoint as an absolute path: a run folder stands for its best.ckpt."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoints", "best.ckpt")
    if not os.path.isfile(path):
        raise UserError(f"--init-from: no checkpoint at {path}")
    return os.path.abspath(path)


def resumable_overrides(parser=None) -> set:
    """The flags a resumed run may be given again: the resumable runtime fields' flags and --resume."""
    return set(run_config.resumable_flags(parser or build_parser())) | {"--resume"}


def _resume(parser, argv, args):
    """The interrupted run's own configuration and its folder, opened (locked). Returns
    (config, run, its config.json); its runtime comes from `_saved_runtime`."""
    allowed = resumable_overrides(parser)
    extra = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in allowed]
    if extra:
        raise UserError(f"--resume continues the run with its own settings; {', '.join(extra)} "
                        f"cannot be changed (allowed: {', '.join(sorted(allowed))})")
    run = RunDirectory.open(args.resume)
    try:
        with open(run.file("config.json")) as handle:
            recorded = json.load(handle)
        config, _ = run_config.from_json(recorded)
    except (OSError, ValueError, KeyError, TypeError) as error:
        run.release()
        raise UserError(f"{args.resume} has no readable config.json: not a run folder") from error
    return config, run, recorded


def _merged(parser, argv, saved, given):
    """The saved runtime with the runtime flags given again on the command line."""
    changed = {field for flag, field in run_config.resumable_flags(parser).items()
               if flag in argv or any(a.startswith(flag + "=") for a in argv)}
    return dataclasses.replace(saved, **{field: getattr(given, field) for field in changed})


def _saved_runtime(parser, argv, folder, given):
    """A run folder's saved runtime merged with the flags given again (`given` when the folder
    has no readable config.json: `_resume` then says so in one line)."""
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            return _merged(parser, argv, run_config.from_json(json.load(handle))[1], given)
    except (OSError, ValueError, KeyError, TypeError):
        return given


def _evaluate_only(checkpoint, config, runtime, device, log) -> dict:
    payload = load_checkpoint(checkpoint)
    name = payload.get("model")
    if name not in models.list_models():
        raise UserError(f"checkpoint names an unknown model {name!r}")
    dataset = data.load_dataset(payload.get("dataset") or config.dataset, runtime.data_root,
                                download=not runtime.no_download)
    if payload.get("num_classes") != dataset.num_classes:
        raise UserError(f"checkpoint has {payload.get('num_classes')} classes, dataset {dataset.name} "
                        f"has {dataset.num_classes}")
    model = restore_model(payload)
    config = dataclasses.replace(config, model=name, dataset=dataset.name)
    splits, summary = prepare_splits(config, runtime, dataset, model.frontend, log, test_only=True)
    run = RunDirectory.create(runtime.out_dir, runtime.run_name or "eval-" + default_run_name(name, dataset.slug))
    atomic_write_json(run.file("config.json"), {**run_config.to_json(config, runtime),
                                                 "checkpoint": os.path.abspath(checkpoint),
                                                 "model": name, "hyperparameters": model.hyperparameters(),
                                                 "dataset": summary,
                                                 "versions": package_versions(), "git_commit": git_commit()})
    # the training run drew the learned features already
    trainer_config = TrainConfig(epochs=(0,) * len(model.stages), activation_maps=config.activation_maps,
                                 progress=runtime.progress, feature_images=False)
    trainer = NetworkTrainer(model, splits, run, trainer_config,
                             {"model": name, "dataset": dataset.name, "classes": dataset.classes},
                             device=device, log=log)
    try:
        metrics = trainer.test()
    finally:
        trainer.outputs.close()
        run.release()
    log(f"test accuracy {metrics['accuracy']:.4f} (silence {metrics['silence_rate']:.4f}) -> {run.path}")
    metrics["run_dir"] = run.path
    return metrics


if __name__ == "__main__":
    main()
