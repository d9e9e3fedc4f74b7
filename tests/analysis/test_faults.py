"""Faults in `farm ablate` and `farm report` (issue 36, round 5, rows 18d and 18f): workers that outlive their
parent, a run trained twice at once, a report interrupted halfway, and files of farm's that cannot be read."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.schema import TASKS
from tests.test_faults import held_elsewhere  # another process holding a lock (an orphaned ablate worker)

runner = CliRunner()
TINY = str(Path(__file__).parents[1] / "tiny-model.yaml")


def one_line(text: str) -> str:
    return " ".join(text.split())


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ 18d: workers


PARENT = """
import sys
from pathlib import Path
from farmcli.analysis.workers import Job, run_jobs
sys.path.insert(0, sys.argv[2])
from test_faults import sleep_forever
run_jobs(sleep_forever, [Job("a", (sys.argv[1], "a")), Job("b", (sys.argv[1], "b"))], parallel=2, threads=1,
         on_start=lambda j: None, on_end=lambda j, e: None)
"""


def sleep_forever(folder: str, name: str) -> None:
    """A worker's job: say its pid, then train forever."""
    Path(folder, name).write_text(str(os.getpid()))
    while True:
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie waiting for init counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def test_workers_die_with_their_parent_killed_by_sigkill(tmp_path):
    """SIGKILL of the main `farm ablate --jobs 2` process left both workers training as orphans."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path), str(Path(__file__).parent)], stderr=(tmp_path / "err").open("w")
    )
    deadline = time.monotonic() + 60
    while not ((tmp_path / "a").exists() and (tmp_path / "b").exists()):
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.3)
    workers = [int((tmp_path / n).read_text()) for n in "ab"]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers)
    err = (tmp_path / "err").read_text()
    assert "Traceback" not in err and "Exception ignored" not in err, err  # a worker's exit is quiet


def test_a_rerun_refuses_a_run_an_orphaned_worker_still_trains(tmp_path, monkeypatch):
    """The re-run trained the same run beside the orphan: the run's lock (held by the worker) refuses it."""
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    out = tmp_path / "A"
    out.mkdir()
    (out / "ablation.json").write_text(json.dumps({"format": "farm-ablation/1", "variants": ["base"], "seeds": [0]}))
    with held_elsewhere(out / "runs" / "base-s0") as worker:
        before = snapshot(tmp_path)
        r = runner.invoke(
            app,
            ["ablate", "--data", "tiny", "--config", TINY, "--variants", "base", "--seeds", "1", "--out", str(out)]
            + ["--trainer.max_epochs", "1"],
        )
        after = snapshot(tmp_path)
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{out / 'runs' / 'base-s0'} is being trained by another process now (process {worker.pid}" in text
    assert f"kill {worker.pid}" in text and "Nothing was trained" in text and "Traceback" not in text
    assert {k: v for k, v in after.items() if not k.startswith("home/")} == {
        k: v for k, v in before.items() if not k.startswith("home/")
    }
    assert not (out / "runs" / "base-s0").exists()


# ------------------------------------------------------------------------------------------ 18d: the report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("fault-report-runs")
    r = runner.invoke(
        app,
        ["train", "--data", "tiny", "--config", TINY, "--trainer.max_epochs", "1", "--fit.runs_dir", str(runs)]
        + ["--fit.name", "r"],
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


def test_ctrl_c_during_a_report_leaves_its_folder_as_it_was(run, tmp_path, monkeypatch):
    """Ctrl-C after Figure 3 left its files, which the next `farm report` (even --overwrite) refused as "not
    written by farm report": the report is written beside --out and moved in at the end."""
    pytest.importorskip("matplotlib")
    from farmcli.analysis.report import gates

    out = tmp_path / "rep"
    real = gates.section

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gates, "section", ctrl_c)
    r = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert r.exit_code == 130, r.output
    assert "interrupted; nothing half-written" in one_line(r.output)
    assert list(tmp_path.iterdir()) == []  # no figure, no folder, no temporary, no lock

    monkeypatch.setattr(gates, "section", real)
    r = runner.invoke(app, ["report", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    first = snapshot(out)

    monkeypatch.setattr(gates, "section", ctrl_c)  # interrupted again, replacing the earlier report
    r = runner.invoke(app, ["report", str(run), "--out", str(out), "--overwrite"])
    assert r.exit_code == 130, r.output
    assert snapshot(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["rep"]

    monkeypatch.setattr(gates, "section", real)
    r = runner.invoke(app, ["report", str(run), "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert set(snapshot(out)) == set(first)


# ------------------------------------------------------------------------------------------ 18f: unreadable files


def _finished_run(runs: Path, name: str, table: str) -> None:
    run = runs / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    (run / "eval-test.json").write_text(table)


def _eval(auc: float) -> str:
    cell = {"auc": auc, "uauc": auc - 10, "gauc": auc - 9, "n_users": 5, "n_skipped": 0, "n_samples": 50}
    groups = ("full", "low", "mid", "high")
    return json.dumps({"model": {g: {t: dict(cell) for t in TASKS} for g in groups}})


def test_tables_only_with_an_unreadable_eval_is_exit_2_naming_it(tmp_path):
    """`farm ablate --tables-only` with one run's eval-test.json cut short wrote a Base row of dashes, exit 0."""
    out = tmp_path / "A"
    out.mkdir()
    (out / "ablation.json").write_text(json.dumps({"format": "farm-ablation/1", "variants": [], "seeds": [0]}))
    _finished_run(out / "runs", "base-s0", _eval(70.0)[:40])
    _finished_run(out / "runs", "farm-s0", _eval(72.0))
    before = snapshot(tmp_path)
    args = ["ablate", "--data", "tiny", "--variants", "base,farm", "--seeds", "1", "--out", str(out), "--tables-only"]
    r = runner.invoke(app, args)
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{out / 'runs' / 'base-s0' / 'eval-test.json'} is unreadable" in text
    assert f"farm eval {out / 'runs' / 'base-s0'} --split test" in text and "Traceback" not in text
    assert snapshot(tmp_path) == before  # no table of dashes

    (out / "runs" / "base-s0" / "eval-test.json").write_text(_eval(70.0))  # what farm eval writes again
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "| - |" not in (out / "table1.md").read_text()


def test_an_unreadable_ablation_json_says_so_and_deleting_it_is_the_fix(tmp_path):
    """A cut-short ablation.json was called "not written by farm ablate": it is farm's, unreadable."""
    out = tmp_path / "A"
    out.mkdir()
    (out / "ablation.json").write_text('{"format": "farm-ablation/1", "varia')
    _finished_run(out / "runs", "base-s0", _eval(70.0))
    before = snapshot(tmp_path)
    args = ["ablate", "--data", "tiny", "--variants", "base", "--seeds", "1", "--out", str(out), "--tables-only"]
    r = runner.invoke(app, args)
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{out / 'ablation.json'} is unreadable (not valid JSON" in text and f"rm {out / 'ablation.json'}" in text
    assert "did not write" not in text and "Traceback" not in text
    assert snapshot(tmp_path) == before

    (out / "ablation.json").unlink()  # the fix the message gives
    from farmcli.analysis.ablate import check_out

    check_out(out)  # an ablation without its record: continued, and the record written again
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
