"""Fault injection: kill -9 at chosen moments and resume, corruption, full disk, races, fuzzing.

Kills use the `SNN_FAULT=point:N` hook (utils.fault_point): the process SIGKILLs itself the N-th
time it reaches `point`, exactly as a crash there would. The long randomized soak (kills at
random wall-clock moments) is marked slow: `python -m pytest -m slow tests/test_faults.py`.
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from checkpoints import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.cli       # end-to-end runs of the CLI (deselect: -m 'not cli')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--dataset", "synthetic", "--epochs", "1", "1", "3", "--patience", "2", "--batch-size", "16",
        "--threads", "1", "--no-progress", "--probe-samples", "0"]


def launch(argv, fault=None, **kwargs):
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("SNN_FAULT", None)
    if fault:
        env["SNN_FAULT"] = fault
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + argv, cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def run(argv, fault=None, timeout=300):
    process = launch(argv, fault)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def outcome(run_dir):
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    metrics = {k: v for k, v in metrics.items() if "seconds" not in k and k != "inference_img_per_s"}
    state = load_checkpoint(os.path.join(run_dir, "checkpoints", "last.ckpt"))["state_dict"]
    return metrics, state


def same(a, b):
    (metrics_a, state_a), (metrics_b, state_b) = a, b
    return metrics_a == metrics_b and state_a.keys() == state_b.keys() and \
        all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-reference")
    code, _, err = run(ARGS + ["--out-dir", str(root), "--run-name", "whole", "--cache-dir", str(root / "cache")])
    assert code == 0, err
    return outcome(root / "whole")


@pytest.mark.parametrize("fault", ["write:6", "batch:40", "encode:1"])
def test_kill_then_resume_equals_uninterrupted(reference, tmp_path, fault):
    """SIGKILL halfway through the 6th file write (a checkpoint), during an R-STDP batch, and
    during encoding with an empty cache; `--resume` then finishes with identical weights and
    metrics, and no half-written file is ever read."""
    argv = ARGS + ["--out-dir", str(tmp_path), "--run-name", "cut", "--cache-dir", str(tmp_path / "cache")]
    code, _, _ = run(argv, fault)
    assert code == -signal.SIGKILL
    if fault.startswith("write"):
        assert any(".tmp" in name for _, _, names in os.walk(tmp_path / "cut") for name in names)
    code, out, err = run(["--resume", str(tmp_path / "cut"), "--no-progress", "--threads", "1"])
    assert code == 0, err
    assert same(outcome(tmp_path / "cut"), reference)
    assert not any(".tmp" in name for _, _, names in os.walk(tmp_path / "cut") for name in names)


def test_corrupted_and_foreign_checkpoints_are_refused(tmp_path, capsys):
    good = tmp_path / "run"
    train.main(["--dataset", "synthetic", "--dry-run", "--out-dir", str(tmp_path), "--run-name", "run",
                "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    blob = (good / "checkpoints" / "best.ckpt").read_bytes()
    payload = load_checkpoint(str(good / "checkpoints" / "best.ckpt"))
    cases = {"truncated": blob[:100], "bitflip": blob[:2000] + bytes([blob[2000] ^ 1]) + blob[2001:],
             "empty": b""}
    for name, data in cases.items():
        (tmp_path / f"{name}.ckpt").write_bytes(data)
    save_checkpoint(str(tmp_path / "version.ckpt"), {**payload, "format": 99})
    save_checkpoint(str(tmp_path / "model.ckpt"), {**payload, "model": "deep2024"})
    expected = {"truncated": "corrupted or truncated", "bitflip": "corrupted or truncated",
                "empty": "not a checkpoint", "version": "unsupported format",
                "model": "do not match the model's layers"}
    for name, message in expected.items():
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--eval-only", str(tmp_path / f"{name}.ckpt"), "--out-dir", str(tmp_path),
                        "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, (name, err)
    # a corrupted last.ckpt stops a resume with one line instead of training from garbage
    (good / "checkpoints" / "last.ckpt").write_bytes(cases["bitflip"])
    with pytest.raises(SystemExit):
        train.main(["--resume", str(good), "--no-progress"])
    assert "corrupted or truncated" in capsys.readouterr().err


def test_pickled_code_in_a_checkpoint_is_never_executed(tmp_path, capsys):
    import hashlib
    import io
    from checkpoints import CHECKPOINT_MAGIC

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    buffer = io.BytesIO()
    torch.save({"format": 1, "payload": Exploit()}, buffer)
    data = buffer.getvalue()
    (tmp_path / "evil.ckpt").write_bytes(CHECKPOINT_MAGIC + hashlib.sha256(data).digest() + data)
    with pytest.raises(SystemExit):
        train.main(["--eval-only", str(tmp_path / "evil.ckpt"), "--no-progress"])
    assert "cannot be loaded as data" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_full_disk_is_a_clean_error_and_loses_nothing(tmp_path, capsys, monkeypatch):
    import utils
    argv = ARGS + ["--out-dir", str(tmp_path), "--run-name", "full", "--cache-dir", str(tmp_path / "cache")]
    original = utils.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data):
        calls["n"] += 1
        if calls["n"] == 8:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return original(path, data)

    monkeypatch.setattr(utils, "atomic_write_bytes", failing)
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "No space left on device" in err
    load_checkpoint(str(tmp_path / "full" / "checkpoints" / "last.ckpt"))      # still a good checkpoint
    monkeypatch.setattr(utils, "atomic_write_bytes", original)
    finished = train.main(["--resume", str(tmp_path / "full"), "--no-progress", "--threads", "1"])
    # nothing was lost: the resumed run ends exactly as one that never hit the full disk
    twin = train.main(ARGS + ["--out-dir", str(tmp_path), "--run-name", "twin", "--cache-dir", str(tmp_path / "cache")])
    assert finished["accuracy"] == twin["accuracy"] and finished["macro_f1"] == twin["macro_f1"]
    weights = [load_checkpoint(str(tmp_path / name / "checkpoints" / "last.ckpt"))["state_dict"]
               for name in ("full", "twin")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])


def test_unwritable_out_dir_and_concurrent_runs_with_one_name(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit):
        train.main(["--dataset", "synthetic", "--dry-run", "--out-dir", str(blocker / "runs"), "--no-progress"])
    assert "cannot create output folder" in capsys.readouterr().err
    argv = ["--dataset", "synthetic", "--dry-run", "--out-dir", str(tmp_path), "--run-name", "twin",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--threads", "1"]
    first, second = launch(argv), launch(argv)
    results = [p.communicate(timeout=300) + (p.returncode,) for p in (first, second)]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = [r for r in results if r[2] == 2][0]
    assert "already exists" in loser[1] or "in use by another process" in loser[1]
    winner = [r for r in results if r[2] == 0][0]
    accuracy = json.load(open(tmp_path / "twin" / "metrics.json"))["accuracy"]
    assert f"test accuracy {accuracy:.4f}" in winner[0]      # the folder holds the winner's results


@pytest.mark.slow
def test_soak_random_kills(tmp_path, reference):
    """Kill -9 at random wall-clock moments, resume until done; repeat for many seeds."""
    rng = random.Random(2024)
    kills = finished = 0
    for trial in range(int(os.environ.get("SOAK_TRIALS", "12"))):
        argv = ARGS + ["--out-dir", str(tmp_path), "--run-name", f"soak{trial}",
                       "--cache-dir", str(tmp_path / ("cache" if trial % 3 else f"cold{trial}"))]
        process = launch(argv)
        for _ in range(3):                       # up to three kills per run
            time.sleep(rng.uniform(0.5, 6.0))
            if process.poll() is not None:
                break
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            process = launch(["--resume", str(tmp_path / f"soak{trial}"), "--no-progress", "--threads", "1"])
        process.communicate(timeout=300)
        folder = tmp_path / f"soak{trial}"
        while process.returncode != 0:           # killed before the run folder had its config: start again
            assert not (folder / "config.json").exists() or process.returncode == -signal.SIGKILL
            if folder.exists() and not (folder / "config.json").exists():
                for path in sorted(folder.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                folder.rmdir()
            process = launch(["--resume", str(folder), "--no-progress", "--threads", "1"]
                             if folder.exists() else argv)
            process.communicate(timeout=300)
        assert process.returncode == 0
        assert same(outcome(tmp_path / f"soak{trial}"), reference)
        finished += 1
    print(f"soak: {kills} kills over {finished} runs, every run finished identical to the reference")
