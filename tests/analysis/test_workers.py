"""Runs side by side (analysis/workers.py): results, user errors and crashes come back from the processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farmcli.analysis.workers import Job, WorkerCrashed, run_jobs
from farmcli.errors import UserError


def write_pid(path: str, fail: str = "") -> None:
    import torch

    Path(path).write_text(f"{os.getpid()} {torch.get_num_threads()}")
    if fail == "user":
        raise UserError("the data is missing")
    if fail == "bug":
        raise ZeroDivisionError("a bug in the run")


def test_jobs_run_in_their_own_processes_with_their_thread_share(tmp_path):
    started, ended = [], {}
    jobs = [Job(f"j{i}", (str(tmp_path / f"{i}.txt"), "user" if i == 2 else ""), key=i) for i in range(3)]
    run_jobs(
        write_pid,
        jobs,
        parallel=2,
        threads=1,
        on_start=lambda j: started.append(j.key),
        on_end=lambda j, e: ended.update({j.key: e}),
    )
    assert started == [0, 1, 2]
    assert ended == {0: "", 1: "", 2: "the data is missing"}
    pids = {(tmp_path / f"{i}.txt").read_text() for i in range(3)}
    assert len(pids) == 3 and all(p.split()[0] != str(os.getpid()) and p.split()[1] == "1" for p in pids)


def test_a_crash_in_a_worker_stops_the_jobs_with_its_traceback(tmp_path):
    jobs = [Job("broken", (str(tmp_path / "0.txt"), "bug")), Job("never", (str(tmp_path / "1.txt"),))]
    with pytest.raises(WorkerCrashed, match="(?s)broken failed.*ZeroDivisionError: a bug in the run"):
        run_jobs(write_pid, jobs, parallel=1, threads=1, on_start=lambda j: None, on_end=lambda j, e: None)
    assert not (tmp_path / "1.txt").exists()
