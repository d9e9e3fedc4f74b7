"""Bad input to the data commands (issue 25, rows 1, 2, 9, 15, 16 and the data parts of row 18): each case
exits with the expected code, names the problem, prints no traceback and leaves the user's files alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from farmcli.cli import app
from farmcli.data.schema import TASKS
from tests.test_bad_input import Case, Setup, case, check_case, files, runner

_TINY: list[Path] = []
"""The tiny preset, simulated once per module and copied into each case's directory."""


@pytest.fixture(scope="module", autouse=True)
def tiny_source(tmp_path_factory):
    from farmcli.data.simulator import sim_config, synthesize

    root = tmp_path_factory.mktemp("tiny-source") / "d"
    synthesize(sim_config("tiny"), root)
    _TINY[:] = [root]
    yield root
    _TINY.clear()


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def tiny(table: str = "live", edit: Callable[[pl.DataFrame, dict], pl.DataFrame] | None = None, at: str = "d") -> Setup:
    """The tiny preset at ./AT, one table passed through ``edit(frame, manifest)`` (rewritten as one shard)."""

    def make(cwd: Path, run: Path | None) -> None:
        shutil.copytree(_TINY[0], cwd / at)
        if edit is not None:
            folder = cwd / at / f"{table}.parquet"
            frame = pl.read_parquet(folder)
            for f in folder.iterdir():
                f.unlink()
            edit(frame, _manifest(cwd / at)).write_parquet(folder / "part-00000.parquet")

    return make


def then(*setups: Setup) -> Setup:
    def make(cwd: Path, run: Path | None) -> None:
        for s in setups:
            s(cwd, run)

    return make


def unmarked(at: str = "d") -> Setup:
    """A farm-events/1 dataset the user made: valid, but without farm's 'written_by' mark."""

    def make(cwd: Path, run: Path | None) -> None:
        m = _manifest(cwd / at)
        del m["written_by"]
        (cwd / at / "manifest.json").write_text(json.dumps(m))

    return then(tiny(at=at), make)


def _window(m: dict, split: str) -> pl.Expr:
    lo, hi = {"train": ("train_start", "train_end"), "test": ("valid_end", "test_end")}[split]
    return (pl.col("ts") >= m[lo]) & (pl.col("ts") < m[hi])


def _labels(value: int, where: str | None = None, tasks=TASKS):
    """Set the labels ``tasks`` to ``value`` in every row (or in the ``where`` window only)."""

    def edit(f: pl.DataFrame, m: dict) -> pl.DataFrame:
        keep = pl.lit(False) if where is None else ~_window(m, where)
        return f.with_columns(pl.when(keep).then(pl.col(t)).otherwise(value).cast(pl.Int8).alias(t) for t in tasks)

    return edit


