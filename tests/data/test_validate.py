import json
import subprocess
import sys

import polars as pl
import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.validate import validate
from tests.factory import live_frame, manifest, users_frame, video_frame, write_dataset

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_valid_dataset_passes_with_row_counts(tmp_path):
    root = write_dataset(tmp_path / "ds")
    r = run("data", "validate", root)
    assert r.exit_code == 0, r.output
    assert "valid" in r.output and "200" in r.output and "900" in r.output
    rep = validate(root)
    assert rep.ok and rep.rows == {"live": 200, "video": 900, "users": 20}


def test_sharded_tables_accepted(tmp_path):
    assert validate(write_dataset(tmp_path / "ds", shards=3)).ok


def test_extra_columns_ignored_and_users_optional(tmp_path):
    live = live_frame().with_columns(pl.lit("x").alias("whatever"))
    assert validate(write_dataset(tmp_path / "ds", live=live, users=False)).ok


def test_funnel_violations_are_warnings(tmp_path):
    live = live_frame().with_columns(pl.lit(1, dtype=pl.Int8).alias("gift"))
    rep = validate(write_dataset(tmp_path / "ds", live=live))
    assert rep.ok
    assert any("gift without click" in w.message for w in rep.warnings)


def test_other_integer_width_is_a_warning(tmp_path):
    live = live_frame().with_columns(pl.col("page").cast(pl.Int64))
    rep = validate(write_dataset(tmp_path / "ds", live=live))
    assert rep.ok and any("page" in w.where for w in rep.warnings)


def _live_with(**cols):
    return live_frame().with_columns(**cols)


BAD = {
    "missing live file": (lambda root: (root / "live.parquet").unlink(), "live.parquet", "missing"),
    "missing column": (dict(live=live_frame().drop("gift")), "gift", "missing"),
    "wrong type": (dict(live=_live_with(click=pl.col("click").cast(pl.String))), "click", "type"),
    "float flag": (dict(live=_live_with(like=pl.col("like").cast(pl.Float64))), "like", "type"),
    "nulls": (
        dict(
            video=video_frame().with_columns(
                pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("tag")).alias("tag")
            )
        ),
        "tag",
        "null",
    ),
    "non-binary flag": (dict(live=_live_with(click=pl.col("click") * 2)), "click", "outside {0, 1}"),
    "negative id": (dict(video=video_frame().with_columns(pl.col("user_id") - 5)), "user_id", "negative"),
    "truth out of range": (dict(live=_live_with(p_gift=pl.col("p_gift") + 1.5)), "p_gift", "outside [0, 1]"),
    "empty table": (dict(video=video_frame().head(0)), "video.parquet", "empty"),
    "bad activity": (dict(users=users_frame().with_columns(activity=pl.lit("medium"))), "activity", "low, mid, high"),
    "unknown format": (dict(manifest_obj=manifest(format="farm-events/9")), "manifest.json", "farm-events/9"),
    "boundaries out of order": (
        dict(manifest_obj=manifest(valid_end=manifest()["train_end"] - 1)),
        "manifest.json",
        "out of order",
    ),
    "missing manifest key": (
        dict(manifest_obj={k: v for k, v in manifest().items() if k != "test_end"}),
        "manifest.json",
        "test_end",
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_exit_2_names_problem(tmp_path, kind):
    change, where, words = BAD[kind]
    if callable(change):
        root = write_dataset(tmp_path / "ds")
        change(root)
    else:
        root = write_dataset(tmp_path / "ds", **change)
    r = run("data", "validate", root)
    assert r.exit_code == 2, r.output
    assert where in r.output and words in r.output, r.output
    assert "Traceback" not in r.output
    assert "Fix:" in r.output


def test_manifest_not_json(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (root / "manifest.json").write_text("{oops")
    r = run("data", "validate", root)
    assert r.exit_code == 2 and "not valid JSON" in r.output


def test_corrupt_parquet(tmp_path):
    root = write_dataset(tmp_path / "ds")
    (root / "video.parquet").write_bytes(b"not parquet at all")
    r = run("data", "validate", root)
    assert r.exit_code == 2 and "cannot be read as parquet" in r.output


def test_every_problem_listed_at_once(tmp_path):
    live = live_frame().drop("gift").with_columns(pl.col("user_id") - 100)
    root = write_dataset(tmp_path / "ds", live=live, manifest_obj=manifest(format="nope"))
    rep = validate(root)
    wheres = " ".join(p.where for p in rep.errors)
    assert "gift" in wheres and "user_id" in wheres and "manifest.json" in wheres


def test_json_report(tmp_path):
    root = write_dataset(tmp_path / "ds", live=live_frame().drop("gift"))
    r = run("data", "validate", root, "--json")
    assert r.exit_code == 2
    start = r.stdout.index("{")
    rep = json.loads(r.stdout[start:])
    assert rep["valid"] is False and rep["errors"]


def test_missing_directory_real_process_no_traceback(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "farmcli", "data", "validate", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert p.returncode == 2
    assert "Traceback" not in p.stderr + p.stdout
    assert "no such dataset directory" in p.stderr + p.stdout
