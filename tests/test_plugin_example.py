"""The README's "Add a component" example, run as written: one file with @register, then farm train uses it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli import registry
from farmcli.cli import app

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "mean_fuse.py"
TINY = str(Path(__file__).with_name("tiny-model.yaml"))


def _load_example() -> None:
    """Import the file as a plugin package's module would be imported (by its entry point)."""
    spec = importlib.util.spec_from_file_location("mean_fuse_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


@pytest.fixture
def example_registered():
    _load_example()
    yield
    registry._components["fuse"].pop("mean", None)  # other tests see the built-in components only
    sys.modules.pop("mean_fuse_example", None)


def test_a_new_fuse_is_one_file_and_a_register(tmp_path, example_registered):
    assert "mean" in registry.list("fuse")
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            "tiny",
            "--config",
            TINY,
            "--model.fuse.name",
            "mean",
            "--model.fuse.dim",
            "8",
            "--trainer.max_epochs",
            "1",
            "--fit.runs_dir",
            str(tmp_path),
            "--fit.name",
            "mean",
        ],
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "mean"
    assert "name: mean" in (run / "config.yaml").read_text()
    assert json.loads((run / "eval-test.json").read_text())["model"]["full"]["click"]["auc"] is not None
    bad = runner.invoke(
        app, ["train", "--data", "tiny", "--print-config", "--model.fuse.name", "mean", "--model.fuse.dim", "wide"]
    )
    assert bad.exit_code == 2 and "model.fuse.dim = 'wide'" in bad.output