SYNTH = ("data", "synth", "--preset", "tiny")
HUGE = "99999999999999999999999"
CASES = [
    # row 1: an id column of another integer width is read with a cast, everywhere the tables are read
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="read with a cast",
        setup=tiny(edit=lambda f, m: f.cast({"user_id": pl.Int32})),
    ),
    case(
        "data",
        "inspect",
        "d",
        code=0,
        words="rows per split",
        setup=tiny(edit=lambda f, m: f.cast({"user_id": pl.Int32})),
    ),
    case(
        "data", "build", "d", code=0, words="sample store", setup=tiny(edit=lambda f, m: f.cast({"user_id": pl.Int32}))
    ),
    case(
        "data",
        "build",
        "d",
        code=0,
        words="sample store",
        setup=tiny("video", lambda f, m: f.cast({"author_id": pl.Int32})),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("live.parquet:page", "outside the range of Int32"),
        setup=tiny(edit=lambda f, m: f.with_columns(pl.col("page").cast(pl.Int64) + 2**40)),
    ),
    # row 2: out-of-range numbers are refused before any work, naming the key and the range
    case("data", "build", "d", "--history-len", HUGE, words=("--history-len", "1..10,000"), setup=tiny()),
    case("data", "inspect", "d", "--history-len", "10001", words=("--history-len", "1..10,000"), setup=tiny()),
    case(
        *SYNTH, "--out", "o", "--set", "start_ms=99999999999999999999", words=("start_ms", "[0, 253,402,300,799,999]")
    ),
    case(*SYNTH, "--out", "o", "--set", "days_train=100000", words=("days_train", "[1, 3,650]")),
    case(*SYNTH, "--out", "o", "--set", "rho=" + "9" * 400, words=("rho", "finite number")),
    case(
        "train",
        "--data",
        "d",
        "--config",
        "{config}",
        "--data.history_len",
        HUGE,
        "--fit.runs_dir",
        "{elsewhere}",
        words=("data.history_len", ">= 1 and <= 10000"),  # refused by the config, before the data is read
        setup=tiny(),
    ),
    # row 9: --overwrite replaces only a dataset farm wrote, every file in it as farm wrote it
    case(*SYNTH, "--out", "d", "--overwrite", words=("not a dataset written by farm", "written_by"), setup=unmarked()),
    case(
        *SYNTH,
        "--out",
        "d",
        "--overwrite",
        words=("live.parquet/notes.txt", "leaves them alone"),
        setup=then(tiny(), files(**{"d__live.parquet__notes.txt": "mine"})),
    ),
    case(
        *SYNTH,
        "--out",
        "d",
        "--overwrite",
        words="video.parquet/part-00009.parquet is not a file farm wrote",
        setup=then(tiny(), files(**{"d__video.parquet__part-00009.parquet": "mine"})),
    ),
    case(
        *SYNTH,
        "--out",
        "d",
        "--overwrite",
        words="changed since farm wrote it",
        setup=tiny(edit=lambda f, m: f.head(100)),
    ),
    case(
        *SYNTH, "--out", "d", "--overwrite", words="is not a folder farm wrote", setup=then(tiny(), files(d__mine="d/"))
    ),
    case("data", "validate", "d", code=0, words="valid farm-events/1 dataset", setup=unmarked()),
    # row 15: valid files that nothing can train on are errors; a part that is missing, a warning
    case(
        "data",
        "validate",
        "d",
        words=("every live row", "at or after test_end"),
        setup=tiny(edit=lambda f, m: f.with_columns(pl.col("ts") + 10**12)),
    ),
    case(
        "data",
        "build",
        "d",
        words=("every live row", "not a valid"),
        setup=tiny(edit=lambda f, m: f.with_columns(pl.col("ts") + 10**12)),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words=("every video row", "video history is empty"),
        setup=tiny("video", lambda f, m: f.with_columns(pl.col("ts") + 10**12)),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("look like seconds", "pl.col('ts') * 1000"),
        setup=tiny(edit=lambda f, m: f.with_columns(pl.col("ts") // 1000)),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("video.parquet:ts", "look like seconds"),
        setup=tiny("video", lambda f, m: f.with_columns(pl.col("ts") // 1000)),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("no live impression in the train window", "nothing to train on"),
        setup=tiny(edit=lambda f, m: f.filter(~_window(m, "train"))),
    ),
    case(
        "train",
        "--data",
        "d",
        "--config",
        "{config}",
        "--fit.runs_dir",
        "{elsewhere}",
        words="nothing to train on",
        setup=tiny(edit=lambda f, m: f.filter(~_window(m, "train"))),
    ),
    case("data", "validate", "d", words=("every label is one class", "click all 0"), setup=tiny(edit=_labels(0))),
    case("data", "build", "d", words="every label is one class", setup=tiny(edit=_labels(0))),
    case("data", "validate", "d", words="every label is one class", setup=tiny(edit=_labels(0, "train"))),
    case(
        "data",
        "validate",
        "d",
        words="no click in the training window",
        setup=tiny(edit=_labels(0, "train", ("click",))),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words=("one class only in the test window", "gift all 0", "undefined"),
        setup=tiny(edit=_labels(0, "test", ("gift",))),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="one class only in the training window for gift all 0",
        setup=tiny(edit=_labels(0, "train", ("gift",))),
    ),
    case(
        "data",
        "inspect",
        "d",
        code=0,
        words="rows per split",  # inspect shows why a dataset cannot train
        setup=tiny(edit=lambda f, m: f.filter(~_window(m, "train"))),
    ),
    # row 16: simulator settings are checked before anything is written, and so is what they make
    case(*SYNTH, "--out", "o", "--set", "p_live=0", words=("p_live", "(0, 1)")),
    case(*SYNTH, "--out", "o", "--set", "p_live=1", words=("p_live", "(0, 1)")),
    case(*SYNTH, "--out", "o", "--set", "start_ms=-1e17", words=("start_ms", "[0, 253,402,300,799,999]")),
    case(
        *SYNTH, "--out", "o", "--set", "live_click_intercept=-60", words=("rejects, so none was written", "click all 0")
    ),
    # row 18: a manifest.json that is a directory is named as one
    case(
        "data",
        "validate",
        "d",
        words=("manifest.json", "is a directory"),
        setup=then(tiny(at="d"), lambda cwd, run: _to_dir(cwd / "d" / "manifest.json")),
    ),
]


def _to_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_data(c: Case, tmp_path, monkeypatch):
    check_data_case(c, tmp_path, monkeypatch)


def check_data_case(c: Case, tmp_path: Path, monkeypatch) -> None:
    """``check_case`` from a folder of its own, and nothing written ``{elsewhere}`` unless the case succeeds."""
    cwd, elsewhere = tmp_path / "cwd", tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    check_case(c, cwd, elsewhere=elsewhere)
    assert not elsewhere.exists() or c.code == 0


def test_overwrite_replaces_a_dataset_farm_wrote(tmp_path, monkeypatch):
    """The mark lists every file farm wrote; a dataset carrying it, unchanged, is replaced by --overwrite."""
    monkeypatch.chdir(tmp_path)
    tiny()(tmp_path, None)
    mark = _manifest(tmp_path / "d")["written_by"]
    assert mark["program"].startswith("farmcli ") and "live.parquet/part-00000.parquet" in mark["files"]
    r = runner.invoke(app, [*SYNTH, "--seed", "1", "--out", "d", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert _manifest(tmp_path / "d")["simulator"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_sigterm_in_synth_exits_130_with_a_message_and_leaves_nothing(tmp_path):
    """SIGTERM (a scheduler, `kill`) stops `farm data synth` as Ctrl-C does: one line, exit 130, no partial dataset."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "farmcli", "data", "synth", "--preset", "default", "--out", "big"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".big.") for p in tmp_path.iterdir()):  # the simulation has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "interrupted" in err and "Traceback" not in out + err
    assert list(tmp_path.iterdir()) == []
