"""The generic, stage-driven trainer: the only place (with the CLI) that has side effects.

It runs a model's stages in order (`model.stages`), with one epoch count per stage:

- an STDP stage learns for its epochs, unsupervised;
- a supervised stage (R-STDP, online rules, BPTT) is evaluated on the validation split after
  every epoch; the best epoch's weights (validation accuracy, ties broken by the epoch's
  training hit rate) are kept (`best.ckpt`) and training stops after `patience` epochs
  without a new maximum of the median validation accuracy of the last `smoothing` epochs
  (a single lucky or unlucky epoch neither resets nor ends it); the model then continues
  from the best weights. A stage that refines layers an earlier stage trained
  (`stage.validates_start`) also validates its starting weights, as its epoch 0.

A stage reads node `stage.input_node` (see `models.base`) from the node cache (`node_cache`:
computed once per split through the frozen blocks, kept in memory as uint8), so an epoch costs
only the stage's own arithmetic; `run_epoch` is one epoch, without I/O. After every epoch the full state (weights, learning rates, sample counters,
trainer position, history) goes to `checkpoints/last.ckpt`, written atomically with a checksum,
so an interrupted run resumed with `--resume` ends with exactly the same weights and metrics.
The test split is evaluated once, at the end.

Data-parallel (`TrainConfig.world > 1`, a torch.distributed group already initialised): every
rank walks the same global batches in the same order and trains on its contiguous shard of
each; `spiking.parallel` sums the rate updates and the sample counts over the ranks, so every
rank applies the update one process would apply to the whole batch. All ranks validate (their
weights are identical); only rank 0 writes files and evaluates the test split, and rank 0's
state is broadcast at the start (fresh or resumed) and after the best epoch is restored.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from checkpoints import CHECKPOINT_FORMAT, check_compatible, load_checkpoint
from evaluation import test_report
from metrics import diagnose
from node_cache import NodeCache, as_tensor
from run_outputs import NoOutputs, RunOutputs
from spiking import parallel
from utils import UserError, derived_seed, fault_point


@dataclass
class Split:
    """One split's front-end spike times (node 0, uint8 [N, C, H, W]; None when an evaluation
    does not need them) and labels [N]."""
    times: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: tuple
    batch_size: int = 32
    batch_update: str = "exact"         # "exact": sequential at any batch size; "sum": summed
    eval_batch_size: int = 128
    patience: int = 10
    smoothing: int = 5                  # early stopping watches the median of the last N validations
    seed: int = 0
    dry_run: bool = False
    activation_maps: int = 0
    feature_images: bool = True         # draw the learned features (features/*.png) at the end
    probe_samples: int = 5000           # layer diagnostics' linear probes: training images (0: none)
    also_readout: str | None = None     # "svm" / "logistic": also fit it on the decision's input
    readout_c: float | None = None      # its C (None: chosen on the validation split)
    readout_values: str | None = None   # what it reads: "spiked" (None) or "latency"
    tensorboard: bool = False
    progress: bool | None = None        # None: bars only on a terminal
    rank: int = 0                       # data-parallel: this process's rank of `world`
    world: int = 1


@dataclass
class TrainerState:
    stage: int = 0                      # index of the stage in progress
    epoch: int = 0                      # epochs completed in that stage
    best_val: float = -1.0
    best_train_hit: float = -1.0        # breaks validation ties (small validation splits tie often)
    best_epoch: int = -1
    best_smoothed: float = -1.0         # best median validation accuracy of `smoothing` epochs
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    elapsed: dict = field(default_factory=dict)
    selected: dict = field(default_factory=dict)   # R-STDP stage -> {epoch, val_accuracy} kept


class NetworkTrainer:
    def __init__(self, model, splits: dict, run, config: TrainConfig, meta: dict,
                 device=torch.device("cpu"), log=print):
        self.model = model.to(device)
        self.splits = splits
        self.config = config
        self.meta = meta            # model name, overrides, dataset, classes (saved in checkpoints)
        self.device = device
        self.log = log
        self.state = TrainerState()
        self.nodes = NodeCache(model, splits, config.eval_batch_size, device, self._bar)
        # data-parallel: only rank 0 touches the run folder (run_outputs)
        self.outputs = RunOutputs(run, config.tensorboard) if config.rank == 0 else NoOutputs()
        stages = model.stages
        if len(config.epochs) != len(stages):
            names = ", ".join(s.name for s in stages)
            raise UserError(f"{meta['model']} has {len(stages)} stages ({names}): --epochs needs "
                            f"{len(stages)} counts, got {len(config.epochs)}")

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, extra: dict | None = None) -> dict:
        payload = {"format": CHECKPOINT_FORMAT, "model": self.meta["model"],
                   "overrides": self.meta.get("overrides", {}), "num_classes": self.model.num_classes,
                   "hyperparameters": json.loads(json.dumps(self.model.hyperparameters())),
                   "frontend_key": self.model.frontend.key(), "dataset": self.meta.get("dataset"),
                   "classes": self.meta.get("classes"), "readout_choice": self.meta.get("readout_choice"),
                   # node 0's shape [C, H, W] (what an exported network takes as its input)
                   "input_shape": list(self.splits["test"].times.shape[1:]),
                   "state_dict": self.model.state_dict(), "trainer": asdict(self.state)}
        payload.update(extra or {})
        return payload

    def save(self, name: str, **extra) -> None:
        if self.outputs.writes:
            self.outputs.save_checkpoint(name, self._payload(extra))

    def resume(self, path: str) -> None:
        """Continue from a checkpoint of this run (weights, rates, counters, trainer position)."""
        payload = load_checkpoint(path)
        check_compatible(payload, self.model, self.meta["model"])
        self.model.load_state_dict(payload["state_dict"])
        self.state = TrainerState(**payload["trainer"])
        self.log(f"resuming {self.outputs.path} at stage {self.state.stage + 1}/{len(self.model.stages)}, "
                 f"epoch {self.state.epoch}")

    def sync_from_rank0(self) -> None:
        """Data-parallel: every rank takes rank 0's weights, rates, counters and trainer state."""
        if self.config.world <= 1:
            return
        import torch.distributed as dist
        box = [{k: v.cpu() for k, v in self.model.state_dict().items()}, asdict(self.state)]
        dist.broadcast_object_list(box, src=0)
        if self.config.rank != 0:
            self.model.load_state_dict(box[0])
            self.state = TrainerState(**box[1])

    # ------------------------------------------------------------------ training
    def fit(self) -> dict:
        """Train every remaining stage, then `test`; returns the test metrics ({} on ranks > 0)."""
        stages = self.model.stages
        self.outputs.open()
        self.sync_from_rank0()
        try:
            with parallel.summed_across_ranks() if self.config.world > 1 else contextlib.nullcontext():
                while self.state.stage < len(stages):
                    self._train_stage(self.state.stage, stages[self.state.stage])
            return self.test() if self.outputs.writes else {}
        finally:
            self.outputs.close()

    def _train_stage(self, index: int, stage) -> None:
        # a dry run: one short epoch per stage, none for a stage given 0 (--init-from took it)
        epochs = stage.epochs(min(1, self.config.epochs[index]) if self.config.dry_run else self.config.epochs[index])
        stage.configure(exact=self.config.batch_update == "exact", seed=self.config.seed)
        inputs = self.nodes.get("train", stage.input_node, stage.needs)
        labels = self.splits["train"].labels
        if stage.supervised and stage.validates_start and epochs > 0 and self.state.epoch == 0 \
                and self.state.best_epoch < 0:
            # epoch 0: the weights the stage starts from (kept unless an epoch beats them)
            began = time.time()
            row = {"stage": stage.name, "kind": stage.kind, "epoch": 0}
            self._validate(stage, row)
            self.state.best_train_hit = 2.0        # above any hit rate: a tie keeps the start
            row["seconds"] = time.time() - began
            self.state.elapsed[stage.name] = self.state.elapsed.get(stage.name, 0.0) + row["seconds"]
            self._record(row)
        while self.state.epoch < epochs and not self._patience_spent(stage):
            epoch = self.state.epoch
            began = time.time()
            row = {"stage": stage.name, "kind": stage.kind, "epoch": epoch + 1}
            row.update(self._train_epoch(stage, index, epoch, epochs, inputs, labels))
            row["seconds"] = time.time() - began
            self.state.elapsed[stage.name] = self.state.elapsed.get(stage.name, 0.0) + row["seconds"]
            stop = False
            if stage.supervised:
                stop = self._validate(stage, row)
            else:
                activity = self._activity(stage)
                if activity is not None:
                    row["spike_rate"] = activity
            row.update({f"rate_{stage.name}_{k}": v for k, v in stage.rates().items()})
            self.state.epoch = epoch + 1
            self._record(row)
            for warning in diagnose(stage.name, row, self.model.num_classes):
                self.log(f"warning: {warning}")
            if stop:
                self.log(f"{stage.name}: the median validation accuracy of {self.config.smoothing} epochs "
                         f"has not risen for {self.config.patience} epochs; stopping")
        if stage.supervised and self.state.best_epoch >= 0:
            if self.outputs.writes:
                best = self.outputs.load_checkpoint("best.ckpt")
                if best.get("best_epoch") != self.state.best_epoch:
                    raise UserError(f"best.ckpt holds epoch {best.get('best_epoch')}, the run's state "
                                    f"says {self.state.best_epoch}: the run folder is inconsistent")
                self.model.load_state_dict(best["state_dict"])
            self.sync_from_rank0()
            self.state.selected[stage.name] = {"epoch": self.state.best_epoch,
                                               "val_accuracy": self.state.best_val}
            self.log(f"{stage.name}: keeping epoch {self.state.best_epoch} "
                     f"(validation accuracy {self.state.best_val:.4f})")
        self._end_stage(index, stage)

    def _record(self, row: dict) -> None:
        """A finished epoch's row: into the history, the checkpoint, the run folder and the log."""
        self.state.history.append(row)
        self.save("last.ckpt")
        self.outputs.epoch(self.state.history)
        self.log(_row_summary(row))

    def _end_stage(self, index: int, stage) -> None:
        self.state = TrainerState(stage=index + 1, history=self.state.history,
                                  elapsed=self.state.elapsed, selected=self.state.selected)
        self.nodes.drop_after(stage.input_node)
        self.save(f"stage-{stage.name}.ckpt")
        self.save("last.ckpt")

    def _patience_spent(self, stage) -> bool:
        return stage.supervised and self.state.bad_epochs >= self.config.patience

    def _train_epoch(self, stage, index, epoch, epochs, inputs, labels) -> dict:
        if stage.sample_order == "natural":
            order = np.arange(len(labels))
        else:
            generator = torch.Generator().manual_seed(derived_seed(self.config.seed, "order", stage.name, epoch))
            order = torch.randperm(len(labels), generator=generator).numpy()
        count = len(order)
        if self.config.dry_run:
            count = min(count, 2 * self.config.batch_size)
        with self._bar(count, f"[{index + 1}/{len(self.model.stages)}] {stage.name} "
                              f"epoch {epoch + 1}/{epochs}") as bar:
            done = [0]

            def after_batch(size, totals):
                fault_point("batch")
                bar.update(size)
                done[0] += size
                if "correct" in totals:
                    bar.set_postfix(acc=f"{totals['correct'] / done[0]:.3f}")
            totals = run_epoch(stage, inputs, labels, order[:count], self.config.batch_size, self.device,
                               epoch, self.config.rank, self.config.world, after_batch)
        try:
            ended = stage.end_epoch(lambda: (self.nodes.get("val", stage.input_node, stage.needs),
                                             self.splits["val"].labels))
        except ValueError as error:     # e.g. a readout without spiking samples of two classes
            raise UserError(f"{stage.name}: {error}") from None
        row = {"train_samples": count}
        if "correct" in totals:
            row.update(train_hit=totals["correct"] / count, train_miss=totals["wrong"] / count,
                       train_silence=totals["silent"] / count)
        row.update(ended)
        return row

    def _validate(self, stage, row) -> bool:
        labels, predictions, _ = self.evaluate("val", stage.input_node, stage.needs, sharded=True)
        # a stage that measured it while fitting (a readout choosing its C) reports its own
        accuracy = row.get("val_accuracy", float((predictions == labels).mean()))
        earlier = [r["val_accuracy"] for r in self.state.history if r["stage"] == stage.name and "val_accuracy" in r]
        smoothed = float(np.median((earlier + [accuracy])[-self.config.smoothing:]))
        row.update(val_accuracy=accuracy, val_smoothed=smoothed, val_silence=float((predictions < 0).mean()))
        # the best epoch: highest validation accuracy, then highest training hit rate (a 12-row
        # validation split ties across most epochs; the first of them is rarely the best trained).
        # Patience counts epochs without a new maximum of the median validation accuracy of the
        # last `smoothing` epochs: a lucky or unlucky epoch (a 6k split has a standard error of
        # ~0.3 points) neither resets nor ends it, and a curve that still rises keeps setting
        # new maxima.
        hit = row.get("train_hit", -1.0)
        improved = smoothed > self.state.best_smoothed
        self.state.best_smoothed = max(smoothed, self.state.best_smoothed)
        if (accuracy, hit) > (self.state.best_val, self.state.best_train_hit):
            self.state.best_val, self.state.best_train_hit = accuracy, hit
            self.state.best_epoch = row["epoch"]
            # best before last: a crash between the two leaves last.ckpt pointing at an older best
            self.save("best.ckpt", best_epoch=row["epoch"])
        self.state.bad_epochs = 0 if improved else self.state.bad_epochs + 1
        return self.state.bad_epochs >= self.config.patience

    @torch.no_grad()
    def _activity(self, stage) -> float | None:
        """The stage's output spike rate on up to 256 validation images (None: no spiking output)."""
        probe = self.nodes.get("val", stage.input_node, "final")[:256]
        return stage.activity(as_tensor(probe).to(self.device).float())

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str, start: int = 0, kind: str = "final", sharded: bool = False):
        """Decisions on a split from node `start`. Returns (labels, predictions, class scores).

        `sharded` (data-parallel): each rank predicts its contiguous part and all ranks gather
        the whole (every rank calls it)."""
        inputs = self.nodes.get(split, start, kind)
        if sharded and self.config.world > 1:
            import torch.distributed as dist
            part = shard(np.arange(len(inputs)), self.config.rank, self.config.world)
            inputs = inputs[part[0]:part[-1] + 1] if len(part) else inputs[:0]
        predictions, scores = [], []
        batch = self.config.eval_batch_size
        self.model.eval()
        self.model.start_evaluation(split)
        for begin in range(0, len(inputs), batch):
            x = as_tensor((inputs[begin:begin + batch])).to(self.device)
            prediction = self.model.predict(x, start=start, final=kind == "final")
            predictions.append(prediction.classes.cpu().numpy())
            scores.append(prediction.scores.float().cpu().numpy())
        predictions = np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)
        scores = np.concatenate(scores) if scores else np.zeros((0, self.model.num_classes), np.float32)
        if sharded and self.config.world > 1:
            parts = [None] * self.config.world
            dist.all_gather_object(parts, (predictions, scores))
            predictions = np.concatenate([p for p, _ in parts])
            scores = np.concatenate([s for _, s in parts if len(s)] or [scores])
        return self.splits[split].labels, predictions, scores

    def test(self) -> dict:
        """Evaluate the model as it is on the test split (once per reported number), write the
        run's final outputs and return the metrics (what `--eval-only` runs on a checkpoint):
        `evaluation.test_report`."""
        return test_report(self)

    def _bar(self, total: int, description: str):
        return tqdm(total=total, desc=description, unit="img", unit_scale=True, leave=False,
                    disable=None if self.config.progress is None else not self.config.progress)


