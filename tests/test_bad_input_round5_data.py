"""Bad input to the data commands, round 5 (issue 36, rows 8, 9, 10, 13, 17, 18f and 21): each case exits with the
expected code (2, or 0 where the input is fine by DATA_FORMAT.md), names the input, the problem and the fix, prints
no traceback and leaves the user's files alone. Farm's own caches (a sample store, a preset's simulated data) that
are damaged are rebuilt, with a note."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from farmcli.cli import app
from farmcli.data.schema import TASKS
from tests.test_bad_input import Case, Setup, _snapshot, case, files, runner
from tests.test_bad_input_data import check_data_case, then, tiny, tiny_source  # noqa: F401 - tiny_source: the module's fixture

BOUNDS = ("train_start", "train_end", "valid_end", "test_end")


@pytest.fixture(scope="module")
def tiny_store(request, tmp_path_factory):
    """The tiny preset's sample store (seed 0, L = 50)."""
    from farmcli.data.build import build_samples

    return build_samples(request.getfixturevalue("tiny_source"), tmp_path_factory.mktemp("tiny-store"))


TRAIN = ("train", "--data", "d", "--config", "{config}", "--fit.runs_dir", "{elsewhere}")


def manifest_edit(edit: Callable[[dict], None], at: str = "d") -> Setup:
    """The tiny preset at ./AT with its manifest.json passed through ``edit``."""

    def make(cwd: Path, run: Path | None) -> None:
        path = cwd / at / "manifest.json"
        m = json.loads(path.read_text())
        edit(m)
        path.write_text(json.dumps(m))

    return then(tiny(at=at), make)


def _set(**values) -> Callable[[dict], None]:
    return lambda m: m.update(values)


def _seconds(m: dict) -> None:
    for k in BOUNDS:
        m[k] //= 1000


