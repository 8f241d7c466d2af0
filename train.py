"""Train and evaluate a spiking model: `python train.py --model mozafari2018 --dataset digits`.

`main(argv)` is importable and returns the final test metrics (a dict). Errors in the input or
the environment end with a one-line message and exit status 2, never a traceback.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import re
import shutil
import sys

import torch

import data
import image_folders
import launcher
import models
import run_config
from checkpoints import load_checkpoint, take_modules, taken_modules
from cli import build_parser, list_models_text, validate
from network_trainer import NetworkTrainer, TrainConfig
from pipeline import (build_model, build_recorded, check_input_size, prepare_splits, readout_choice,
                      restore_model)
from run_folder import RunDirectory, default_run_name
from utils import (UserError, atomic_write_json, eprint, git_commit, package_versions, resolve_device,
                   seed_everything, set_threads)


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
    except (MemoryError, RuntimeError) as error:
        wanted = out_of_memory(error)
        if wanted is None:
            raise
        # each rank allocates its own memory: whichever ran out says so (a UserError is every rank's)
        rank = os.environ.get("RANK", "0")
        eprint(f"error: {'' if rank == '0' else f'rank {rank}: '}out of memory{wanted}: the layers and "
               f"inputs these settings size need more than is free here (a run stopped after its first "
               f"epoch is kept: --resume continues it)")
        raise SystemExit(2) from None


def out_of_memory(error: BaseException) -> str | None:
    """None unless `error` is an allocation failure (Python's MemoryError, torch's CPU
    allocator or CUDA); then what it asked for (" (256.0 GiB asked)", " (50.0 MiB asked)") or ""."""
    text = str(error)
    if not (isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text):
        return None
    match = re.search(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMG]iB)", text, re.IGNORECASE)
    if not match:
        return ""
    units = (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10))
    amount = float(match.group(1)) * {u.lower(): size for u, size in units}.get(match.group(2).lower(), 1)
    for unit, size in units:
        if amount >= size:
            return f" ({amount / size:.1f} {unit} asked)"
    return f" ({amount:.0f} bytes asked)"


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
        # keep_none: `--set KEY=none` is a value (a choice named "none", or None where the
        # setting takes it), not "leave the default"
        model = build_model(config.model, dataset.num_classes, overrides, choice, dataset, keep_none=True)
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
        # the checkpoint's own model, so that layers are matched by name where paths differ
        keys = take_modules(source, model, taken_modules(model.stages, epochs), restore_model(source))
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
    created = run is None and writes
    if created:
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
    except (UserError, MemoryError, RuntimeError) as error:
        # input this run cannot take (data too few for the splits, settings beyond the memory),
        # found before its first checkpoint: nothing to resume, so no folder is left behind
        refused = isinstance(error, UserError) or out_of_memory(error) is not None
        if created and refused and not os.path.isdir(os.path.join(run.path, "checkpoints")):
            run.release()
            shutil.rmtree(run.path, ignore_errors=True)
        raise
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
        folder, path = path, os.path.join(path, "checkpoints", "best.ckpt")
        others = [] if os.path.isfile(path) else sorted(glob.glob(os.path.join(folder, "checkpoints", "*.ckpt")))
        if others:
            # a run without a selected model (it trained no decision stage, or was stopped):
            # which of its states to take is the user's choice
            raise UserError(f"--init-from: {folder} has no best.ckpt (no selected model); name one of "
                            f"its checkpoints: {', '.join(os.path.basename(o) for o in others)}")
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
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        run.release()
        raise UserError(f"{args.resume} has no readable config.json: not a run folder") from error
    except ValueError as error:         # a value of the wrong type (a hand-edited file)
        run.release()
        raise UserError(f"{args.resume}/config.json: {error}") from error
    if config.model not in models.list_models():
        run.release()
        raise UserError(f"{args.resume}/config.json names an unknown model {config.model!r}")
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
