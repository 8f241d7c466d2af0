"""Scale-out: data-parallel training (train.py --nproc) and sweeps (local pool, Ray)."""
import csv
import importlib.util
import json
import os
import tarfile

import numpy as np
import pytest
import torch

import compare
import sweep
import train
from network_trainer import shard
from checkpoints import load_checkpoint


@pytest.mark.parametrize("size,world", [(32, 2), (17, 3), (2, 4), (1, 2), (0, 2)])
def test_shards_cover_each_global_batch_exactly_once_in_order(size, world):
    batch = np.random.RandomState(size).permutation(100)[:size]
    parts = [shard(batch, rank, world) for rank in range(world)]
    assert np.array_equal(np.concatenate(parts), batch)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_every_stage_accepts_an_empty_shard():
    """A rank whose shard is empty still makes the learning calls (and their all-reduces)."""
    import models
    for name in ("mozafari2018", "deepr2024", "majority2024", "kheradpisheh2018"):
        model = models.create_model(name)
        shapes = model.node_shapes(model.frontend.output_shape((1, 28, 28)))
        for stage in model.stages:
            if stage.kind == "readout":
                continue
            dtype = torch.uint8 if stage.needs == "times" else torch.float32
            shape = tuple(shapes[stage.input_node])
            stage.start_epoch(10)
            # one real sample first: the first update also clamps weights drawn outside the bounds
            stage.step(torch.zeros((1,) + shape, dtype=dtype), torch.zeros(1, dtype=torch.long))
            before = {k: v.clone() for k, v in model.state_dict().items()}
            stats = stage.step(torch.zeros((0,) + shape, dtype=dtype), torch.zeros(0, dtype=torch.long))
            assert all(int(v) == 0 for v in stats.values()), (name, stage.name, stats)
            for key, value in model.state_dict().items():
                assert torch.equal(value, before[key]), (name, stage.name, key)


def _train_args(tmp_path, cache, name, *extra):
    return ["--model", "mozafari2018", "--dataset", "synthetic", "--epochs", "1", "1", "2",
            "--batch-size", "16", "--out-dir", str(tmp_path), "--run-name", name, "--cache-dir", cache,
            "--no-progress", "--threads", "1", *extra]


@pytest.mark.cli
def test_two_processes_train_the_same_weights_as_one_in_summed_mode(tmp_path):
    """Summed updates: N processes compute exactly what one process computes."""
    cache = str(tmp_path / "cache")
    single = train.main(_train_args(tmp_path, cache, "one", "--batch-update", "sum"))
    double = train.main(_train_args(tmp_path, cache, "two", "--nproc", "2", "--batch-update", "sum"))
    assert double["run_dir"] == str(tmp_path / "two") and double["accuracy"] == single["accuracy"]
    a = load_checkpoint(str(tmp_path / "one" / "checkpoints" / "last.ckpt"))
    b = load_checkpoint(str(tmp_path / "two" / "checkpoints" / "last.ckpt"))
    moved = 0
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-5), key
    initial = train.models.create_model("mozafari2018")
    for key in ("blocks.0.conv.weight", "blocks.1.conv.weight", "blocks.2.conv.weight"):
        moved += not torch.equal(a["state_dict"][key], initial.state_dict()[key])
    assert moved == 3                                   # every layer did learn
    assert a["trainer"]["history"][-1]["train_hit"] == b["trainer"]["history"][-1]["train_hit"]
    # only rank 0 wrote: one folder per run, nothing else beside them
    assert sorted(os.listdir(tmp_path)) == ["cache", "one", "two"]
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def _summed_change_rank(rank, world, port, results):
    import torch.distributed as dist
    from spiking import parallel
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        weight = torch.tensor([0.5, 0.5, 0.9, 0.1])
        with parallel.summed_across_ranks():
            with parallel.summed_change(weight, 0.0, 1.0):
                assert not parallel.active()            # updates stay on this rank inside
                weight[rank] += 0.25                     # rank 0 moves element 0, rank 1 element 1
                weight[2] += 0.1                         # both push element 2 past the bound
                weight[3] -= 0.05 * (rank + 1)
            assert parallel.active()
        results[rank] = weight.tolist()
    finally:
        dist.destroy_process_group()


def test_exact_data_parallel_sums_the_ranks_sequential_changes():
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_summed_change_rank, args=(2, port, results), nprocs=2, join=True)
    # W0 + sum of both ranks' changes, clamped: [0.75, 0.75, min(0.9 + 0.2, 1), 0.1 - 0.15 -> 0]
    for rank in range(2):
        assert results[rank] == pytest.approx([0.75, 0.75, 1.0, 0.0])


@pytest.mark.cli
def test_two_processes_train_in_exact_mode(tmp_path):
    """Exact updates: each rank learns its shard sample by sample; the changes are summed."""
    cache = str(tmp_path / "cache")
    result = train.main(_train_args(tmp_path, cache, "two", "--nproc", "2"))
    state = load_checkpoint(str(tmp_path / "two" / "checkpoints" / "last.ckpt"))["state_dict"]
    initial = train.models.create_model("mozafari2018")
    assert result["accuracy"] == json.load(open(tmp_path / "two" / "metrics.json"))["accuracy"]
    for key in ("blocks.0.conv.weight", "blocks.1.conv.weight", "blocks.2.conv.weight"):
        assert not torch.equal(state[key], initial.state_dict()[key]), key