def live_shards(*parts: tuple[str, Callable[[pl.DataFrame], pl.DataFrame]]) -> Setup:
    """The tiny preset at ./d, its live rows cut into len(parts) shards: (relative path, edit of that shard)."""

    def make(cwd: Path, run: Path | None) -> None:
        folder = cwd / "d" / "live.parquet"
        frame = pl.read_parquet(folder)
        shutil.rmtree(folder)
        folder.mkdir()
        size = -(-frame.height // len(parts))
        for i, (name, edit) in enumerate(parts):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            edit(frame.slice(i * size, size)).write_parquet(folder / name)

    return then(tiny(), make)


def _extra(f: pl.DataFrame) -> pl.DataFrame:
    return f.with_columns(pl.lit("mine").alias("note"), pl.lit(1.5).alias("score"))


def _same(f: pl.DataFrame) -> pl.DataFrame:
    return f


def _shift_out(f: pl.DataFrame, m: dict) -> pl.DataFrame:
    """Every live row out of the split windows: before train_start, or after test_end."""
    day = 86_400_000
    ts = pl.col("ts")
    return f.with_columns(pl.when(ts < m["valid_end"]).then(ts - 10 * day).otherwise(ts + 10 * day).alias("ts"))


def _valid_labels(value: int, tasks=TASKS) -> Callable[[pl.DataFrame, dict], pl.DataFrame]:
    """The labels ``tasks`` set to ``value`` in the validation window only."""

    def edit(f: pl.DataFrame, m: dict) -> pl.DataFrame:
        valid = (pl.col("ts") >= m["train_end"]) & (pl.col("ts") < m["valid_end"])
        return f.with_columns(pl.when(valid).then(value).otherwise(pl.col(t)).cast(pl.Int8).alias(t) for t in tasks)

    return edit


def replace(rel: str, make: Callable[[Path], None]) -> Setup:
    """The tiny preset at ./d with ``d/REL`` removed and made again by ``make(path)`` (a FIFO, a link, ...)."""

    def setup(cwd: Path, run: Path | None) -> None:
        path = cwd / "d" / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        make(path)

    return then(tiny(), setup)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_table(table: Path, real: Path) -> None:
    table.rename(real)
    table.symlink_to(real)


def _dev_null(path: Path) -> None:
    path.symlink_to("/dev/null")


CASES = [
    # row 8: a null boundary is named; a column the format does not name, in one shard only, is ignored
    case(
        "data",
        "validate",
        "d",
        words=("d/manifest.json", "'valid_end' is null", "must be an integer (epoch milliseconds)"),
        setup=manifest_edit(_set(valid_end=None)),
    ),
    case(
        "data",
        "build",
        "d",
        words=("'valid_end' is null", "epoch milliseconds"),
        setup=manifest_edit(_set(valid_end=None)),
    ),
    case(*TRAIN, words=("'test_end' is null", "epoch milliseconds"), setup=manifest_edit(_set(test_end=None))),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="valid farm-events/1 dataset",
        setup=manifest_edit(_set(train_start=None)),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="valid farm-events/1 dataset (0 warning(s))",
        setup=live_shards(("part-0.parquet", _same), ("part-1.parquet", _extra)),
    ),
    case(
        "data",
        "inspect",
        "d",
        code=0,
        words="rows per split",
        setup=live_shards(("part-0.parquet", _extra), ("part-1.parquet", _same)),
    ),
    case(
        "data",
        "build",
        "d",
        code=0,
        words="sample store",
        setup=live_shards(("part-0.parquet", _extra), ("part-1.parquet", _same), ("part-2.parquet", _extra)),
    ),
    # row 9: shards in a subfolder are not part of the format: refused, not half read
    case(
        "data",
        "validate",
        "d",
        words=("d/live.parquet", "sub/part-1.parquet", "farm does not read", "only its 1 top-level shard", "mv "),
        setup=live_shards(("part-0.parquet", _same), ("sub/part-1.parquet", _same)),
    ),
    case(
        "data",
        "build",
        "d",
        words=("sub/part-1.parquet", "farm does not read"),
        setup=live_shards(("part-0.parquet", _same), ("sub/part-1.parquet", _same)),
    ),
    case(
        "data",
        "inspect",
        "d",
        words=("date=1/part-0.parquet", "none of its rows would be read", "Hive-style"),
        setup=live_shards(("date=1/part-0.parquet", _same), ("date=2/part-1.parquet", _same)),
    ),
    case(
        *TRAIN,
        words=("sub/part-1.parquet", "farm does not read"),
        setup=live_shards(("part-0.parquet", _same), ("sub/part-1.parquet", _same)),
    ),
    # row 10: one class in the validation window: a warning; farm train refuses an AUC monitor it leaves undefined
    case(
        "data",
        "validate",
        "d",
        code=0,
        words=("every label is one class in the validation window", "click all 0", "--fit.monitor val/loss"),
        setup=tiny(edit=_valid_labels(0)),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words=("one class only in the validation window for gift all 0", "val/auc_gift"),
        setup=tiny(edit=_valid_labels(0, ("gift",))),
    ),
    case(
        *TRAIN,
        words=("validation split", "every task's labels are all one class", "fit.monitor = val/auc_mean", "undefined"),
        setup=tiny(edit=_valid_labels(0)),
    ),
    case(
        *TRAIN,
        "--fit.monitor",
        "val/gauc_gift",
        words=("every gift label is 0", "fit.monitor = val/gauc_gift", "--fit.monitor val/loss"),
        setup=tiny(edit=_valid_labels(0, ("gift",))),
    ),
    # row 13: no live row in any split window, with the ts range against the windows
    case(
        "data",
        "validate",
        "d",
        words=(
            "d/live.parquet",
            "no live row falls in any split window",
            "before train_start",
            "at or after test_end",
            "The ts column runs from",
            "the windows are train [",
        ),
        setup=tiny(edit=_shift_out),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("no live row falls in any split window", "every live row (", "at or after test_end"),
        setup=tiny(edit=lambda f, m: f.with_columns(pl.col("ts") - pl.col("ts").min() + m["test_end"])),
    ),
    case("data", "inspect", "d", words="no live row falls in any split window", setup=tiny(edit=_shift_out)),
    # row 21: what is not a file or a folder is named as what it is; a file is not a dataset directory
    case(
        "data",
        "validate",
        "d",
        words=("d/live.parquet", "is a FIFO (named pipe)", "not a parquet file or a folder"),
        setup=replace("live.parquet", _fifo),
    ),
    case(
        "data", "build", "d", words=("d/live.parquet", "is a FIFO (named pipe)"), setup=replace("live.parquet", _fifo)
    ),
    case(
        "data",
        "validate",
        "d",
        words=("d/manifest.json", "is a FIFO (named pipe)", "not a regular file"),
        setup=replace("manifest.json", _fifo),
    ),
    case(*TRAIN, words=("d/manifest.json", "is a FIFO (named pipe)"), setup=replace("manifest.json", _fifo)),
    case(
        "data",
        "validate",
        "d",
        words=("d/live.parquet", "is a character device (a link to /dev/null)"),
        setup=replace("live.parquet", _dev_null),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("part-00001.parquet is a FIFO", "not regular files"),
        setup=then(tiny(), lambda cwd, run: os.mkfifo(cwd / "d" / "live.parquet" / "part-00001.parquet")),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("users.parquet", "is a FIFO"),
        setup=replace("users.parquet", _fifo),
    ),
    case(
        "data",
        "validate",
        "d",
        code=0,
        words="valid farm-events/1 dataset",  # a link to a table is read as the table
        setup=then(tiny(), lambda cwd, run: _link_table(cwd / "d" / "live.parquet", cwd / "live-real.parquet")),
    ),
    case(
        "data",
        "validate",
        "f",
        words=("f: is a file, not a dataset directory", "a folder holding manifest.json"),
        setup=files(f="x"),
    ),
    case(
        "data",
        "validate",
        "d/manifest.json",
        words=("is a file, not a dataset directory", "this file's folder, d, may be the dataset"),
        setup=tiny(),
    ),
    case("data", "build", "f", words="f: is a file, not a dataset directory", setup=files(f="x")),
    case("data", "inspect", "f", words="f: is a file, not a dataset directory", setup=files(f="x")),
    case("train", "--data", "f", words=("--data 'f' is a file, not a dataset directory"), setup=files(f="x")),
    case(
        "data",
        "validate",
        "d",
        words=(
            "d/manifest.json",
            "boundaries look like seconds",
            "the ts column is not the problem",
            "multiply each by 1000",
        ),
        setup=manifest_edit(_seconds),
    ),
    case(
        "data",
        "validate",
        "d",
        words=("d/manifest.json", "boundaries look like microseconds", "divide each by 1000"),
        setup=manifest_edit(lambda m: m.update({k: m[k] * 1000 for k in BOUNDS})),
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_round5_data(c: Case, tmp_path, monkeypatch):
    check_data_case(c, tmp_path, monkeypatch)


def test_a_file_is_not_offered_as_a_place_to_synthesise(tmp_path, monkeypatch):
    """Row 21: `farm data synth --out FILE` cannot write a dataset into a file, so a file is not told to."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    r = runner.invoke(app, ["data", "validate", "f"])
    assert r.exit_code == 2 and "farm data synth --out f" not in r.output, r.output


# ------------------------------------------------------------------------------ row 17: a damaged sample store


def _build(cwd: Path, cache: Path):
    return runner.invoke(app, ["data", "build", "d", "--cache-dir", str(cache)])


def _store_dir(cache: Path) -> Path:
    (store,) = cache.iterdir()
    return store


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: b"\x07" * len(b), ("train.labels.bin", "values from 7 to 7, outside [0, 1]")),
        (lambda b: bytes([1 - b[0]]) + b[1:], ("train.labels.bin", "CRC-32 differs")),  # still 0/1: the checksum
    ],
    ids=["labels-7", "one-label-flipped"],
)
def test_a_damaged_store_is_rebuilt_with_a_note(tmp_path, monkeypatch, caplog, damage, words):
    """Row 17: a store whose array was overwritten in place (same size) is never used: `farm data build` (and so
    train, eval and predict, which reach it through the same build) says so and rebuilds it, the same bytes again."""
    from farmcli.data.store import DamagedStore, SampleStore

    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tiny()(cwd, None)
    assert _build(cwd, cache).exit_code == 0
    victim = _store_dir(cache) / "train.labels.bin"
    good = victim.read_bytes()
    victim.write_bytes(damage(good))
    with pytest.raises(DamagedStore) as e:
        SampleStore.open(_store_dir(cache))
    for w in (*words, "changed since farm built it", "Delete it and rebuild"):
        assert w in str(e.value), (w, str(e.value))
    before = _snapshot(cwd)
    with caplog.at_level(logging.WARNING, logger="farmcli"):  # the note; the CLI prints it on stderr
        r = _build(cwd, cache)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and "built the sample store" in r.output, r.output
    for w in (*words, "It is farm's cache: it is rebuilt now"):
        assert w in caplog.text, (w, caplog.text)
    assert victim.read_bytes() == good
    assert SampleStore.open(_store_dir(cache)).damage() is None
    assert _snapshot(cwd) == before


def test_a_store_without_checksums_still_has_its_values_checked(tiny_store, tmp_path):
    """A store built before farm recorded checksums opens, and labels that are not 0/1 are still caught."""
    from farmcli.data.store import DamagedStore, SampleStore

    path = tmp_path / "store"
    shutil.copytree(tiny_store.path, path)
    man = json.loads((path / "manifest.json").read_text())
    del man["checksums"]
    (path / "manifest.json").write_text(json.dumps(man))
    assert SampleStore.open(path).damage() is None
    labels = path / "valid.labels.bin"
    labels.write_bytes(b"\x07" * labels.stat().st_size)
    with pytest.raises(DamagedStore, match=r"valid.labels.bin: values from 7 to 7"):
        SampleStore.open(path)


def test_store_checks_catch_out_of_range_indices_and_offsets(tiny_store, tmp_path):
    from farmcli.data.store import DamagedStore, SampleStore

    for name, value in (("test.author", lambda a: np.iinfo(a.dtype).max), ("valid.v_end", lambda a: 10**12)):
        path = tmp_path / name
        shutil.copytree(tiny_store.path, path)
        man = json.loads((path / "manifest.json").read_text())
        del man["checksums"]  # the value check alone
        (path / "manifest.json").write_text(json.dumps(man))
        a = np.fromfile(path / f"{name}.bin", dtype=man["arrays"][name]["dtype"])
        a[0] = value(a)
        a.tofile(path / f"{name}.bin")
        with pytest.raises(DamagedStore, match=rf"{name}.bin: values from .* outside \[0, "):
            SampleStore.open(path)


# ------------------------------------------------------------------------------ row 18f: farm's preset cache


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda d: (d / "live.parquet" / "part-00000.parquet").unlink(), "live.parquet/part-00000.parquet is missing"),
        (lambda d: (d / "manifest.json").unlink(), "manifest.json missing"),
        (
            lambda d: (d / "video.parquet" / "part-00000.parquet").write_bytes(b"cut"),
            "video.parquet/part-00000.parquet changed since farm wrote it",
        ),
        (
            lambda d: shutil.copy(d / "live.parquet" / "part-00000.parquet", d / "live.parquet" / "part-00009.parquet"),
            "live.parquet/part-00009.parquet is not a file farm wrote",
        ),
    ],
    ids=["shard-missing", "manifest-missing", "shard-changed", "shard-added"],
)
def test_a_damaged_preset_cache_is_simulated_again(tmp_path, monkeypatch, caplog, damage, said):
    """Row 18f: `--data tiny` whose simulated data under $FARM_HOME lost a shard no longer fails forever: farm's own
    cache is simulated again, with a note; the same data as before."""
    from farmcli.config import DataConfig
    from farmcli.sources import dataset_dir

    monkeypatch.setenv("FARM_HOME", str(tmp_path / "home"))
    path = dataset_dir(DataConfig(source="tiny"))
    good = pl.read_parquet(path / "live.parquet")
    damage(path)
    with caplog.at_level(logging.WARNING, logger="farmcli"):
        assert dataset_dir(DataConfig(source="tiny")) == path
    assert said in caplog.text and "it is farm's cache, so it is simulated again" in caplog.text, caplog.text
    assert pl.read_parquet(path / "live.parquet").equals(good)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="farmcli"):
        dataset_dir(DataConfig(source="tiny"))  # intact now: used as it is
    assert "simulated again" not in caplog.text


def test_the_validation_check_lets_a_loss_monitor_through(tiny_store):
    """Row 10: only an AUC monitor has nothing to follow on one-class labels; a loss is defined."""
    from farmcli.data.checks import check_monitor_defined, monitor_blind, undefined_tasks
    from farmcli.errors import UserError

    class OneClass:
        def __init__(self, store):
            self.store = store

        def n(self, split):
            return self.store.n(split)

        def split(self, split):
            class S:
                labels = np.zeros((self.store.n(split), len(TASKS)), dtype=np.int8)

            return S()

    blind = OneClass(tiny_store)
    check_monitor_defined(blind, "val/loss", "tiny")
    check_monitor_defined(blind, "val/bce_click", "tiny")
    with pytest.raises(UserError, match="fit.monitor = val/uauc_mean"):
        check_monitor_defined(blind, "val/uauc_mean", "tiny")
    check_monitor_defined(tiny_store, "val/auc_mean", "tiny")  # the tiny preset's own labels: both classes
    assert monitor_blind("val/auc_click", undefined_tasks(blind.split("valid").labels)) == "every click label is 0"
