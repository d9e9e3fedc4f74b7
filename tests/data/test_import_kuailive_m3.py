"""`farm data import kuailive-m3`: a fixture in the published KuaiLive-M3 layout, imported and checked row by row."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from farmcli.cli import app
from farmcli.data.build import build_samples
from farmcli.data.importers import KLM3Options, import_kuailive_m3
from farmcli.data.importers._kmeans import kmeans_labels
from farmcli.data.importers._readers import RawTable, read_schema, ts_expr
from farmcli.data.schema import LIVE_COLUMNS, USERS_COLUMNS, VIDEO_COLUMNS, schema_of
from farmcli.data.validate import validate
from farmcli.errors import UserError
from tests.data.klm3_fixture import bj, write_klm3

runner = CliRunner()

LIVE_NAMES = list(schema_of(LIVE_COLUMNS))
VIDEO_NAMES = list(schema_of(VIDEO_COLUMNS))

# Hand-computed from the fixture's story (klm3_fixture.py). Pages: 1 feed, 2 follow, 3 nearby, 4 search (live),
# 5 autoplay, 6 click, 7 slide (video); 0 missing. Tags: 1 游戏, 2 美食, 3 音乐; 0 unknown.
# Author tags: 10 -> 2 (美食 x2 beats 游戏 x1), 13 -> 1 (游戏/音乐 tie -> smaller id), 11, 99 -> 0.
# Clusters (k = 64 > 3 authors with embeddings: one each, numbered by author id): 10 -> 1, 11 -> 2, 13 -> 3.
# user, author, ts, page, tag, cluster, play_ms, click, effective_view, long_view, like, comment, gift
LIVE = [
    (1, 10, bj(5, 20, 0, 0, 250), 1, 2, 1, 125_000, 1, 1, 1, 1, 0, 0),  # S1
    (1, 10, bj(6, 10, 0), 0, 2, 1, 0, 0, 0, 0, 0, 0, 0),  # I2: impression, no session in 101
    (1, 11, bj(6, 21, 30), 2, 0, 2, 2_500, 1, 0, 0, 0, 1, 0),  # S2: 2.5 s, not effective
    (1, 13, bj(7, 12, 0), 1, 1, 3, 45_000, 1, 1, 0, 0, 0, 1),  # S3
    (2, 11, bj(5, 23, 59, 59, 999), 0, 0, 2, 3_000, 1, 1, 0, 0, 0, 0),  # S5: no source -> page 0; 3 s effective
    (2, 13, bj(7, 15, 0, 0, 123), 0, 1, 3, 0, 0, 0, 0, 0, 0, 0),  # I4
    (2, 10, bj(8, 9, 15, 0, 500), 4, 2, 1, 60_000, 1, 1, 1, 0, 1, 1),  # S4: 60 s is a long view
    (3, 13, bj(6, 0, 0), 3, 1, 3, 0, 1, 0, 0, 0, 0, 0),  # S6: negative play -> 0
    (3, 99, bj(6, 12, 0), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),  # I6: unknown author
    (3, 11, bj(8, 22, 0), 0, 0, 2, 0, 0, 0, 0, 0, 0, 0),  # I5
]
# user, author, ts, page, tag, play_ms, long_view, like, comment, follow, share
VIDEO = [
    (1, 10, bj(5, 19, 0), 6, 2, 12_345, 1, 1, 0, 1, 0),  # P1: new like (1), follow gained
    (1, 12, bj(6, 8, 0), 7, 1, 0, 0, 0, 0, 0, 0),  # P2: leave before enter; code 3; followed already
    (2, 13, bj(7, 10, 0), 5, 3, 30_000, 1, 0, 0, 0, 0),  # P3
    (2, 12, bj(8, 23, 0), 7, 0, 0, 0, 1, 0, 0, 0),  # P4: no leave time; untagged photo
    (3, 13, bj(5, 10, 0), 6, 0, 8_000, 0, 0, 0, 0, 0),  # P7: untagged photo
    (4, 10, bj(6, 12, 0), 0, 1, 5_000, 0, 0, 0, 0, 0),  # P5: no play type -> page 0
]
# live clicks in the training days (05-05, 05-06): user 1: 2, users 2 and 3: 1, user 4: 0 -> p50 = p85 = 1
USERS = [(1, "high"), (2, "low"), (3, "low"), (4, "low")]
BOUNDS = {"train_start": bj(5, 0, 0), "train_end": bj(7, 0, 0), "valid_end": bj(8, 0, 0), "test_end": bj(9, 0, 0)}


def frame(rows, columns) -> pl.DataFrame:
    sch = schema_of(columns)
    return pl.DataFrame(rows, schema=sch, orient="row")


def assert_rows(actual: pl.DataFrame, rows, columns) -> None:
    expected = frame(rows, columns)
    assert actual.schema == expected.schema
    assert actual.to_dicts() == expected.to_dicts()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def imported(tmp_path: Path, variant: str = "published", options: KLM3Options | None = None, **fixture):
    raw = write_klm3(tmp_path / f"raw-{variant}", variant, **fixture)
    out = tmp_path / f"out-{variant}"
    # The hand-computed pages below are the 'source' mapping; the default ('none') has its own test.
    report = import_kuailive_m3(raw, out, options=options or KLM3Options(live_page="source"))
    return out, report


def read(out: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(out / f"{table}.parquet")


# --- the mapping, row by row ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["published", "alternate"])
def test_rows_match_hand_computed_tables(tmp_path, variant):
    out, rep = imported(tmp_path, variant)
    assert_rows(read(out, "live"), LIVE, LIVE_COLUMNS)
    assert_rows(read(out, "video"), VIDEO, VIDEO_COLUMNS)
    assert_rows(read(out, "users"), USERS, USERS_COLUMNS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest[k] for k in BOUNDS} == BOUNDS
    assert manifest["format"] == "farm-events/1" and manifest["source"] == "kuailive-m3"
    assert manifest["time_unit"] == "ms"


def test_id_maps_written_beside_the_dataset(tmp_path):
    out, _ = imported(tmp_path)
    pages = json.loads((out / "pages.json").read_text())
    assert [(p["id"], p["domain"], p["name"]) for p in pages["pages"]] == [
        (1, "live", "feed"),
        (2, "live", "follow"),
        (3, "live", "nearby"),
        (4, "live", "search"),
        (5, "video", "autoplay"),
        (6, "video", "click"),
        (7, "video", "slide"),
    ]
    assert pages["missing"] == 0
    tags = json.loads((out / "tags.json").read_text())
    assert [(t["id"], t["name"]) for t in tags["tags"]] == [(1, "游戏"), (2, "美食"), (3, "音乐")]
    authors = read(out, "author_attrs").sort("author_id")
    assert authors.rows() == [(10, 2, 1), (11, 0, 2), (12, 1, 0), (13, 1, 3)]


def test_report_counts_drops_and_rates(tmp_path):
    out, rep = imported(tmp_path)
    saved = json.loads((out / "import_report.json").read_text())
    assert saved == json.loads(json.dumps(rep.to_dict(), ensure_ascii=False))
    assert rep.rows_read == {"live_interaction": 8, "live_show": 8, "photo_play": 7}
    assert rep.rows_written == {"live": 10, "video": 6, "users": 4}
    d = rep.rows_dropped
    assert d["live_interaction"] == {
        "missing or negative user_id / author_id": 1,
        "missing or unreadable live_play_start_timestamp": 1,
    }
    assert d["live_show"]["missing or negative user_id / author_id"] == 1
    assert d["live_show"]["has a session of the same user and live room (that session is the click)"] == 3
    assert d["photo_play"]["missing or unreadable enter_timestamp"] == 1
    assert rep.adjusted["live_interaction"]["play_ms set to 0: negative play_duration"] == 1
    assert rep.adjusted["photo_play"]["play_ms set to 0: missing leave_timestamp"] == 1
    assert rep.label_rates["live_of_impressions"]["click"] == pytest.approx(0.6)
    assert rep.label_rates["live_of_clicks"]["gift"] == pytest.approx(2 / 6)
    assert rep.label_rates["video"]["comment"] == 0 and rep.label_rates["video"]["share"] == 0
    assert rep.label_rates["video"]["like"] == pytest.approx(2 / 6)
    assert any("video.comment = 0" in s for s in rep.not_available)
    assert any("video.share = 0" in s for s in rep.not_available)
    assert rep.value_counts["photo_play.like_status_type"] == {"0": 2, "1": 2, "2": 1, "3": 1}
    assert rep.splits["live_rows"] == {"warmup": 0, "train": 6, "valid": 2, "test": 2, "after_test_end": 0}
    assert [(x["day"], x["split"], x["live_rows"]) for x in rep.days] == [
        ("2025-05-05", "train", 2),
        ("2025-05-06", "train", 4),
        ("2025-05-07", "valid", 2),
        ("2025-05-08", "test", 2),
    ]
    assert rep.splits["p_date_agreement"] == 1.0
    assert not any("p_date" in w for w in rep.warnings)
    assert rep.missing_optional == []


def test_output_validates_and_builds_samples(tmp_path):
    out, _ = imported(tmp_path)
    report = validate(out)
    assert report.ok, [str(e) for e in report.errors]
    assert report.rows == {"live": 10, "video": 6, "users": 4}
    store = build_samples(out, tmp_path / "cache", history_len=4)
    assert {s: store.n(s) for s in ("train", "valid", "test")} == {"train": 6, "valid": 2, "test": 2}


def test_sharded_import_is_identical(tmp_path):
    """Many small user buckets (the path the full dataset takes) give exactly the one-bucket output."""
    raw = write_klm3(tmp_path / "raw")
    one = import_kuailive_m3(raw, tmp_path / "one")
    steps = []
    many = import_kuailive_m3(
        raw,
        tmp_path / "many",
        options=KLM3Options(rows_per_partition=3),
        on_progress=lambda step, done, total: steps.append((step, done, total)),
    )
    assert any(step.startswith("live rows, part 3/") for step, _, _ in steps), steps
    assert steps[-1][0] == "done" and steps[-1][1] == steps[-1][2]
    assert [d for _, d, _ in steps] == sorted(d for _, d, _ in steps)
    for table in ("live", "video", "users"):
        assert read(tmp_path / "many", table).equals(read(tmp_path / "one", table)), table
    assert many.rows_dropped == one.rows_dropped and many.label_rates == one.label_rates


def test_folder_of_parquet_shards_is_a_table(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    show = pl.read_parquet(raw / "live_show.parquet")
    (raw / "live_show.parquet").unlink()
    (raw / "live_show.parquet").mkdir()
    show.head(3).write_parquet(raw / "live_show.parquet" / "part-0.parquet")
    show.tail(5).write_parquet(raw / "live_show.parquet" / "part-1.parquet")
    rep = import_kuailive_m3(raw, tmp_path / "out", options=KLM3Options(live_page="source"))
    assert_rows(read(tmp_path / "out", "live"), LIVE, LIVE_COLUMNS)
    assert rep.rows_read["live_show"] == 8


# --- options ----------------------------------------------------------------------------------------------


def test_thresholds_like_codes_and_clusters(tmp_path):
    opts = KLM3Options(effective_view_ms=2_000, long_view_ms=45_000, like_codes=(1, 3), clusters=2)
    out, _ = imported(tmp_path, options=opts)
    live = read(out, "live")
    by_ts = {r["ts"]: r for r in live.to_dicts()}
    assert by_ts[bj(6, 21, 30)]["effective_view"] == 1  # S2: 2.5 s >= 2 s
    assert by_ts[bj(7, 12, 0)]["long_view"] == 1  # S3: 45 s >= 45 s
    # k = 2: rooms of authors 10 and 13 point the same way, author 11's elsewhere
    assert dict(live.select("author_id", "cluster").unique().iter_rows()) == {10: 1, 11: 2, 13: 1, 99: 0}
    video = read(out, "video")
    assert video.filter(pl.col("ts") == bj(6, 8, 0))["like"].item() == 1  # P2: code 3 now counts


def test_split_days_and_warmup(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    import_kuailive_m3(raw, tmp_path / "a", options=KLM3Options(valid_days=0, test_days=2))
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert (m["train_start"], m["train_end"], m["valid_end"], m["test_end"]) == (
        bj(5, 0, 0),
        bj(7, 0, 0),
        bj(7, 0, 0),
        bj(9, 0, 0),
    )
    assert validate(tmp_path / "a").ok
    rep = import_kuailive_m3(raw, tmp_path / "b", options=KLM3Options(warmup_days=1))
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (m["train_start"], m["train_end"]) == (bj(6, 0, 0), bj(7, 0, 0))
    assert rep.splits["live_rows"]["warmup"] == 2 and rep.days[0]["split"] == "warmup"
    # activity comes from clicks in [05-06, 05-07): users 1, 3 have one, users 2, 4 none
    assert read(tmp_path / "b", "users").rows() == [(1, "mid"), (2, "low"), (3, "mid"), (4, "low")]
    with pytest.raises(UserError, match="leave no training day"):
        import_kuailive_m3(raw, tmp_path / "c", options=KLM3Options(valid_days=2, test_days=2))
    assert not (tmp_path / "c").exists()


def test_day_timezone_moves_the_boundaries(tmp_path):
    out, _ = imported(tmp_path, options=KLM3Options(day_tz="UTC"))
    m = json.loads((out / "manifest.json").read_text())
    # first live row 05-05 12:00 UTC, last 05-08 14:00 UTC
    utc = lambda d: int(pl.Series([date(2025, 5, d)]).cast(pl.Datetime("ms")).dt.epoch("ms")[0])  # noqa: E731
    assert (m["train_start"], m["train_end"], m["valid_end"], m["test_end"]) == (utc(5), utc(7), utc(8), utc(9))


def test_naive_timezone_and_p_date_check(tmp_path):
    out, rep = imported(tmp_path, options=KLM3Options(naive_tz="Asia/Shanghai"))
    live = read(out, "live")
    assert live["ts"].to_list() != [r[2] for r in LIVE]
    assert sorted(live["ts"].to_list()) == sorted(r[2] - 8 * 3_600_000 for r in LIVE)
    assert rep.splits["p_date_agreement"] == pytest.approx(5 / 6)
    assert any("p_date" in w and "--naive-tz" in w for w in rep.warnings)


def test_live_page_none_is_the_default(tmp_path):
    raw = write_klm3(tmp_path / "raw-default")
    rep = import_kuailive_m3(raw, tmp_path / "out-default")  # no options: the leak-free default
    assert read(tmp_path / "out-default", "live")["page"].to_list() == [0] * 10
    assert any("live.page = 0 on every row" in s for s in rep.not_available)
    assert not any("gives its click label away" in w for w in rep.warnings)
    out, rep = imported(tmp_path, options=KLM3Options(live_page="source"))
    assert any("gives its click label away" in w for w in rep.warnings)


def test_live_page_none(tmp_path):
    out, rep = imported(tmp_path, options=KLM3Options(live_page="none"))
    assert read(out, "live")["page"].to_list() == [0] * 10
    pages = json.loads((out / "pages.json").read_text())["pages"]
    assert [(p["id"], p["name"]) for p in pages] == [(1, "autoplay"), (2, "click"), (3, "slide")]
    assert read(out, "video")["page"].to_list() == [2, 3, 1, 3, 2, 0]
    assert not any("gives its click label away" in w for w in rep.warnings)


def test_without_optional_files(tmp_path):
    raw = write_klm3(tmp_path / "raw", embeddings=False, room_meta=False)
    for name in ("photo_tag.csv", "photo_meta.parquet"):
        (raw / name).unlink()
    rep = import_kuailive_m3(raw, tmp_path / "out")
    live, video = read(tmp_path / "out", "live"), read(tmp_path / "out", "video")
    assert live["tag"].to_list() == [0] * 10 and live["cluster"].to_list() == [0] * 10
    assert video["tag"].to_list() == [0] * 6
    assert sorted(rep.missing_optional) == ["live_emb_64", "live_room_meta", "photo_meta", "photo_tag"]
    assert any("photo_tag was not found" in s for s in rep.not_available)
    assert any("live_emb_64 was not found" in s for s in rep.not_available)
    assert validate(tmp_path / "out").ok


def test_fallback_maps_without_meta_tables(tmp_path):
    """No photo_meta: photo -> author from the plays (P6 is dropped for its time but still names an owner).
    No live_room_meta: room -> author from the sessions and impressions."""
    raw = write_klm3(tmp_path / "raw", room_meta=False)
    (raw / "photo_meta.parquet").unlink()
    rep = import_kuailive_m3(raw, tmp_path / "out")
    authors = read(tmp_path / "out", "author_attrs").sort("author_id")
    # played photos: author 10: 1000 美食, 1002 游戏 (tie -> 游戏 = 1); 13: 1300 游戏, 1301 音乐 -> 1
    assert authors.rows() == [(10, 1, 1), (11, 0, 2), (12, 1, 0), (13, 1, 3)]
    assert any("photo_meta was not found" in w for w in rep.warnings)


# --- errors -----------------------------------------------------------------------------------------------


def test_cli_import_prints_and_saves_report(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out", "--like-codes", "1,3")
    assert r.exit_code == 0, r.output
    assert "live_interaction" in r.output and "label rates" in r.output and "import_report.json" in r.output
    rep = json.loads((tmp_path / "out" / "import_report.json").read_text())
    assert rep["options"]["like_codes"] == [1, 3]
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out")
    assert r.exit_code == 2 and "already exists" in r.output
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out", "--overwrite", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{") : r.stdout.rindex("}") + 1])["rows_written"]["live"] == 10


def test_missing_required_file_exit_2(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    (raw / "live_show.parquet").unlink()
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "live_show.parquet" in r.output and "missing" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_missing_required_column_exit_2(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    pl.read_parquet(raw / "photo_play.parquet").drop("like_status_type").write_parquet(raw / "photo_play.parquet")
    csv = pl.read_csv(raw / "live_interaction.csv", infer_schema=False).drop("play_duration")
    csv.write_csv(raw / "live_interaction.csv")
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert "photo_play.parquet" in flat and "'like_status_type'" in flat
    assert "live_interaction.csv" in flat and "'play_duration'" in flat
    assert not (tmp_path / "out").exists()


def test_bad_options_exit_2(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    for args, words in (
        (["--like-codes", "x"], "comma-separated integers"),
        (["--long-view-ms", "1000"], "long_view_ms"),
        (["--day-tz", "Mars/Base"], "unknown time zone"),
        (["--live-page", "maybe"], "live_page"),
    ):
        r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out", *args)
        assert r.exit_code == 2 and words in r.output, (args, r.output)


def test_unreadable_timestamp_column_exit_2(tmp_path):
    raw = write_klm3(tmp_path / "raw")
    df = pl.read_csv(raw / "live_interaction.csv", infer_schema=False)
    df.with_columns(live_play_start_timestamp=pl.lit("soon")).write_csv(raw / "live_interaction.csv")
    r = run("data", "import", "kuailive-m3", raw, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert "live_interaction.csv" in flat and "live_play_start_timestamp" in flat and "soon" in flat


# --- building blocks --------------------------------------------------------------------------------------

MS = 1_746_446_400_250  # 2025-05-05 12:00:00.250 UTC


@pytest.mark.parametrize(
    "values, dtype, naive_tz, expected",
    [
        ([MS // 1000], pl.Int64, "UTC", MS // 1000 * 1000),  # epoch seconds
        ([MS], pl.Int64, "UTC", MS),  # epoch ms
        ([MS * 1000], pl.Int64, "UTC", MS),  # epoch us
        ([MS * 1_000_000], pl.Int64, "UTC", MS),  # epoch ns
        ([float(MS)], pl.Float64, "UTC", MS),
        (["2025-05-05 12:00:00.250"], pl.String, "UTC", MS),
        (["2025-05-05T12:00:00.25"], pl.String, "UTC", MS),
        (["2025-05-05T12:00:00.250Z"], pl.String, "Asia/Shanghai", MS),  # explicit zone wins
        (["2025-05-05 20:00:00.250+08:00"], pl.String, "UTC", MS),
        (["2025-05-05 20:00:00.250"], pl.String, "Asia/Shanghai", MS),  # naive text in naive_tz
        ([str(MS)], pl.String, "UTC", MS),  # digits in a csv
        ([str(MS // 1000)], pl.String, "UTC", MS // 1000 * 1000),
    ],
)
def test_timestamp_encodings(tmp_path, values, dtype, naive_tz, expected):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"t": pl.Series(values, dtype=dtype)}).write_parquet(path)
    t = RawTable("t", path, "parquet", [path])
    read_schema(t)
    assert t.scan().select(ts_expr(t, "t", naive_tz)).collect().item() == expected


@pytest.mark.parametrize(
    "dtype",
    [
        pl.Datetime("ms"),
        pl.Datetime("us"),
        pl.Datetime("ns"),
        pl.Datetime("us", "UTC"),
        pl.Datetime("ms", "Asia/Shanghai"),
    ],
)
def test_datetime_types(tmp_path, dtype):
    path = tmp_path / "t.parquet"
    s = pl.Series([MS], dtype=pl.Int64).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    s = (
        s.dt.convert_time_zone(dtype.time_zone).cast(dtype)
        if dtype.time_zone
        else s.dt.replace_time_zone(None).cast(dtype)
    )
    pl.DataFrame({"t": s}).write_parquet(path)
    t = RawTable("t", path, "parquet", [path])
    read_schema(t)
    assert t.scan().select(ts_expr(t, "t", "UTC")).collect().item() == MS


def test_kmeans_is_deterministic_and_numbered_by_first_row():
    rng = np.random.default_rng(3)
    centers = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    x = np.concatenate([c + rng.normal(0, 0.1, size=(30, 2)) for c in centers])[rng.permutation(90)]
    a = kmeans_labels(x, 3, seed=1)
    b = kmeans_labels(x, 3, seed=7)
    assert a[0] == 1 and set(a.tolist()) == {1, 2, 3}
    assert (a == b).all()  # well-separated groups: the same partition and ids whatever the seed
    assert kmeans_labels(x[:2], 64).tolist() == [1, 2]
    assert kmeans_labels(np.zeros((4, 2)), 3).tolist() == [1, 1, 1, 1]
