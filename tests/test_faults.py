"""Faults around a command (issue 36, round 5, rows 18, 18b, 18c, 18d): a full or read-only disk, two commands
writing one output, signals and hangs. Each case: the exit code, the words of the message, no traceback, nothing
half-written, nothing of the user's changed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farmcli.cli import app

runner = CliRunner()
TINY = str(Path(__file__).with_name("tiny-model.yaml"))
ENV = {**os.environ, "COLUMNS": "200"}


def one_line(text: str) -> str:
    return " ".join(text.split())


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporaries and lock files anywhere under ``root``: a command must leave none."""
    return sorted(p.name for p in root.rglob(".*") if p.name.endswith((".tmp", ".farm-lock")))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-data") / "tiny"
    r = runner.invoke(app, ["data", "synth", "--preset", "tiny", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("faults-runs")
    r = runner.invoke(
        app,
        ["train", "--data", str(data), "--config", TINY, "--trainer.max_epochs", "1", "--fit.runs_dir", str(runs)]
        + ["--fit.name", "r"],
    )
    assert r.exit_code == 0, r.output
    return runs / "r"


# ------------------------------------------------------------------------------------------ 18b: a full disk


@contextlib.contextmanager
def small_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` (root only: skipped elsewhere; the monkeypatched tests below run anywhere)."""
    where.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` bytes free."""
    filler = disk / "filler"
    filler.unlink(missing_ok=True)
    st = os.statvfs(disk)
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def farm(*args: str, cwd: Path | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "farmcli", *args], cwd=cwd, capture_output=True, text=True, env=env or ENV, **kw
    )


FULL_DISK = {
    # command, bytes left free, the output the message names
    "predict": (lambda d, run, data: ["predict", str(run), "--out", str(d / "p.parquet")], 20_000, "p.parquet"),
    "report": (lambda d, run, data: ["report", str(run), "--out", str(d / "rep")], 150_000, "rep/"),
    "eval": (lambda d, run, data: ["eval", str(run), "--save-predictions", str(d / "e.parquet")], 16_000, "e.parquet"),
    "train": (
        lambda d, run, data: (
            ["train", "--data", str(data), "--config", TINY, "--trainer.max_epochs", "2"]
            + ["--fit.runs_dir", str(d / "runs"), "--fit.name", "r"]
        ),
        400_000,
        "runs/r/",
    ),
    "data build": (lambda d, run, data: ["data", "build", str(data), "--cache-dir", str(d / "c")], 300_000, "c/"),
    "export torchscript": (
        lambda d, run, data: ["export", str(run), "--format", "torchscript", "--out", str(d / "m.pt")],
        100_000,
        "m.pt",
    ),
}


@pytest.mark.parametrize("name", list(FULL_DISK))
def test_a_full_disk_is_exit_2_naming_the_output_and_what_to_free(name, run, data, tmp_path):
    """Row 18b on a real full disk (a 2 MB tmpfs): no traceback, no C++ abort, no temporary, no cut-short file."""
    make, leave, named = FULL_DISK[name]
    with small_disk(tmp_path / "disk") as disk:
        fill(disk, leave)
        r = farm(*make(disk, run, data))
        text = one_line(r.stderr)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
        assert str(disk / named.rstrip("/")) in text, text
        if name == "export torchscript":  # refused before writing: the estimate does not fit
            assert "needs about" in text and "MB free" in text and "another disk" in text
        else:
            assert "no space left on the disk" in text and "free there now" in text and "Free space" in text
        assert leftovers(disk) == []
        assert not list(disk.rglob("*.ckpt"))  # a checkpoint cut short by the full disk is removed
        if name != "train":  # (the run directory of a train is farm train's: it records the failure)
            assert sorted(p.name for p in disk.iterdir() if p.name != "c") == ["filler"]


def test_printing_to_a_full_standard_output_is_exit_2_and_the_dataset_is_whole(tmp_path):
    """`farm data synth ... > /dev/full`: the dataset is written, then printing the summary fails: a message, not
    an ENOSPC traceback (nor Python's own failure to flush stdout at exit)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "farmcli", "data", "synth", "--preset", "tiny", "--out", "d"],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
    text = one_line(r.stderr)
    assert r.returncode == 2, r.stderr
    assert "cannot write to standard output" in text and "redirect standard output elsewhere" in text
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    assert farm("data", "validate", "d", cwd=tmp_path).returncode == 0  # the dataset is complete
    assert leftovers(tmp_path) == []


def test_predict_on_a_full_disk_without_a_tmpfs(run, tmp_path, monkeypatch):
    """The same, simulated: pyarrow's writer meets ENOSPC (an OSError without a file name)."""
    import pyarrow.parquet as pq

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    out = tmp_path / "p.parquet"
    r = runner.invoke(app, ["predict", str(run), "--out", str(out)])
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{out}: no space left on the disk" in text and "--out" in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


def test_eval_predictions_on_a_full_disk_without_a_tmpfs(run, tmp_path, monkeypatch):
    """polars says a full disk in a ComputeError, not an OSError: still exit 2 naming the file, nothing left."""
    import polars as pl

    def full(self, *a, **k):
        raise pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", full)
    out = tmp_path / "e.parquet"
    r = runner.invoke(app, ["eval", str(run), "--save-predictions", str(out)])
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{out}: no space left on the disk" in text and "Traceback" not in text
    assert list(tmp_path.iterdir()) == []


def test_torchscript_is_written_by_python_so_a_full_disk_is_an_error_not_an_abort(run, tmp_path, monkeypatch):
    """torch's own file writer aborted the process on a full disk (exit 134, its temporary left): the graph is
    saved to memory and written by Python, and the three outputs appear together or not at all."""
    import builtins

    real_open = builtins.open

    def full_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if "w" in mode and str(file).endswith(".tmp") and ".m.pt." in str(file):

            class Full:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    f.close()

                def write(self, data):
                    f.write(bytes(data)[:100])
                    raise OSError(errno.ENOSPC, "No space left on device")

            return Full()
        return f

    monkeypatch.setattr(builtins, "open", full_open)
    r = runner.invoke(app, ["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")])
    monkeypatch.undo()
    assert r.exit_code == 2, r.output
    assert f"{tmp_path / 'm.pt'}: no space left on the disk" in one_line(r.output)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "code, words", [(errno.EROFS, ("read-only", "writable disk")), (errno.EACCES, ("permission denied", "you may"))]
)
def test_a_read_only_or_forbidden_output_is_exit_2_saying_so(code, words, run, tmp_path, monkeypatch):
    """EROFS (a read-only disk) or EACCES on an output: named, with where else to write."""
    real = os.replace

    def refused(src, dst, *a, **k):
        if str(dst).endswith("p.parquet"):
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", refused)
    r = runner.invoke(app, ["predict", str(run), "--out", str(tmp_path / "p.parquet")])
    text = one_line(r.output)
    assert r.exit_code == 2 and all(w in text for w in words) and "Traceback" not in text, r.output
    assert str(tmp_path / "p.parquet") in text
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ 18c: two writers


@contextlib.contextmanager
def held_elsewhere(target: Path) -> Iterator[subprocess.Popen]:
    """Another process holding ``target``'s lock, as a farm command writing it does."""
    code = (
        "import sys, time; from pathlib import Path; from farmcli import locks\n"
        "with locks.hold(Path(sys.argv[1]), 'x'):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_names_its_holder_and_a_killed_holder_s_lock_is_stale(tmp_path):
    from farmcli import locks

    target = tmp_path / "out"
    with held_elsewhere(target) as other:
        with pytest.raises(locks.Busy) as info:
            with locks.hold(target, "the study", "--out"):
                raise AssertionError("taken twice")
        text = str(info.value)
        assert f"the study {target} is being written by another farm command" in text
        assert f"process {other.pid}" in text and f"kill {other.pid}" in text and "--out" in text
        assert locks.holder(target)["pid"] == other.pid
        other.send_signal(signal.SIGKILL)  # killed: its lock file stays, its lock does not
        other.wait()
    assert locks.lock_file(target).exists() and locks.holder(target) is None
    with locks.hold(target, "the study"):
        with locks.hold(target, "the study"):  # the holder may take it again
            assert locks.holder(target) is None
    assert list(tmp_path.iterdir()) == []


def _ablation(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "ablation.json").write_text(json.dumps({"format": "farm-ablation/1", "variants": ["base"], "seeds": [0]}))


SECOND_WRITER = {
    # command, its output (the lock a first writer holds), setup, what the message calls it
    "data synth": (
        lambda d, run, data: ["data", "synth", "--preset", "tiny", "--out", str(d / "Y")],
        "Y",
        None,
        "the dataset",
    ),
    "data build": (
        lambda d, run, data: ["data", "build", str(data), "--cache-dir", str(d / "c")],
        "store",
        None,
        "the sample store",
    ),
    "tune": (
        lambda d, run, data: (
            ["tune", "--data", str(data), "--config", TINY, "--space", "optim.lr=0.001,0.002"]
            + ["--trainer.max_epochs", "1", "--out", str(d / "T")]
        ),
        "T",
        None,
        "the tuning study",
    ),
    "ablate": (
        lambda d, run, data: (
            ["ablate", "--data", str(data), "--config", TINY, "--variants", "base", "--seeds", "1"]
            + ["--trainer.max_epochs", "1", "--out", str(d / "A")]
        ),
        "A",
        _ablation,
        "the ablation",
    ),
    "report": (lambda d, run, data: ["report", str(run), "--out", str(d / "R")], "R", None, "the report"),
    "train": (
        lambda d, run, data: (
            ["train", "--data", str(data), "--config", TINY, "--trainer.max_epochs", "1"]
            + ["--fit.runs_dir", str(d / "runs"), "--fit.name", "x"]
        ),
        "runs/x",
        None,
        "the run",
    ),
}


@pytest.mark.parametrize("name", list(SECOND_WRITER))
def test_a_second_writer_of_one_output_is_refused_at_once(name, run, data, tmp_path, monkeypatch):
    """Row 18c: two `farm tune --out T` failed each other's trials; two `farm data synth --out Y` did all the work
    twice, the second ending in FileExistsError. The second is refused before any work, naming the other."""
    make, output, setup, what = SECOND_WRITER[name]
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    target = tmp_path / output
    if output == "store":
        from farmcli.data.build import sample_store_path

        target = sample_store_path(data, tmp_path / "c", history_len=50, min_count=1)
    if setup:
        setup(target)
    with held_elsewhere(target) as other:
        before = snapshot(tmp_path)
        t0 = time.monotonic()
        r = runner.invoke(app, make(tmp_path, run, data))
        took = time.monotonic() - t0
        after = snapshot(tmp_path)
    text = one_line(r.output)
    assert r.exit_code == 2, r.output
    assert f"{what} {target} is being written by another farm command" in text, text
    assert f"process {other.pid}" in text and "Traceback" not in text
    assert took < 30, took
    assert after == before
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.bin"))  # nothing built


def test_ablate_tables_only_reads_while_another_ablate_trains(data, tmp_path):
    out = tmp_path / "A"
    _ablation(out)
    with held_elsewhere(out):
        r = runner.invoke(
            app,
            ["ablate", "--data", str(data), "--config", TINY, "--variants", "base", "--seeds", "1", "--out", str(out)]
            + ["--tables-only"],
        )
    assert r.exit_code == 0, r.output
    assert "not finished" in one_line(r.output)


def test_two_synths_of_one_output_the_second_refused_at_once(tmp_path):
    """Two real processes 1 s apart (the `default` preset takes several seconds)."""
    first = subprocess.Popen(
        [sys.executable, "-m", "farmcli", "data", "synth", "--preset", "default", "--out", "Y"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".Y.") and p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        t0 = time.monotonic()
        second = farm("data", "synth", "--preset", "default", "--out", "Y", cwd=tmp_path)
        assert time.monotonic() - t0 < 15
        assert second.returncode == 2, second.stderr
        text = one_line(second.stderr)
        assert "the dataset" in text and "is being written by another farm command" in text
        assert f"process {first.pid}" in text and "Traceback" not in text
        assert first.poll() is None  # the first goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ 18d: signals


SIGTERMED = {
    # command, the function a SIGTERM lands in (patched to raise what the CLI's handler raises)
    "data build": (
        lambda d, data: ["data", "build", str(data), "--cache-dir", str(d / "c")],
        "farmcli.data.build._Writer.append",
    ),
    "data inspect": (lambda d, data: ["data", "inspect", str(data)], "farmcli.data.inspect.inspect_dataset"),
    "tune": (
        lambda d, data: (
            ["tune", "--data", str(data), "--config", TINY, "--space", "optim.lr=0.001,0.002"]
            + ["--trainer.max_epochs", "1", "--out", str(d / "T")]
        ),
        "farmcli.model.module.FarmModule.compute_loss",
    ),
}


@pytest.mark.parametrize("name", list(SIGTERMED))
def test_sigterm_is_exit_130_with_a_message_in_every_command(name, data, tmp_path, monkeypatch):
    """Row 18d: SIGTERM on `farm data build`, `data inspect` and `tune` exited 143 with no message."""
    import importlib

    make, where = SIGTERMED[name]
    module, _, attr = where.rpartition(".")
    try:
        owner = importlib.import_module(module)
    except ImportError:
        module, cls = module.rsplit(".", 1)
        owner = getattr(importlib.import_module(module), cls)

    def sigterm(*a, **k):
        raise SystemExit(128 + signal.SIGTERM)  # what the CLI's SIGTERM handler raises (farmcli/interrupts.py)

    monkeypatch.setattr(owner, attr, sigterm)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    r = runner.invoke(app, make(tmp_path, data))
    assert r.exit_code == 130, r.output
    assert "interrupted (SIGTERM); nothing half-written was left behind" in one_line(r.output)
    assert "Traceback" not in r.output
    assert leftovers(tmp_path) == []
    if name == "data build":  # no store cut short
        assert not list(tmp_path.rglob("*.bin"))
    if name == "tune":  # the trial is failed in the journal: the same command runs it again
        journal = (tmp_path / "T" / "study.journal").read_text().splitlines()
        assert json.loads(journal[-1]).get("state") == 3


def test_ctrl_c_in_a_tune_trial_is_exit_130_and_the_trial_fails(data, tmp_path, monkeypatch):
    """Lightning answers Ctrl-C in a trial with sys.exit(1): it exited 1 silently, the trial left RUNNING."""
    from farmcli.model.module import FarmModule

    def ctrl_c(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(FarmModule, "compute_loss", ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    try:
        r = runner.invoke(
            app,
            ["tune", "--data", str(data), "--config", TINY, "--space", "optim.lr=0.001,0.002"]
            + ["--trainer.max_epochs", "1", "--out", str(tmp_path / "T")],
        )
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert r.exit_code == 130, r.output
    assert "interrupted; nothing half-written" in one_line(r.output) and "Traceback" not in r.output
    states = [json.loads(line).get("state") for line in (tmp_path / "T" / "study.journal").read_text().splitlines()]
    assert states[-1] == 3  # FAIL: the same command runs it again
    assert leftovers(tmp_path) == []


STUCK = """
import signal, sys, time
from pathlib import Path
from farmcli import interrupts, io, locks
interrupts.GRACE_SECONDS = 1.0
out = Path(sys.argv[1])
with interrupts.command(), locks.hold(out, "the output"), io.atomic_path(out) as tmp:
    tmp.write_text("half")
    signal.signal(signal.SIGTERM, lambda *a: None)  # as if the main thread could not run Python's handler
    signal.signal(signal.SIGINT, lambda *a: None)
    print("stuck", flush=True)
    while True:
        time.sleep(0.1)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_command_that_cannot_unwind_ends_soon_after_the_signal(sig, tmp_path):
    """`farm data import kuailive-m3` ignored SIGTERM until it ended (deep in polars): the watchdog woken by the
    signal ends a command within seconds, removing its temporaries and lock files."""
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "stuck"
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - t0 < 10, (proc.returncode, err)
    assert "interrupted" in err and "did not reach a clean point" in err and "nothing half-written" in err
    assert list(tmp_path.iterdir()) == []


def test_num_nodes_2_on_one_machine_ends_on_sigterm_naming_it(data, tmp_path):
    """Row 18: `--trainer.num_nodes 2` waits in torch's rendezvous for a node that never comes, deaf to signals."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "farmcli", "train", "--data", str(data), "--config", TINY, "--trainer.num_nodes", "2"]
        + ["--fit.runs_dir", str(tmp_path), "--fit.name", "r", "--trainer.max_epochs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, "MASTER_PORT": "29731", "FARM_HOME": str(tmp_path / "home")},
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "r" / "run.json").exists():  # written just before the fit starts its rendezvous
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    text = one_line(err)
    assert proc.returncode == 130 and time.monotonic() - t0 < 10, (proc.returncode, err)
    assert "trainer.num_nodes = 2" in text and "waited for the other nodes' processes" in text
    assert "Traceback" not in err
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["status"] == "interrupted" and "pid" not in info  # not a run that still seems to train
