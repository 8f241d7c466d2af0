"""compare.py on two tiny runs: table, markdown, figure; reruns skip finished runs."""
import csv
import os

import pytest

import compare

pytestmark = pytest.mark.cli       # end-to-end runs of the CLI (deselect: -m 'not cli')


def test_compare_trains_two_models_and_writes_the_table(tmp_path, capsys):
    common = ["--dataset", "synthetic", "--dry-run", "--no-progress", "--cache-dir", str(tmp_path / "cache"),
              "--threads", "2", "--batch-size", "16", "--probe-samples", "0"]
    out = tmp_path / "sweep"
    rows = compare.main(["--models", "mozafari2018", "majority2024", "--out-dir", str(out)] + common)
    assert [r["model"] for r in rows] == ["mozafari2018", "majority2024"]
    for name in ("comparison.csv", "comparison.md", "comparison.png"):
        assert (out / name).is_file()
    table = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["run"] for r in table] == ["mozafari2018-seed0", "majority2024-seed0"]
    for row in table:
        assert 0 <= float(row["test_accuracy"]) <= 1 and int(row["parameters"]) > 0
        assert float(row["inference_img_per_s"]) > 0 and float(row["train_seconds"]) > 0
        assert row["stages"].startswith("conv1 conv2") and row["readout"] == "rstdp"
    printed = capsys.readouterr().out
    assert "| run | model |" in printed and "majority2024-seed0" in printed
    before = os.path.getmtime(out / "mozafari2018-seed0" / "metrics.json")
    again = compare.main(["--models", "mozafari2018", "--out-dir", str(out), "--out", str(tmp_path / "again")] + common)
    assert os.path.getmtime(out / "mozafari2018-seed0" / "metrics.json") == before      # skipped
    assert again[0]["test_accuracy"] == rows[0]["test_accuracy"]
    from_dirs = compare.main([str(out / "mozafari2018-seed0"), "--out", str(tmp_path / "dirs")])
    assert from_dirs[0]["macro_f1"] == rows[0]["macro_f1"]


def test_compare_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main([])
    assert "give run folders or --models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path)])
    assert "is not a finished run" in capsys.readouterr().err


def test_the_settings_column_says_what_differs_from_todays_defaults(tmp_path):
    """A run's row names the settings it ran with that differ from the model's defaults now:
    its own --set values, and a default changed since it ran (conv3.pool here)."""
    import json

    import models
    hyperparameters = json.loads(json.dumps(models.create_model("deep2024").hyperparameters()))
    hyperparameters["conv3"]["pool"] = 3                        # an older default
    hyperparameters["decision"]["reward"] = [0.01, -0.005]      # a --set
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "deep2024", "hyperparameters": hyperparameters,
                                                    "run": {"settings": ["decision.reward=(0.01,-0.005)"]}}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    assert compare.summarize(str(folder))["settings"] == "conv3.pool=3 decision.reward=[0.01,-0.005]"
    (folder / "config.json").write_text(json.dumps({"model": "gone2023", "hyperparameters": hyperparameters,
                                                    "run": {"settings": ["x=1"]}}))
    assert compare.summarize(str(folder))["settings"] == "x=1"


def test_configurations_put_the_seeds_of_one_setting_together(tmp_path):
    def row(run, seed, accuracy, readout, settings="", probes=None):
        return {"run": run, "model": "deep2024", "readout": "rstdp", "settings": settings, "seed": seed,
                "test_accuracy": accuracy, "also_readout_accuracy": readout, "macro_f1": accuracy,
                "train_seconds": 100.0 * (seed + 1), "inference_img_per_s": 1000.0,
                "probes": probes or {"conv1": 0.9, "conv2": 0.8 + seed / 10},
                "per_class_f1": {"0": accuracy, "1": readout}}
    rows = [row("a-seed0", 0, 0.90, 0.96), row("b-seed0", 0, 0.80, None, "conv3.pool=3"),
            row("a-seed1", 1, 0.94, 0.97)]
    first, second = compare.configurations(rows)
    assert first["configuration"] == "deep2024" and first["runs"] == "a-seed0 a-seed1" and first["seeds"] == "0 1"
    assert first["test_accuracy"] == "0.9000 0.9400"
    assert first["mean_test_accuracy"] == pytest.approx(0.92)
    assert first["mean_gap"] == pytest.approx(0.045)              # (0.06 + 0.03) / 2
    assert first["probes"] == pytest.approx({"conv1": 0.9, "conv2": 0.85})
    assert first["mean_train_seconds"] == pytest.approx(150.0)
    assert second["configuration"] == "deep2024 [conv3.pool=3]" and second["mean_gap"] is None
    table = compare.write_outputs(rows, str(tmp_path / "out"))
    assert "By configuration" in table and "| deep2024 | a-seed0 a-seed1 | 0 1 |" in table
    assert (tmp_path / "out" / "comparison.png").is_file()


def test_a_runs_row_takes_the_last_stage_in_training_order(tmp_path):
    """metrics.json sorts its keys ("conv3+decision" before "decision"); the row follows the
    run's stage order: the validation accuracy is the last supervised stage's."""
    import json
    folder = tmp_path / "deepr"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model": "gone2023", "stages": [
        ["conv3", "stdp"], ["decision", "rstdp"], ["conv3+decision", "rstdp"]]}))
    (folder / "metrics.json").write_text(json.dumps({
        "accuracy": 0.9, "selected_epochs": {"decision": {"val_accuracy": 0.5}, "conv3+decision": {"val_accuracy": 0.7}},
        "stage_seconds": {"conv3": 1.0, "decision": 2.0, "conv3+decision": 3.0}}, sort_keys=True))
    row = compare.summarize(str(folder))
    assert row["val_accuracy"] == 0.7 and row["stages"] == "conv3 decision conv3+decision" and row["train_seconds"] == 6.0
