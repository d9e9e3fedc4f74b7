"""A run directory written by an earlier farm (tests/fixtures/run-4104478: `farm train --data tiny --config
tests/tiny-model.yaml --trainer.max_epochs 1` at commit 4104478, before the LightningCLI keys, the optimizer setting
and the module renames) still evaluates, predicts, exports and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()
FIXTURE = Path(__file__).with_name("fixtures") / "run-4104478"


@pytest.fixture()
def old_run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))  # the tiny preset is made again, byte-identical
    run = tmp_path / "runs" / "old"
    shutil.copytree(FIXTURE, run)
    return run


@pytest.mark.slow
def test_an_old_run_evaluates_predicts_and_exports(old_run, tmp_path):
    before = json.loads((old_run / "eval-test.json").read_text())
    r = runner.invoke(app, ["eval", str(old_run)])
    assert r.exit_code == 0, r.output
    after = json.loads((old_run / "eval-test.json").read_text())
    for task, cell in before["model"]["full"].items():
        assert after["model"]["full"][task]["auc"] == pytest.approx(cell["auc"], abs=1e-6), task
    out = tmp_path / "scores.parquet"
    r = runner.invoke(app, ["predict", str(old_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == before["samples"]
    r = runner.invoke(app, ["export", str(old_run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_an_old_run_resumes_and_prints_a_config_that_repeats_it(old_run):
    r = runner.invoke(app, ["train", "--resume", str(old_run), "--trainer.max_epochs", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((old_run / "run.json").read_text())["epochs"] == 2
    r = runner.invoke(app, ["train", "--config", str(old_run / "config.yaml"), "--print-config"])
    assert r.exit_code == 0, r.output
    printed = yaml.safe_load(r.output)
    assert printed["trainer"]["max_epochs"] == 2 and printed["data"]["source"] == "tiny"