@pytest.mark.cli
def test_nproc_refuses_serial_learners_in_one_line(tmp_path, capfd):
    with pytest.raises(SystemExit) as stop:
        train.main(["--model", "itsadeepizza2023", "--dataset", "iris", "--nproc", "2", "--threads", "1",
                    "--out-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capfd.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "cannot be trained data-parallel" in err


def test_sweep_plans_the_grid_and_splits_values():
    assert sweep.split_values("1,(2, 3),'a,b'") == ["1", "(2, 3)", "'a,b'"]
    specs = sweep.plan_runs(["m"], [0, 1], sweep.parse_sweep_settings(["conv1.threshold=10,15", "post=own"]),
                            ["--dataset", "iris"])
    assert [s.name for s in specs] == ["m-conv1.threshold10-postown-seed0", "m-conv1.threshold10-postown-seed1",
                                       "m-conv1.threshold15-postown-seed0", "m-conv1.threshold15-postown-seed1"]
    assert specs[2].argv == ("--model", "m", "--seed", "0", "--set", "conv1.threshold=15", "--set", "post=own",
                             "--dataset", "iris")
    with pytest.raises(sweep.UserError):
        sweep.split_values("1,,2")
    # compare.py forwards train.py's options; paths become absolute for runs that execute elsewhere
    mine, forward = sweep.split_train_args(["--models", "m", "--init-from", "runs/a", "--epochs", "0", "0", "9",
                                            "--cache-dir=c"], {"--models"})
    assert mine == ["--models", "m"] and forward == ["--init-from", "runs/a", "--epochs", "0", "0", "9", "--cache-dir=c"]
    assert sweep.absolute_paths(forward) == ["--init-from", os.path.abspath("runs/a"), "--epochs", "0", "0", "9",
                                             "--cache-dir=" + os.path.abspath("c")]


def _sweep(tmp_path, name, *extra):
    out = tmp_path / name
    argv = ["--models", "mozafari2018", "--set", "conv1.threshold=12,15", "--out-dir", str(out),
            "--dataset", "synthetic", "--dry-run", "--no-progress", "--batch-size", "16",
            "--cache-dir", str(tmp_path / "cache"), *extra]
    compare.main(argv)
    return list(csv.DictReader(open(out / "comparison.csv")))


SAME = ("run", "model", "settings", "seed", "parameters", "val_accuracy", "test_accuracy", "macro_f1")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
@pytest.mark.cli
def test_local_pool_and_ray_give_the_same_summary(tmp_path):
    import ray
    pool = _sweep(tmp_path, "pool", "--max-parallel", "2")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = _sweep(tmp_path, "ray", "--ray-address", "auto")
    finally:
        ray.shutdown()
    assert [r["run"] for r in pool] == ["mozafari2018-conv1.threshold12-seed0", "mozafari2018-conv1.threshold15-seed0"]
    assert [{k: r[k] for k in SAME} for r in pool] == [{k: r[k] for k in SAME} for r in remote]
    for row in remote:          # unpacked under the sweep root, complete
        assert (tmp_path / "ray" / row["run"] / "checkpoints" / "best.ckpt").is_file()
    # a rerun skips finished runs (no Ray needed for that)
    before = os.path.getmtime(tmp_path / "ray" / remote[0]["run"] / "metrics.json")
    again = _sweep(tmp_path, "ray")
    assert os.path.getmtime(tmp_path / "ray" / remote[0]["run"] / "metrics.json") == before
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in remote]


def test_resumed_sweep_runs_keep_their_runtime_flags():
    argv = ["--model", "m", "--nproc", "2", "--device=cpu", "--epochs", "1", "2", "--data-root", "/x",
            "--no-progress", "--threads", "4"]
    assert sweep.resumable_args(argv) == ["--nproc", "2", "--device=cpu", "--data-root", "/x", "--no-progress"]


def test_unpack_replaces_an_older_folder_only_when_complete(tmp_path):
    (tmp_path / "src" / "run").mkdir(parents=True)
    (tmp_path / "src" / "run" / "metrics.json").write_text("new")
    blob = sweep.pack_folder(str(tmp_path / "src" / "run"))
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "run" / "partial.ckpt").write_text("old")
    with pytest.raises((EOFError, tarfile.TarError)):
        sweep.unpack_folder(blob[: len(blob) // 2], str(root), "run")        # truncated archive
    assert (root / "run" / "partial.ckpt").read_text() == "old"
    sweep.unpack_folder(blob, str(root), "run")
    assert os.listdir(root) == ["run"] and os.listdir(root / "run") == ["metrics.json"]


@pytest.mark.cli
def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, capsys):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as stop:
        compare.main(["--models", "mozafari2018", "kheradpisheh2018", "--set", "adaptive_window=500",
                      "--out-dir", str(out), "--dataset", "synthetic", "--dry-run", "--no-progress",
                      "--batch-size", "16", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "kheradpisheh2018-adaptive_window500-seed0: failed" in err
    assert "rerun the same command" in err
    assert [r["run"] for r in csv.DictReader(open(out / "comparison.csv"))] == ["mozafari2018-adaptive_window500-seed0"]
