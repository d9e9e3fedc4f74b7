"""`farm tune` against faults (issue 36, round 5, rows 18c and 18f): a second `farm tune` on one --out, and a
tune.json that cannot be read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")


def fake_trials(monkeypatch):
    """run_trial without training: a score from the learning rate."""
    from farmcli.tune import trial as trial_mod

    def fake(cfg, store, **kw):
        return trial_mod.TrialResult(score=0.5 + cfg.optim.lr, best_epoch=0, epochs=1, history=[0.5 + cfg.optim.lr])

    monkeypatch.setattr(trial_mod, "run_trial", fake)


def args(out: Path) -> list[str]:
    return ["tune", "--variant", "base", "--data", "tiny", "--config", TINY, "--no-prune"] + [
        "--space",
        "optim.lr=0.001,0.002",
        "--trainer.max_epochs=1",
        "--out",
        str(out),
    ]


def test_an_unreadable_tune_json_says_so_and_deleting_it_is_the_fix(tmp_path, monkeypatch):
    """A cut-short tune.json was called a study "with other settings": it is farm's, unreadable."""
    fake_trials(monkeypatch)
    out = tmp_path / "t"
    assert runner.invoke(app, args(out)).exit_code == 0
    marker = out / "tune.json"
    marker.write_bytes(marker.read_bytes()[:30])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = runner.invoke(app, args(out))
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert f"{marker} is unreadable (not valid JSON" in text and f"rm {marker}" in text
    assert "other settings" not in text and "Traceback" not in text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    marker.unlink()  # the fix the message gives: the study continues, its record written again
    r = runner.invoke(app, args(out))
    assert r.exit_code == 0, r.output
    assert json.loads(marker.read_text())["format"] == "farm-tune/1"
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert sorted(t["state"] for t in trials) == ["COMPLETE", "COMPLETE"]  # the earlier trials kept, none re-run


def test_a_second_tune_on_one_out_is_refused_before_any_trial(tmp_path, monkeypatch):
    """Two `farm tune --out T` 4 s apart: one died with UpdateFinishedTrialError, the other failed its live
    trial. The second is refused at once, naming the first; the first's study is untouched."""
    fake_trials(monkeypatch)
    out = tmp_path / "t"
    code = (
        "import sys, time; from pathlib import Path; from farmcli import locks\n"
        "with locks.hold(Path(sys.argv[1]), 'x'):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    first = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        r = runner.invoke(app, args(out))
    finally:
        first.kill()
        first.wait()
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert f"the tuning study {out} is being written by another farm command (process {first.pid}" in text
    assert not out.exists()
    assert runner.invoke(app, args(out)).exit_code == 0  # its lock died with it


def test_a_trial_whose_batches_cannot_fit_in_memory_is_refused_before_any_work(tmp_path, monkeypatch):
    """Each trial is checked as `farm train` checks a run: a history length the machine's memory cannot hold is
    named with the space's value, before any data is built or --out written."""
    from farmcli import machine

    monkeypatch.setattr(machine, "available_memory", lambda: 4 * 10**9)
    out = tmp_path / "t"
    r = runner.invoke(app, ["tune", "--data", "tiny", "--space", "data.history_len=10,9000", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "--space data.history_len=9000" in r.output and "needs about" in r.output
    assert not out.exists()
    r = runner.invoke(app, ["train", "--data", "tiny", "--data.history_len", "20000", "--print-config"])
    assert r.exit_code == 2 and "data.history_len = 20000: must be >= 1 and <= 10000" in r.output, r.output
