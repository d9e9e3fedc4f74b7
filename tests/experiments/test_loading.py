"""How the research plugins of experiments/plugins load into farm, by the registry's own two ways (class paths and
registration on import), and what a config naming a component that left the library gets without them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from farmcli import registry
from farmcli.cli import app
from farmcli.errors import UserError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests" / "tiny-model.yaml")
NULL_PATH = "experiments.plugins.fuse_null.NullEventCrossAttentionFuse"
WINDOW_PATH = "experiments.plugins.window_gate.WindowGateDFTFrequency"
PRINT_CONFIG = ["train", "--data", "tiny", "--print-config"]


@pytest.fixture
def experiments_not_importable(monkeypatch):
    """As from a directory other than the repository root, or an installed farmcli: no ``experiments``."""
    monkeypatch.setitem(sys.modules, "experiments", None)


def test_experiments_is_not_part_of_the_package():
    assert 'where = ["src"]' in (ROOT / "pyproject.toml").read_text()  # setuptools' find: src/ only
    assert not (ROOT / "src" / "farmcli" / "model" / "fuse_null.py").exists()
    for f in (ROOT / "src" / "farmcli").rglob("*.py"):  # the library names a moved component, never imports one
        assert "import experiments" not in f.read_text() and "from experiments" not in f.read_text(), f


def test_the_library_lists_only_its_own_components():
    assert registry.list("fuse") == ["cross_attention", "none"]
    assert "dft_window" not in registry.list("live_frequency")


def test_importing_the_plugins_registers_them_by_name():
    import experiments.plugins as plugins

    assert registry.get("fuse", "cross_attention_null") is plugins.fuse_null.NullEventCrossAttentionFuse
    for slot in ("video_frequency", "live_frequency"):
        assert registry.get(slot, "dft_window") is plugins.window_gate.WindowGateDFTFrequency


def test_a_class_path_loads_a_plugin():
    cls = registry.get("fuse", NULL_PATH)
    assert cls.__name__ == "NullEventCrossAttentionFuse"
    assert "cross_attention_null" in registry.list("fuse")  # its module registered it on import
    assert registry.get("live_frequency", WINDOW_PATH).__name__ == "WindowGateDFTFrequency"


def test_a_moved_name_loads_the_plugin_where_experiments_is_importable():
    cls = registry.get("fuse", "cross_attention_null")
    assert cls.__module__ == "experiments.plugins.fuse_null"


def test_a_moved_name_says_where_it_went_without_experiments(experiments_not_importable):
    with pytest.raises(UserError) as e:
        registry.get("fuse", "cross_attention_null")
    message = str(e.value)
    assert "experiments/plugins/fuse_null.py" in message
    assert f"--model.fuse {NULL_PATH}" in message and "PYTHONPATH=." in message


def test_a_run_config_naming_a_moved_component_is_exit_2(experiments_not_importable):
    r = runner.invoke(app, [*PRINT_CONFIG, "--model.fuse", "cross_attention_null"])
    assert r.exit_code == 2, r.output
    assert "experiments/plugins/fuse_null.py" in r.output and "Traceback" not in r.output


def test_a_moved_name_with_experiments_importable_gets_its_parameters():
    r = runner.invoke(app, [*PRINT_CONFIG, "--model.fuse", "cross_attention_null", "--model.fuse.null", "output"])
    assert r.exit_code == 0, r.output
    assert "name: cross_attention_null" in r.output and "'null': output" in r.output
    r = runner.invoke(app, [*PRINT_CONFIG, "--model.live_frequency", WINDOW_PATH])
    assert r.exit_code == 0, r.output
    live = yaml.safe_load(r.output)["model"]["live_frequency"]
    assert live["name"] == WINDOW_PATH and "cutoff" in live["params"] and "gate_mean" not in live["params"]


def test_farm_trains_with_a_plugin_given_by_its_class_path(tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            "tiny",
            "--config",
            TINY,
            "--model.fuse",
            NULL_PATH,
            "--model.fuse.null",
            "candidate_output",
            "--model.fuse.dim",
            "8",
            "--model.live_frequency",
            WINDOW_PATH,
            "--model.live_frequency.gate_dims",
            "[8]",
            "--trainer.max_epochs",
            "1",
            "--fit.runs_dir",
            str(tmp_path),
            "--fit.name",
            "research",
        ],
    )
    assert r.exit_code == 0, r.output
    config = (tmp_path / "research" / "config.yaml").read_text()
    assert f"name: {NULL_PATH}" in config and "'null': candidate_output" in config and WINDOW_PATH in config
    scores = json.loads((tmp_path / "research" / "eval-test.json").read_text())
    assert scores["model"]["full"]["click"]["auc"] is not None
