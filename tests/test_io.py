"""Atomic writes, stale temporaries and what --overwrite may replace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from farmcli.errors import UserError
from farmcli.io import atomic_dir, atomic_path, output_dir, remove_stale_temps, seal_dataset


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError
    assert (target / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f".data.{dead}.x1.tmp").mkdir()  # a killed writer's directory
    (tmp_path / f".data.{dead}.x2.tmp").write_text("partial")  # and file
    alive = tmp_path / f".data.{os.getppid()}.x3.tmp"  # a writer that still runs
    alive.mkdir()
    other = tmp_path / ".other.1.x4.tmp"  # another output's temporary
    other.mkdir()
    mine = tmp_path / "notes.tmp"
    mine.write_text("user's")
    remove_stale_temps(tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name, mine.name])


def test_output_dir_replaces_only_farms_own_datasets(tmp_path):
    assert output_dir(tmp_path / "new", overwrite=False) == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert output_dir(tmp_path / "empty", overwrite=True)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "manifest.json").write_text(json.dumps({"format": "farm-events/1"}))
    (ours / "live.parquet").mkdir()
    (ours / "live.parquet" / "part-00000.parquet").write_bytes(b"rows")
    with pytest.raises(UserError, match="written_by"):
        output_dir(ours, overwrite=True)
    seal_dataset(ours, "test")
    assert output_dir(ours, overwrite=True) == ours.resolve()
    (ours / "live.parquet" / "my-notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not a dataset written by farm"):
        output_dir(ours, overwrite=True)
    with pytest.raises(UserError, match="--overwrite"):
        output_dir(ours, overwrite=False)
