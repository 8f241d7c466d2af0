"""Model selection and early stopping of supervised stages: the best single epoch is kept,
and training stops when the median validation accuracy of the last `smoothing` epochs has not
reached a new maximum for `patience` epochs (so one lucky or unlucky epoch neither resets nor
ends it)."""
import numpy as np
import pytest

import models
from network_trainer import NetworkTrainer, TrainConfig


def trainer_for_validation(accuracies, patience, smoothing):
    """A NetworkTrainer whose validation returns the given accuracies, epoch after epoch."""
    model = models.create_model("mozafari2018")
    config = TrainConfig(epochs=(0, 0, len(accuracies)), patience=patience, smoothing=smoothing,
                         rank=1)                                    # rank 1 writes no files
    trainer = NetworkTrainer(model, {}, None, config, {"model": "mozafari2018"})
    labels = np.zeros(1000, dtype=np.int64)
    values = iter(accuracies)

    def evaluate(*_, **__):
        correct = int(round(next(values) * 1000))
        return labels, np.r_[np.zeros(correct), np.ones(1000 - correct)].astype(np.int64), None
    trainer.evaluate = evaluate
    return trainer


def run_validations(accuracies, patience, smoothing, hits=None):
    trainer = trainer_for_validation(accuracies, patience, smoothing)
    stage = trainer.model.stages[-1]
    for epoch, _ in enumerate(accuracies):
        row = {"stage": stage.name, "epoch": epoch + 1, "train_hit": (hits or [0.5] * len(accuracies))[epoch]}
        stop = trainer._validate(stage, row)
        trainer.state.history.append(row)
        if stop:
            return epoch + 1, trainer.state
    return None, trainer.state


def test_a_lucky_epoch_does_not_stop_a_rising_curve():
    rising = [0.80 + 0.004 * e for e in range(30)]
    rising[3] = 0.95                                                # one lucky validation
    stopped, state = run_validations(rising, patience=5, smoothing=5)
    assert stopped is None and state.best_epoch == 4                # kept the lucky one, went on
    stopped, _ = run_validations(rising, patience=5, smoothing=1)
    assert stopped == 9                                             # the raw rule stops early


def test_a_flat_noisy_curve_stops_after_patience_and_keeps_the_best_epoch():
    flat = [0.90, 0.91, 0.90, 0.92, 0.90, 0.91, 0.90, 0.91, 0.90, 0.91, 0.90, 0.91, 0.90]
    stopped, state = run_validations(flat, patience=4, smoothing=3)
    # median of 3: 0.90, 0.905, 0.90, 0.91 (epoch 4), then never above 0.91: stops at epoch 8
    assert stopped == 8 and state.best_epoch == 4 and state.best_val == pytest.approx(0.92)


def test_validation_ties_go_to_the_higher_training_hit_rate():
    stopped, state = run_validations([0.9, 0.9, 0.9], patience=10, smoothing=1, hits=[0.5, 0.7, 0.6])
    assert stopped is None and state.best_epoch == 2


def test_a_stage_that_validates_its_start_keeps_it_unless_an_epoch_beats_it(tmp_path):
    """deepr2024's conv3+decision stage refines layers trained before it: its starting weights
    are validated as epoch 0 and kept when none of its epochs validates higher."""
    import torch
    from network_trainer import Split
    from run_folder import RunDirectory
    torch.manual_seed(0)
    model = models.create_model("deepr2024", num_classes=3, settings={"frontend.time_steps": 6})
    images = (torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    times = model.frontend.build()(images).numpy()
    labels = np.arange(24) % 3
    splits = {name: Split(times, labels) for name in ("train", "val", "test")}
    results = {}
    for name, accuracies in (("start kept", [0.9, 0.5, 0.6]), ("epoch kept", [0.5, 0.6, 0.9])):
        torch.manual_seed(0)
        model = models.create_model("deepr2024", num_classes=3, settings={"frontend.time_steps": 6})
        config = TrainConfig(epochs=(0, 0, 0, 0, 2), patience=10, smoothing=1, probe_samples=0,
                             feature_images=False, progress=False)
        trainer = NetworkTrainer(model, splits, RunDirectory.create(str(tmp_path), name.replace(" ", "-")),
                                 config, {"model": "deepr2024"}, log=lambda *_: None)
        real, values = trainer.evaluate, iter(accuracies)

        def evaluate(split, *args, real=real, values=values, **kwargs):
            if split != "val":
                return real(split, *args, **kwargs)
            correct = int(round(next(values) * 100))
            return np.zeros(100, np.int64), np.r_[np.zeros(correct), np.ones(100 - correct)].astype(np.int64), None
        trainer.evaluate = evaluate
        start = model.blocks[2].conv.weight.clone()
        trainer._train_stage(4, model.stages[4])
        rows = [r for r in trainer.state.history if r["stage"] == "conv3+decision"]
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        results[name] = (trainer.state.selected["conv3+decision"]["epoch"], model.blocks[2].conv.weight.clone(), start)
    epoch, weight, start = results["start kept"]
    assert epoch == 0 and torch.equal(weight, start)
    epoch, weight, start = results["epoch kept"]
    assert epoch == 2 and not torch.equal(weight, start)


def test_a_tie_with_the_validated_start_keeps_the_start(tmp_path):
    import torch
    from network_trainer import Split
    from run_folder import RunDirectory
    torch.manual_seed(0)
    model = models.create_model("deepr2024", num_classes=3, settings={"frontend.time_steps": 6})
    images = (torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    times = model.frontend.build()(images).numpy()
    splits = {name: Split(times, np.arange(24) % 3) for name in ("train", "val", "test")}
    config = TrainConfig(epochs=(0, 0, 0, 0, 1), patience=10, smoothing=1, probe_samples=0,
                         feature_images=False, progress=False)
    trainer = NetworkTrainer(model, splits, RunDirectory.create(str(tmp_path), "tie"), config,
                             {"model": "deepr2024"}, log=lambda *_: None)
    real = trainer.evaluate

    def evaluate(split, *args, **kwargs):
        if split != "val":
            return real(split, *args, **kwargs)
        return np.zeros(10, np.int64), np.r_[np.zeros(7), np.ones(3)].astype(np.int64), None   # 0.7 always
    trainer.evaluate = evaluate
    start = model.blocks[2].conv.weight.clone()
    trainer._train_stage(4, model.stages[4])
    assert trainer.state.selected["conv3+decision"]["epoch"] == 0 and torch.equal(model.blocks[2].conv.weight, start)
    assert trainer.state.elapsed["conv3+decision"] > 0
