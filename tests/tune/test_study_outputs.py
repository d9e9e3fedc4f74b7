"""`farm tune`: best.yaml is the best trial's whole config and `farm train` reproduces its score; a store per
sample setting; TPE over ranges; what is refused before any trial (monitor, one-class validation, journal)."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.config import resolve
from farmcli.data.schema import TASKS
from farmcli.errors import UserError
from farmcli.tune.space import parse_space
from farmcli.tune.study import TuneSettings, run_tune, trial_config
from tests.tune.helpers import tiny_settings

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")
FIXED = ["trainer.max_epochs=2", "data.batch_size=2048"]


def settings(**kw) -> TuneSettings:
    return tiny_settings(2, **kw)


def fake_trials(monkeypatch, seen=None):
    """run_trial without training: a score from the learning rate, the config and store recorded."""
    from farmcli.tune import trial as trial_mod

    def fake(cfg, store, **kw):
        if seen is not None:
            seen.append((cfg, store))
        return trial_mod.TrialResult(score=0.5 + cfg.optim.lr, best_epoch=0, epochs=1, history=[0.5 + cfg.optim.lr])

    monkeypatch.setattr(trial_mod, "run_trial", fake)


def body(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.slow
def test_train_from_best_yaml_reproduces_the_best_trials_validation_auc(tmp_path):
    out = tmp_path / "t"
    s = settings()
    result = run_tune(s, out, show_bar=False)
    best = result.best
    assert best is not None and best.number in (1, 2)
    # best.yaml is the trial's whole resolved config (data, fixed overrides, epochs, seed, the variant's choices),
    # exactly what `farm train --print-config` prints for it
    assert body(out / "best.yaml") == trial_config(s, best.params, 0).to_dict()
    assert body(out / "best.yaml")["optim"]["lr"] == best.params["optim.lr"]
    printed = runner.invoke(app, ["train", "--config", str(out / "best.yaml"), "--print-config"])
    assert printed.exit_code == 0 and yaml.safe_load(printed.stdout) == body(out / "best.yaml")
    cfg = resolve([out / "best.yaml"])
    assert (cfg.data.source, cfg.trainer["max_epochs"], cfg.data.batch_size, cfg.seed) == ("tiny", 2, 2048, 0)
    assert cfg.model.align.name == "none" and cfg.variant == "base"
    # parameters are stored typed: a float in tune.json, trials.json and best.yaml, never the text '0.001'
    assert json.loads((out / "tune.json").read_text())["settings"]["space"][0]["values"] == [0.001, 0.003]
    assert json.loads((out / "trials.json").read_text())["best"]["params"] == {"optim.lr": best.params["optim.lr"]}
    assert isinstance(best.params["optim.lr"], float)

    r = runner.invoke(
        app,
        ["train", "--config", str(out / "best.yaml"), "--fit.runs_dir", str(tmp_path / "runs"), "--fit.name", "b"],
    )
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "b"
    trial_value = best.seeds[0]["value"]  # the trial's best val/auc_mean, unrounded
    assert trial_value == pytest.approx(best.score / 100, abs=1e-8)
    assert json.loads((run / "run.json").read_text())["best_score"] == pytest.approx(trial_value, abs=1e-6)
    full = json.loads((run / "eval-valid.json").read_text())["model"]["full"]
    assert np.mean([full[t]["auc"] for t in TASKS]) / 100 == pytest.approx(trial_value, abs=1e-6)


@pytest.mark.slow
def test_tpe_samples_ranges_and_stores_them_typed(tmp_path, monkeypatch):
    out = tmp_path / "t"
    space = parse_space(["optim.lr=1e-4:1e-2:log", "model.head.levels=1:2", "model.embed.init_std=0.1,0.2"])
    s = settings(space=space, sampler="tpe", trials=2, overrides=["trainer.max_epochs=1", "data.batch_size=2048"])
    result = run_tune(s, out, show_bar=False)
    assert [r.number for r in sorted(result.rows, key=lambda r: r.number)] == [1, 2]
    for r in result.rows:
        assert r.state == "COMPLETE"
        lr, levels, std = r.params["optim.lr"], r.params["model.head.levels"], r.params["model.embed.init_std"]
        assert isinstance(lr, float) and 1e-4 <= lr <= 1e-2
        assert type(levels) is int and levels in (1, 2)
        assert isinstance(std, float) and std in (0.1, 0.2)
    stored = json.loads((out / "tune.json").read_text())["settings"]["space"]
    assert stored[0] == {"key": "optim.lr", "low": 0.0001, "high": 0.01, "log": True}
    assert stored[1] == {"key": "model.head.levels", "low": 1, "high": 2, "log": False}
    cfg = resolve([out / "best.yaml"])
    assert cfg.optim.lr == result.best.params["optim.lr"]
    assert cfg.model.head.params["levels"] == result.best.params["model.head.levels"]
    calls = []
    fake_trials(monkeypatch, calls)  # resumed: both done, nothing runs again
    run_tune(s, out, show_bar=False)
    assert calls == []


def test_each_trial_trains_on_the_store_of_its_own_sample_settings(tmp_path, monkeypatch):
    seen = []
    fake_trials(monkeypatch, seen)
    space = parse_space(["data.history_len=10,20", "optim.lr=0.001,0.002"])
    result = run_tune(settings(space=space), tmp_path / "t", show_bar=False)
    assert len(result.rows) == 4 and all(r.state == "COMPLETE" for r in result.rows)
    for cfg, store in seen:
        assert store.manifest["history_len"] == cfg.data.history_len
    stores = {cfg.data.history_len: store for cfg, store in seen}
    assert sorted(stores) == [10, 20] and stores[10].path != stores[20].path
    assert len({id(store) for _, store in seen}) == 2  # built once per setting, shared by its trials
    # the tables count the best epoch from 1 (the fake trials' best is Lightning's epoch 0 of 1)
    row = next(r for r in csv.DictReader((tmp_path / "t" / "trials.csv").open()) if r["state"] == "COMPLETE")
    assert (row["best_epoch"], row["epochs"]) == ("1", "1")
    md = [ln for ln in (tmp_path / "t" / "trials.md").read_text().splitlines() if "| complete |" in ln]
    assert md and all(ln.split("|")[-3].strip() == "1" for ln in md)  # the "best epoch" column


def test_a_bad_monitor_stops_before_any_study_is_made(tmp_path, monkeypatch):
    fake_trials(monkeypatch)
    for variant, overrides, space, words in (
        ("base", [*FIXED, "fit.monitor=val/bogus"], ["optim.lr=0.001,0.002"], "val/bogus"),
        ("farm", [*FIXED, "fit.monitor=val/cl"], ["model.align=infonce,none"], "model.align=none"),
    ):
        s = settings(variant=variant, overrides=overrides, space=parse_space(space))
        with pytest.raises(UserError, match=words):
            run_tune(s, tmp_path / "t", show_bar=False)
        assert not (tmp_path / "t").exists()
    with pytest.raises(UserError, match="fit.monitor"):
        run_tune(settings(space=parse_space(["fit.monitor=val/loss,val/auc_mean"])), tmp_path / "t")
    r = runner.invoke(
        app,
        ["tune", "--data", "tiny", "--space", "optim.lr=0.1,0.2", "--fit.monitor", "val/bogus", "--out", str(tmp_path)],
    )
    assert r.exit_code == 2 and "val/bogus" in r.output and not any(tmp_path.iterdir())


def one_class_store(n=50):
    return SimpleNamespace(n=lambda split: n, split=lambda split: SimpleNamespace(labels=np.zeros((n, len(TASKS)))))


def test_a_validation_split_with_one_class_per_task_is_refused_up_front(tmp_path, monkeypatch):
    import farmcli.sources

    fake_trials(monkeypatch)
    monkeypatch.setattr(farmcli.sources, "sample_store", lambda data, progress=None: one_class_store())
    with pytest.raises(UserError, match="one class.*every trial would score 50.00"):
        run_tune(settings(), tmp_path / "t", show_bar=False)
    assert not (tmp_path / "t").exists()
    with pytest.raises(UserError, match="every click label is 0"):
        run_tune(settings(overrides=[*FIXED, "fit.monitor=val/gauc_click"]), tmp_path / "t", show_bar=False)
    # a loss is defined with one class: tuning on it runs
    result = run_tune(settings(overrides=[*FIXED, "fit.monitor=val/loss"]), tmp_path / "t", show_bar=False)
    assert all(r.state == "COMPLETE" for r in result.rows)


def test_a_partly_one_class_validation_split_still_tunes_on_the_mean():
    from farmcli.tune.stores import monitor_blind, undefined_tasks

    labels = np.zeros((4, len(TASKS)))
    labels[0, 0] = 1
    assert set(undefined_tasks(labels)) == set(TASKS[1:])
    assert monitor_blind("val/auc_mean", undefined_tasks(labels)) is None
    assert monitor_blind("val/auc_like", undefined_tasks(labels)) == "every like label is 0"


def test_a_cut_short_journal_is_a_clear_exit_2_and_the_fix_works(tmp_path, monkeypatch):
    fake_trials(monkeypatch)
    out = tmp_path / "t"
    args = ["tune", "--variant", "base", "--data", "tiny", "--config", TINY, "--no-prune"]
    args += ["--space", "optim.lr=0.001,0.002,0.003", "--trainer.max_epochs=2", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    journal = out / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:5]) + lines[5][:20] + b"".join(lines[6:]))  # line 6 cut short
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    flat = " ".join(r.output.split())
    assert str(journal) in "".join(r.output.split()) and "line 6" in flat and "head -n 5" in flat
    journal.write_bytes(b"".join(lines[:5]))  # the fix the message gives: keep the records before that line
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert {t["params"]["optim.lr"] for t in trials if t["state"] == "COMPLETE"} == {0.001, 0.002, 0.003}


def test_a_record_cut_by_a_kill_mid_write_is_dropped_so_the_next_one_is_whole(tmp_path, monkeypatch):
    fake_trials(monkeypatch)
    out = tmp_path / "t"
    s = settings(space=parse_space(["optim.lr=0.001,0.002"]))
    run_tune(s, out, show_bar=False)
    journal = out / "study.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-30])  # the last record (trial 2 complete) half written, no newline
    result = run_tune(s, out, show_bar=False)  # trial 2 runs again, its records appended on a line of their own
    assert sorted(r.state for r in result.rows) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())
    assert len(run_tune(s, out, show_bar=False).rows) == 3  # and it opens again


def test_values_go_to_optuna_typed_and_older_text_choices_still_decode():
    from farmcli.tune.study import _choices, _decode

    s = settings(space=parse_space(["model.cl_weight=0.1,2,true", "model.head.expert_dims=[128,64],[8]"]))
    weight, dims = s.space
    assert _choices(weight) == [0.1, 2, True] and _choices(dims) == ["[128, 64]", "[8]"]  # lists as their text
    assert _decode(s, {"model.cl_weight": 2, "model.head.expert_dims": "[8]"}) == {
        "model.cl_weight": 2,
        "model.head.expert_dims": [8],
    }
    # a study made when every value was stored as text ('0.1') resumes with the typed values
    assert _decode(s, {"model.cl_weight": "0.1"}) == {"model.cl_weight": 0.1}
