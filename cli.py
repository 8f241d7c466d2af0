"""The command line of `train.py`: its flags (`build_parser`), their checks before any work
(`validate`, one-line `UserError`s) and `--list-models`'s text. `sweep.py` reads the same parser.
"""
from __future__ import annotations

import argparse

import data
import image_folders
import models
from run_config import parse_settings
from run_folder import check_run_name
from utils import UserError


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
    if args.run_name is not None:
        check_run_name(args.run_name)
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
