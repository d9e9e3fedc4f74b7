"""End to end on the tiny preset: train, eval, reproduce, resume, a diverging run, DDP."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import TASKS

runner = CliRunner()

FAST = ["--data", "tiny", "--config", str(Path(__file__).with_name("tiny-model.yaml"))]


def train(runs, name, *extra):
    r = runner.invoke(app, ["train", *FAST, "--fit.runs_dir", str(runs), "--fit.name", name, *extra])
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


BUILDS: list[str] = []


@pytest.fixture(scope="module")
def tiny_run(runs):
    import farmcli.data.build

    real = farmcli.data.build.build_samples

    def counted(*args, **kwargs):
        store = real(*args, **kwargs)
        BUILDS.append(str(store.path))
        return store

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(farmcli.data.build, "build_samples", counted)
        r = train(runs, "r1", "--trainer.max_epochs", "2")
    assert r.exit_code == 0, r.output
    return runs / "r1"


def test_train_opens_the_sample_store_once(tiny_run):
    info = json.loads((tiny_run / "run.json").read_text())
    assert BUILDS == [info["store"]]  # not once in the command and again in the training


def test_run_directory_contents(tiny_run):
    for f in (
        "config.yaml",
        "run.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
        "eval-test.json",
        "eval-test.csv",
        "eval-valid.json",
    ):
        assert (tiny_run / f).is_file(), f
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["status"] == "finished" and info["monitor"] == "val/auc_mean"
    table = json.loads((tiny_run / "eval-test.json").read_text())
    assert set(table["model"]) == {"full", "low", "mid", "high"}
    assert set(table["model"]["full"]) == set(TASKS)
    assert table["oracle"] is not None  # the simulator writes p_* columns
    auc = table["model"]["full"]["click"]["auc"]
    assert 0 <= auc <= 100
    with open(tiny_run / "eval-test.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["source"] for r in rows} == {"model", "oracle"} and len(rows) == 2 * 4 * 6


def test_eval_groups_split_and_predictions(tiny_run, tmp_path):
    out = tmp_path / "pred.parquet"
    r = runner.invoke(
        app, ["eval", str(tiny_run), "--groups", "low", "--split", "valid", "--save-predictions", str(out)]
    )
    assert r.exit_code == 0, r.output
    table = json.loads((tiny_run / "eval-valid.json").read_text())
    assert set(table["model"]) == {"full", "low"}
    pred = pl.read_parquet(out)
    assert {"user_id", *TASKS, *(f"p_{t}" for t in TASKS)} <= set(pred.columns)
    assert pred.height == table["samples"]
    assert pred["p_click"].is_between(0, 1).all()


def test_eval_of_a_checkpoint_matches_the_run(tiny_run):
    info = json.loads((tiny_run / "run.json").read_text())
    assert Path(info["best_checkpoint"]).name == "best.ckpt"
    at_training = json.loads((tiny_run / "eval-test.json").read_text())
    r = runner.invoke(app, ["eval", str(tiny_run / "checkpoints" / "best.ckpt")])
    assert r.exit_code == 0, r.output
    again = json.loads((tiny_run / "eval-test.json").read_text())
    assert again["samples"] == at_training["samples"]
    for group, tasks in at_training["model"].items():
        for task, kinds in tasks.items():
            for kind, value in kinds.items():
                assert again["model"][group][task][kind] == pytest.approx(value, abs=1e-6), (group, task, kind)


@pytest.mark.parametrize(
    "args,words",
    [
        (["eval", "nowhere"], "no such run directory"),
        (["eval", "RUN", "--groups", "medium"], "unknown group"),
        (["eval", "RUN", "--split", "train"], "unknown split"),
    ],
)
def test_eval_bad_input(tiny_run, args, words):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and words in r.output, r.output


def test_config_reproduces_the_run(tiny_run, runs):
    r = runner.invoke(app, ["train", "--config", str(tiny_run / "config.yaml"), "--fit.name", "r1-again"])
    assert r.exit_code == 0, r.output
    a = json.loads((tiny_run / "eval-test.json").read_text())["model"]
    b = json.loads((runs / "r1-again" / "eval-test.json").read_text())["model"]
    for task in TASKS:
        assert a["full"][task]["auc"] == pytest.approx(b["full"][task]["auc"], abs=1e-6)


def test_existing_run_name_is_refused(tiny_run, runs):
    r = train(runs, "r1", "--trainer.max_epochs", "1")
    assert r.exit_code == 2 and "--resume" in r.output


def test_resume_continues_from_last_checkpoint(runs):
    assert train(runs, "r2", "--trainer.max_epochs", "1", "--fit.patience", "0").exit_code == 0
    run = runs / "r2"
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    r = runner.invoke(app, ["train", "--resume", str(run), "--trainer.max_epochs", "2"])
    assert r.exit_code == 0, r.output
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["epoch"] > first["epoch"] and ckpt["global_step"] == 2 * first["global_step"]
    with open(run / "logs" / "resume1" / "metrics.csv") as f:  # the first leg's logs are kept
        assert {r["epoch"] for r in csv.DictReader(f) if r.get("val/auc_mean")} == {"1"}
    assert (run / "logs" / "metrics.csv").is_file()
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(runs, monkeypatch):
    assert train(runs, "r3", "--trainer.max_epochs", "1", "--fit.patience", "0").exit_code == 0
    run = runs / "r3"
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    from farmcli.model.module import FarmModule

    real = FarmModule.compute_loss

    def nan_loss(self, out, labels):
        loss, parts = real(self, out, labels)
        return loss * float("nan"), parts

    monkeypatch.setattr(FarmModule, "compute_loss", nan_loss)
    r = runner.invoke(app, ["train", "--resume", str(run), "--trainer.max_epochs", "2"])
    assert r.exit_code == 2, r.output
    assert "nan" in r.output.lower() and "last good checkpoint" in r.output
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_ctrl_c_marks_the_run_interrupted_and_exits_130(runs, monkeypatch):
    """Lightning answers a KeyboardInterrupt in fit with sys.exit(1); farm still reports an interrupt."""
    from farmcli.model.module import FarmModule

    def interrupt(self, out, labels):
        raise KeyboardInterrupt

    monkeypatch.setattr(FarmModule, "compute_loss", interrupt)
    handler = signal.getsignal(signal.SIGINT)
    try:
        r = train(runs, "r-ctrl-c", "--trainer.max_epochs", "1")
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output
    info = json.loads((runs / "r-ctrl-c" / "run.json").read_text())
    assert info["status"] == "interrupted" and "error" not in info


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(runs, farm_home):
    """2 gloo processes: the synced validation metric counts every sample once and equals a 1-process evaluation.

    The ranks score other slices in other batch shapes, so a score may differ from the 1-process one in its
    last bits, and a near-chance tiny model can flip a near-tied pair: the AUC is compared to 0.01 points (a
    handful of pairs), the counts exactly. That the sync itself is exact for equal scores is
    tests/metrics/test_grouped_auc.py::test_metric_ddp_two_processes.
    """
    cmd = [
        sys.executable,
        "-m",
        "farmcli",
        "train",
        *FAST,
        "--fit.runs_dir",
        str(runs),
        "--fit.name",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_epochs",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on two cores: one thread each
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    run = runs / "ddp"
    with open(run / "logs" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/auc_mean")]
    single = json.loads((run / "eval-valid.json").read_text())["model"]["full"]
    first = TASKS[0]
    assert float(logged[-1]["val/n_samples"]) == single[first]["n_samples"]
    assert float(logged[-1]["val/n_users"]) == single[first]["n_users"] + single[first]["n_skipped"]
    for task in TASKS:
        ddp_value = float(logged[-1][f"val/auc_{task}"]) * 100
        one_value = single[task]["auc"] if single[task]["auc"] is not None else 50.0
        assert ddp_value == pytest.approx(one_value, abs=1e-2), task


def test_lightning_boilerplate_is_hidden_unless_verbose(runs):
    quiet = runner.invoke(
        app, ["train", *FAST, "--fit.runs_dir", str(runs), "--fit.name", "quiet", "--trainer.max_epochs", "1"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert "GPU available" not in quiet.output and "litlogger" not in quiet.output
    assert "Total params" not in quiet.output  # the model summary
    assert "test split" in quiet.output  # farm's own table still prints


def test_training_values_logged_on_the_steps_lightning_writes(runs, monkeypatch):
    # self.log costs ~1.2 ms a call, so training steps hand Lightning their values only on the steps it writes
    from farmcli.model.module import FarmModule

    calls = []
    log = FarmModule.log
    monkeypatch.setattr(FarmModule, "log", lambda self, name, *a, **k: calls.append(name) or log(self, name, *a, **k))
    r = train(runs, "every2", "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "2")
    assert r.exit_code == 0, r.output
    with open(runs / "every2" / "logs" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps and all((s + 1) % 2 == 0 for s in steps)  # Lightning's own choice of steps
    assert steps == list(range(1, 2 * len(steps), 2))  # none of them missing
    assert calls.count("train/loss") == len(steps)  # and no other step paid for a call
