"""`farm tune`: search spaces, validation-only scoring, resume after a kill, the best YAML round trip."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.config import resolve
from farmcli.errors import UserError
from farmcli.tune.space import as_overrides, grid, grid_size, parse_space
from farmcli.tune.study import TuneSettings, run_tune
from tests.tune.helpers import tiny_settings

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")
FIXED = ["trainer.max_epochs=1", "data.batch_size=2048"]


def settings(**kw) -> TuneSettings:
    return tiny_settings(1, **kw)


def test_space_parsing_keeps_lists_and_types():
    space = parse_space(
        ["model.cl_weight=0.1,0.3", "model.head.expert_dims=[128,64],[256,128,64]", "model.align.normalize=true,false"]
    )
    assert space[0].values == (0.1, 0.3)
    assert space[1].values == ([128, 64], [256, 128, 64])
    assert space[2].values == (True, False)
    assert grid_size(space) == 8
    combos = list(grid(space))
    assert combos[1] == {"model.cl_weight": 0.1, "model.head.expert_dims": [128, 64], "model.align.normalize": False}
    cfg = resolve(variant="farm", overrides=as_overrides(combos[1]))
    assert cfg.model.head.params["expert_dims"] == [128, 64] and cfg.model.align.params["normalize"] is False


@pytest.mark.parametrize(
    "bad", ["model.cl_weight", "model.cl_weight=", "=1,2", "model.cl_weight=1,,2", "model.cl_weight=1,1"]
)
def test_bad_space_is_a_user_error(bad):
    with pytest.raises(UserError):
        parse_space([bad])


def test_bad_key_or_value_stops_before_training(tmp_path):
    for space in (["model.no_such_key=1,2"], ["model.live_frequency.cutoff=1,0"], ["seed=1,2"]):
        with pytest.raises(UserError):
            run_tune(settings(space=parse_space(space), variant="farm"), tmp_path / "t")
        assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_tune_reads_only_the_validation_split(tmp_path, monkeypatch):
    from farmcli.data.store import SampleStore

    seen = []
    for name in ("batch", "split", "histories"):
        original = getattr(SampleStore, name)

        def spy(self, split, *a, _original=original, **k):
            seen.append(split)
            if split == "test":
                raise AssertionError("farm tune read the test split")
            return _original(self, split, *a, **k)

        monkeypatch.setattr(SampleStore, name, spy)
    result = run_tune(settings(), tmp_path / "t", show_bar=False)
    assert {"train", "valid"} <= set(seen) and "test" not in seen
    assert [r.state for r in result.rows] == ["COMPLETE", "COMPLETE"]


@pytest.mark.slow
def test_resume_keeps_finished_trials_and_reruns_the_killed_one(tmp_path, monkeypatch):
    out = tmp_path / "t"
    calls = []
    from farmcli.tune import trial as trial_mod

    original = trial_mod.run_trial

    def dies_on_second(cfg, store, **kw):
        calls.append(cfg.optim.lr)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill mid-trial would leave it
        return original(cfg, store, **kw)

    monkeypatch.setattr(trial_mod, "run_trial", dies_on_second)
    s = settings(space=parse_space(["optim.lr=0.001,0.002,0.003"]))
    with pytest.raises(KeyboardInterrupt):
        run_tune(s, out, show_bar=False)
    monkeypatch.setattr(
        trial_mod, "run_trial", lambda cfg, store, **kw: (calls.append(cfg.optim.lr), original(cfg, store, **kw))[1]
    )
    result = run_tune(s, out, show_bar=False)
    assert calls[:2] == [0.001, 0.002] and sorted(calls[2:]) == [0.002, 0.003]  # the killed one runs again
    states = sorted(r.state for r in result.rows)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert {r.number: r.state for r in result.rows}[2] == "FAIL"  # numbered from 1: the second trial was killed
    done = {r.params["optim.lr"] for r in result.rows if r.state == "COMPLETE"}
    assert done == {0.001, 0.002, 0.003}
    calls.clear()
    run_tune(s, out, show_bar=False)  # all done: nothing runs again
    assert calls == []
    with pytest.raises(UserError, match="other settings"):
        run_tune(settings(space=parse_space(["optim.lr=0.001,0.004"])), out, show_bar=False)


@pytest.mark.slow
def test_cli_writes_tables_and_a_best_yaml_that_train_takes(tmp_path):
    out = tmp_path / "t"
    r = runner.invoke(
        app,
        [
            "tune",
            "--variant",
            "no-cpa",
            "--data",
            "tiny",
            "--config",
            TINY,
            "--no-prune",
            "--space",
            "model.live_frequency.cutoff=1,3",
            "--trainer.max_epochs",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    # one numbering, from 1, in the messages and the tables
    assert "trial 1 (1 of 2)" in r.output and "trial 2 (2 of 2)" in r.output and "trial 0" not in r.output
    assert "trial 1 complete" in r.output and "trial 2 complete" in r.output
    table = json.loads((out / "trials.json").read_text())
    assert table["split"] == "valid" and len(table["trials"]) == 2
    assert sorted(t["number"] for t in table["trials"]) == [1, 2]
    assert f"trial {table['best']['number']})" in (out / "best.yaml").read_text().splitlines()[0]
    scores = [t["score"] for t in table["trials"]]
    assert scores == sorted(scores, reverse=True)
    best = table["best"]
    assert best["score"] == max(scores)
    assert (out / "trials.csv").read_text().count("\n") == 3 and "| trial |" in (out / "trials.md").read_text()
    best_yaml = yaml.safe_load((out / "best.yaml").read_text())
    assert best_yaml["variant"] == "no-cpa" and best_yaml["model"]["align"]["name"] == "none"
    assert best_yaml["data"]["source"] == "tiny" and best_yaml["trainer"]["max_epochs"] == 1  # a whole config
    cfg = resolve([TINY, out / "best.yaml"])
    assert cfg.model.align.name == "none"
    assert cfg.model.live_frequency.params["cutoff"] == best["params"]["model.live_frequency.cutoff"]
    r = runner.invoke(
        app, ["train", "--config", TINY, "--config", str(out / "best.yaml"), "--data", "tiny", "--print-config"]
    )
    assert r.exit_code == 0 and f"cutoff: {best['params']['model.live_frequency.cutoff']}" in r.output


def test_cli_bad_input_exits_2(tmp_path):
    r = runner.invoke(app, ["tune", "--data", "tiny", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "--space" in r.output
    r = runner.invoke(app, ["tune", "--data", "tiny", "--space", "model.nope=1,2", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "nope" in r.output
    (tmp_path / "x").write_text("user file")
    r = runner.invoke(app, ["tune", "--data", "tiny", "--space", "optim.lr=0.1,0.2", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and (tmp_path / "x").read_text() == "user file"


def test_missing_optuna_is_a_clear_exit_2(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_optuna(name, *a, **k):
        if name == "optuna" or name.startswith("optuna."):
            raise ImportError("No module named 'optuna'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_optuna)
    r = runner.invoke(app, ["tune", "--data", "tiny", "--space", "optim.lr=0.1,0.2", "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "pip install" in r.output and "tune" in r.output
    assert not (tmp_path / "t").exists()


def test_a_trial_reports_the_validation_uauc_of_its_best_epoch():
    from farmcli.data.schema import TASKS
    from farmcli.sources import sample_store
    from farmcli.tune.trial import run_trial

    cfg = resolve([TINY], overrides=["data.source=tiny", "trainer.max_epochs=2", "data.batch_size=2048"])
    result = run_trial(cfg, sample_store(cfg.data))
    assert set(result.uauc) == {*TASKS, "mean"}
    per_task = [result.uauc[t] for t in TASKS]
    assert all(0.0 <= v <= 1.0 for v in per_task)
    assert result.uauc["mean"] == pytest.approx(sum(per_task) / len(per_task), abs=1e-6)
