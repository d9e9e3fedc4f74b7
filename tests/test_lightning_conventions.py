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
    pytest.importorskip("tensorboard")
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
    # the class as jsonargparse resolved it, with the arguments given (not every default: farm's own still apply)
    assert cfg["lr_scheduler"] == {
        "class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "init_args": {"T_max": 2},
    }
    assert cfg["trainer"]["callbacks"] == [
        {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {}}
    ]
    assert cfg["trainer"]["logger"] == {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {}}
    with open(logged_run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"lr-Adam/model", "lr-Adam/id_tables"} <= set(rows[0])  # the id tables have a group (and decay) of their own
    lrs = [float(row["lr-Adam/model"]) for row in rows if row.get("lr-Adam/model")]
    assert lrs and lrs[0] == pytest.approx(1e-3) and min(lrs) < 1e-3  # LearningRateMonitor saw the cosine decay


def test_the_run_config_reproduces_the_settings(logged_run):
    r = runner.invoke(app, ["train", "--config", str(logged_run / "config.yaml"), "--print-config"])
    assert r.exit_code == 0, r.output
    again = yaml.safe_load(r.output)
    assert again == yaml.safe_load((logged_run / "config.yaml").read_text())


def test_a_logger_beside_the_runs_own_log(tmp_path):
    pytest.importorskip("tensorboard")
    r = runner.invoke(
        app,
        ["train", *FAST, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
        + ["--trainer.logger", "TensorBoardLogger"]
        + ["--trainer.callbacks+={class_path: ModelCheckpoint, init_args: {filename: mine}}"]
        + ["--fit.runs_dir", str(tmp_path), "--fit.name", "two"],
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "two"
    # each logger in a folder of its own under RUN/logs/, no version folders, no v_num in the bar
    events = list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(b"hp_metric" not in e.read_bytes() for e in events)  # no placeholder hp_metric of -1
    assert not list(run.rglob("version_*"))
    assert "v_num" not in r.output
    # the post-fit test reaches every logger; a user's ModelCheckpoint writes beside farm's
    assert any(b"test/auc_mean" in e.read_bytes() for e in events)
    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("test/auc_mean") for row in rows) and any(row.get("test/uauc_like") for row in rows)
    assert (run / "checkpoints" / "mine.ckpt").is_file()


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


# ------------------------------------------------------------------ one scoring loop (the Trainer's test / predict)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("scored-runs")
    r = runner.invoke(
        app, ["train", *FAST, "--trainer.max_epochs", "1", "--fit.runs_dir", str(runs), "--fit.name", "s"]
    )
    assert r.exit_code == 0, r.output
    return runs / "s"


def _numbers(tables: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in tables.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + k] = float(v)
    return out


def test_farm_eval_reproduces_the_post_fit_test_tables(scored_run, tmp_path):
    import json
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(scored_run, run)
    saved = _numbers(json.loads((run / "eval-test.json").read_text()))
    r = runner.invoke(app, ["eval", str(run)])
    assert r.exit_code == 0, r.output
    again = _numbers(json.loads((run / "eval-test.json").read_text()))
    assert saved.keys() == again.keys() and any(k.endswith(".auc") for k in saved)
    for k, v in saved.items():
        assert again[k] == pytest.approx(v, abs=1e-6), k


def test_farm_predict_equals_eval_saved_predictions(scored_run, tmp_path):
    import numpy as np
    import polars as pl

    from farmcli.batch import TASKS

    r = runner.invoke(app, ["eval", str(scored_run), "--save-predictions", str(tmp_path / "e.parquet")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["predict", str(scored_run), "--out", str(tmp_path / "p.parquet"), "--batch-size", "100"])
    assert r.exit_code == 0, r.output
    e, p = pl.read_parquet(tmp_path / "e.parquet"), pl.read_parquet(tmp_path / "p.parquet")
    assert e.height == p.height > 0
    for c in ("user_id", "author_id", "ts"):
        assert e[c].to_list() == p[c].to_list(), c
    for t in TASKS:
        np.testing.assert_allclose(e[f"p_{t}"].to_numpy(), p[f"p_{t}"].to_numpy(), atol=1e-6, err_msg=t)


def test_eval_and_predict_run_in_the_trainer_at_its_precision(scored_run, tmp_path, monkeypatch):
    import torch

    from farmcli.model.module import FarmModule

    seen: list[tuple[str, bool]] = []
    for hook in ("test_step", "predict_step"):
        real = getattr(FarmModule, hook)

        def spy(self, *args, _real=real, _hook=hook, **kwargs):
            seen.append((_hook, torch.is_autocast_enabled("cpu")))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(FarmModule, hook, spy)
    assert runner.invoke(app, ["eval", str(scored_run), "--bf16"]).exit_code == 0
    assert runner.invoke(app, ["predict", str(scored_run), "--out", str(tmp_path / "p.parquet")]).exit_code == 0
    assert {h for h, _ in seen} == {"test_step", "predict_step"}
    assert all(bf16 for h, bf16 in seen if h == "test_step")  # --bf16: the Trainer's bf16-mixed precision
    assert not any(bf16 for h, bf16 in seen if h == "predict_step")


def test_the_post_fit_test_runs_in_the_fit_trainer(tmp_path, monkeypatch):
    import torch

    from farmcli.model.module import FarmModule

    seen: list[bool] = []
    real = FarmModule.test_step
    monkeypatch.setattr(
        FarmModule,
        "test_step",
        lambda self, *a, **k: seen.append(torch.is_autocast_enabled("cpu")) or real(self, *a, **k),
    )
    r = runner.invoke(
        app,
        ["train", *FAST, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
        + ["--trainer.precision", "bf16-mixed", "--fit.runs_dir", str(tmp_path), "--fit.name", "bf"],
    )
    assert r.exit_code == 0, r.output
    assert seen and all(seen)  # valid and test scored under the run's bf16-mixed
    assert (tmp_path / "bf" / "eval-test.json").is_file() and (tmp_path / "bf" / "eval-valid.json").is_file()


# ------------------------------------------------------------------ slot components as LightningCLI names them


def _printed(*args: str) -> dict:
    r = runner.invoke(app, ["train", "--data", "tiny", "--print-config", *args])
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.output)


@pytest.mark.parametrize(
    "args",
    [
        ["--model.head", "mmoe", "--model.head.experts", "3"],
        ["--model.head.experts", "3", "--model.head", "mmoe"],
        ["--model.head.class_path", "mmoe", "--model.head.init_args.experts", "3"],
        ["--model.head", "{class_path: mmoe, init_args: {experts: 3}}"],
    ],
)
def test_a_slot_takes_class_path_and_init_args_and_drops_the_old_parameters(args):
    head = _printed(*args)["model"]["head"]
    assert head["name"] == "mmoe" and head["params"]["experts"] == 3
    assert "levels" not in head["params"]  # the PLE's parameters went with it


def test_a_slot_takes_an_import_path():
    from farmcli.config import resolve
    from farmcli.model import FARM

    path = "farmcli.model.fuse.CrossAttentionFuse"
    cfg = resolve(overrides=["--model.fuse", path, "--model.fuse.heads", "2"])
    assert cfg.model.fuse.name == path and cfg.model.fuse.params["heads"] == 2
    farm = FARM(cfg.model, {"author": 5, "page": 5, "tag": 5, "cluster": 5, "user": 5})
    assert type(farm.fuse).__name__ == "CrossAttentionFuse"
    r = runner.invoke(app, ["train", "--data", "tiny", "--print-config", "--model.fuse", "no_such.pkg.Fuse"])
    assert r.exit_code == 2 and "cannot import" in r.output and "Traceback" not in r.output


def test_the_config_check_builds_no_model(monkeypatch):
    from farmcli.config import resolve
    from farmcli.model import FARM

    def refuse(*a, **k):
        raise AssertionError("the config check built a model")

    monkeypatch.setattr(FARM, "__init__", refuse)
    resolve(variant="farm", overrides=["--model.fuse.heads", "2"])
    with pytest.raises(Exception, match="model.fuse.heads = 5"):  # a rule between parameters, still checked
        resolve(overrides=["--model.fuse.heads", "5"])
