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


# ------------------------------------------------------------------------------------------ issue 36, row 18b


def _enospc() -> OSError:
    """What a write to a full disk raises from pyarrow, numpy or a file object: no file name in it."""
    import errno

    return OSError(errno.ENOSPC, "No space left on device")


def test_atomic_writers_name_their_output_on_a_full_disk_and_leave_nothing(tmp_path):
    import errno

    from farmcli.io import disk_full

    for writer, target in ((atomic_path, tmp_path / "out.parquet"), (atomic_dir, tmp_path / "store")):
        with pytest.raises(OSError) as info:
            with writer(target) as tmp:
                (tmp if writer is atomic_path else tmp / "a.bin").write_bytes(b"half")
                raise _enospc()
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
        assert disk_full(info.value) is info.value
        assert list(tmp_path.iterdir()) == []  # no temporary, no lock file


def test_a_file_inside_a_temporary_directory_is_named_as_the_output_s(tmp_path):
    from farmcli.io import staging_dir

    with pytest.raises(OSError) as info:
        with staging_dir(tmp_path / "report") as stage:
            with atomic_path(stage / "fig.csv") as tmp:
                tmp.write_text("x")
                raise _enospc()
    assert info.value.filename == str(tmp_path / "report" / "fig.csv")
    assert list(tmp_path.iterdir()) == []


def test_torch_s_native_write_failure_on_a_full_disk_names_the_output(tmp_path, monkeypatch):
    import errno
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
    with pytest.raises(OSError) as info:
        with atomic_path(tmp_path / "m.pt"):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                "data/0: file write failed"
            )
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_the_first_failure_is_named_not_the_cleanup_s(tmp_path):
    """A checkpoint copied onto a full disk fails (its target named), then writing run.json fails too: the
    checkpoint is what the user must hear about."""
    import errno

    from farmcli.io import disk_full

    first = OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpx", str(tmp_path / "best.ckpt"))
    try:
        try:
            raise first
        except OSError:
            with atomic_path(tmp_path / "run.json"):
                raise _enospc()  # noqa: B904 - raised while handling the first, as a cleanup is
    except OSError as e:
        assert e.filename == str(tmp_path / "run.json")
        assert disk_full(e) is first


def test_an_output_that_appeared_meanwhile_is_not_overwritten(tmp_path):
    """Another process put the dataset in place after this one checked --out: refused before any work."""
    (tmp_path / "d").mkdir()
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "d"):
            raise AssertionError("no work may start")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_moving_staged_files_holds_back_a_signal_until_every_file_is_in_place(tmp_path):
    import signal

    from farmcli.io import move_into

    stage, out = tmp_path / "stage", tmp_path / "out"
    stage.mkdir()
    for name in "abc":
        (stage / name).write_text(name)
    real = os.replace

    def replace(src, dst):
        real(src, dst)
        if str(dst).endswith("a"):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first file

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            move_into(stage, out, ["a", "b", "c"])
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
