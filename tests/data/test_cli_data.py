"""`farm data synth | inspect | build` through the CLI, on the tiny preset."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "tiny"
    r = runner.invoke(
        app, ["data", "synth", "--preset", "tiny", "--seed", "3", "--set", "n_users=120", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    return out


def test_synth_settings_reach_the_simulator(tiny, tmp_path):
    sim = json.loads((tiny / "manifest.json").read_text())["simulator"]
    assert sim["n_users"] == 120 and sim["seed"] == 3
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(yaml.safe_dump({"n_users": 80, "p_live": 0.2}))
    r = runner.invoke(app, ["data", "synth", "--preset", "tiny", "--config", str(cfg), "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    sim = json.loads((tmp_path / "d" / "manifest.json").read_text())["simulator"]
    assert sim["n_users"] == 80 and sim["p_live"] == 0.2


@pytest.mark.parametrize(
    "args,words",
    [
        (["--set", "bogus_field=1"], "bogus_field"),
        (["--set", "n_users"], "KEY=VALUE"),
        (["--preset", "huge"], "huge"),
    ],
)
def test_synth_bad_settings_exit_2(tmp_path, args, words):
    r = runner.invoke(app, ["data", "synth", *args, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and words in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_synth_refuses_to_overwrite(tiny):
    r = runner.invoke(app, ["data", "synth", "--preset", "tiny", "--out", str(tiny)])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_inspect_json(tiny):
    r = runner.invoke(app, ["data", "inspect", str(tiny), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["rows"]["live"]["train"] > 0 and info["video_live_ratio"] > 3
    assert set(info["users"]) >= {"low", "mid", "high", "total"}
    assert info["history"]["levels"]["full"]["video"]["p50"] <= 50
    assert set(info["oracle"]["tasks"]) == {"click", "effective_view", "long_view", "like", "comment", "gift"}


def test_inspect_invalid_dataset_exit_2(tmp_path):
    r = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert r.exit_code == 2 and "manifest.json" in r.output


def test_build_then_reuse(tiny, tmp_path):
    args = ["data", "build", str(tiny), "--cache-dir", str(tmp_path / "cache"), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout[first.stdout.index("{") :])
    assert summary["history_len"] == 50 and summary["rows"]["train"] > 0
    again = runner.invoke(app, args)
    assert json.loads(again.stdout[again.stdout.index("{") :])["path"] == summary["path"]


def test_build_says_whether_it_built_or_reused_the_store(tiny, tmp_path):
    cache = str(tmp_path / "cache")
    first = runner.invoke(app, ["data", "build", str(tiny), "--cache-dir", cache])
    second = runner.invoke(app, ["data", "build", str(tiny), "--cache-dir", cache])
    assert first.exit_code == second.exit_code == 0
    assert "built the sample store" in first.output and "reusing the sample store" in second.output


@pytest.mark.parametrize(
    "args, config, seed",
    [
        (["--set", "seed=5"], None, 5),  # issue 36 row 16: --set seed=5 was overwritten by --seed's default 0
        ([], "seed: 5\n", 5),
        (["--config", "{config}", "--set", "seed=6"], "seed: 5\n", 6),  # --set over the file
        (["--seed", "7", "--set", "seed=5"], "seed: 4\n", 7),  # an explicit --seed over both
        ([], None, 0),
    ],
)
def test_synth_seed_from_the_config_file_or_set_counts_unless_seed_is_given(tmp_path, args, config, seed):
    extra = []
    if config is not None:
        (tmp_path / "sim.yaml").write_text(config + "n_users: 40\n")
        extra = [] if "{config}" in args else ["--config", str(tmp_path / "sim.yaml")]
    args = [a.replace("{config}", str(tmp_path / "sim.yaml")) for a in args]
    r = runner.invoke(
        app, ["data", "synth", "--preset", "tiny", "--users", "40", *args, *extra, "--out", str(tmp_path / "d")]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["simulator"]["seed"] == seed