def run_epoch(stage, inputs, labels, order, batch_size: int, device=torch.device("cpu"), epoch: int = 0,
              rank: int = 0, world: int = 1, after_batch=None) -> dict:
    """One training epoch of `stage` (no I/O): `start_epoch`, then `step` on consecutive batches
    of `order` (indices into `inputs` [N, ...] and `labels` [N]) of at most `batch_size` and
    `stage.limit()` samples. Data-parallel (`world > 1`), each rank steps on its contiguous shard
    of every global batch unless the stage is replicated. `after_batch(size, totals)` is called
    after each batch. Returns the steps' counts summed over the epoch ({"correct": ..., ...})."""
    count = len(order)
    totals = {}
    stage.start_epoch(count, epoch=epoch)
    position = 0
    while position < count:
        size = min(batch_size, stage.limit(), count - position)
        chosen = order[position:position + size]
        if world > 1 and not stage.replicated:
            chosen = shard(chosen, rank, world)
        x = as_tensor(inputs[chosen]).to(device)
        if stage.needs == "final":
            x = x.float()
        y = as_tensor(labels[chosen]).to(device)
        for key, value in stage.step(x, y).items():
            totals[key] = totals.get(key, 0) + int(value)
        position += size
        if after_batch is not None:
            after_batch(size, totals)
    return totals


def shard(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank `rank`'s contiguous part of a global batch: sizes differ by at most one, earlier
    ranks take the larger parts, a part is empty when the batch has fewer samples than ranks;
    the parts of ranks 0..world-1 concatenated are the batch, in order."""
    return np.array_split(batch, world)[rank]


def _row_summary(row: dict) -> str:
    parts = [f"{row['stage']} epoch {row['epoch']}: {row['seconds']:.1f}s"]
    for key in ("train_hit", "val_accuracy", "spike_rate"):
        if key in row:
            parts.append(f"{key}={row[key]:.4f}")
    return ", ".join(parts)
