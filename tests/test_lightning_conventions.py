"""Loggers, callbacks and learning-rate schedulers as a LightningCLI user names them, kept in config.yaml."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()
FAST = ["--data", "tiny", "--config", str(Path(__file__).with_name("tiny-model.yaml"))]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    pytest.importorskip("tensorboardX")
    runs = tmp_path_factory.mktemp("lightning-runs")
    r = runner.invoke(
        app,
        [
            "train",
            *FAST,
            "--trainer.max_epochs",
            "2",
            "--trainer.logger",
            "TensorBoardLogger",
            "--lr_scheduler",
            "CosineAnnealingLR",
            "--lr_scheduler.T_max",
            "2",
            "--trainer.callbacks",
            "LearningRateMonitor",
            "--fit.runs_dir",
            str(runs),
            "--fit.name",
            "tb",
        ],
    )
    assert r.exit_code == 0, r.output
    return runs / "tb"


def test_a_tensorboard_logger_writes_event_files_under_the_run(logged_run):
    assert list(logged_run.rglob("events.out.tfevents.*"))
    assert (logged_run / "logs" / "metrics.csv").is_file()  # the run's own log is kept beside it


def test_the_scheduler_and_the_callback_take_effect_and_are_in_config_yaml(logged_run):
    cfg = yaml.safe_load((logged_run / "config.yaml").read_text())
    assert cfg["lr_scheduler"] == {"class_path": "CosineAnnealingLR", "init_args": {"T_max": 2}}
    assert cfg["trainer"]["callbacks"] == [{"class_path": "LearningRateMonitor", "init_args": {}}]
    assert cfg["trainer"]["logger"] == [{"class_path": "TensorBoardLogger", "init_args": {}}]
    with open(logged_run / "logs" / "metrics.csv") as f:
        lrs = [float(row["lr-Adam"]) for row in csv.DictReader(f) if row.get("lr-Adam")]
    assert lrs and lrs[0] == pytest.approx(1e-3) and min(lrs) < 1e-3  # LearningRateMonitor saw the cosine decay


def test_the_run_config_reproduces_the_settings(logged_run):
    r = runner.invoke(app, ["train", "--config", str(logged_run / "config.yaml"), "--print-config"])
    assert r.exit_code == 0, r.output
    again = yaml.safe_load(r.output)
    assert again == yaml.safe_load((logged_run / "config.yaml").read_text())


def test_several_loggers_at_once(tmp_path):
    pytest.importorskip("tensorboardX")
    r = runner.invoke(
        app,
        ["train", *FAST, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
        + ["--trainer.logger", "[TensorBoardLogger, {class_path: CSVLogger, init_args: {name: extra}}]"]
        + ["--fit.runs_dir", str(tmp_path), "--fit.name", "two"],
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "two"
    assert list(run.rglob("events.out.tfevents.*")) and list((run / "extra").rglob("metrics.csv"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["--trainer.logger", "TensorBoardLoger"], ("trainer.logger", "Did you mean 'TensorBoardLogger'")),
        (["--trainer.callbacks", "EarlyStoping"], ("trainer.callbacks", "EarlyStopping")),
        (["--lr_scheduler", "CosineAnnealingLR", "--lr_scheduler.Tmax", "2"], ("Tmax", "Did you mean 'T_max'")),
        (["--lr_scheduler", "Adam"], ("lr_scheduler", "is not a LRScheduler")),
        (["--lr_scheduler", "[1, 2]"], ("lr_scheduler",)),
    ],
)
def test_a_bad_class_or_argument_is_named_before_any_work(args, words, tmp_path):
    r = runner.invoke(app, ["train", *FAST, *args, "--fit.runs_dir", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)
    assert not any(tmp_path.iterdir())
