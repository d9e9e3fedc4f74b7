"""The experiment scripts stay runnable from anywhere as ``python experiments/SCRIPT.py`` (their --help at least)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SCRIPTS = ["quality_sweep", "by_live_history", "user_split", "without_video_target"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, tmp_path):
    r = subprocess.run(
        [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout and f"experiments/{name}.py" in r.stdout


def test_the_readme_has_a_line_for_every_script_and_plugin():
    readme = (EXPERIMENTS / "README.md").read_text()
    for path in [*(f"{s}.py" for s in SCRIPTS), "plugins/fuse_null.py", "plugins/window_gate.py"]:
        assert path in readme, path
    assert "docs/notebook/QUALITY.md" in readme


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished `tiny` run named as `farm ablate` names its runs (VARIANT-sSEED)."""
    from typer.testing import CliRunner

    from farmcli.cli import app

    runs = tmp_path_factory.mktemp("runs")
    tiny = str(EXPERIMENTS.parent / "tests" / "tiny-model.yaml")
    args = ["train", "--data", "tiny", "--config", tiny, "--trainer.max_epochs", "1", "--fit.runs_dir", str(runs)]
    r = CliRunner().invoke(app, [*args, "--fit.name", "farm-s0"])
    assert r.exit_code == 0, r.output
    return runs


def test_the_scripts_that_read_runs_read_one(runs, capsys):
    from experiments import by_live_history, user_split

    by_live_history.main([str(runs), "--threads", "1", "--out", str(runs / "by_live.json")])
    assert "farm-s0: " in capsys.readouterr().out
    assert "live 0" in json.loads((runs / "by_live.json").read_text())["farm"]["0"]
    user_split.main([str(runs / "farm-s0"), "--threads", "1", "--tasks", "click"])
    assert "| farm-s0 | click |" in capsys.readouterr().out
