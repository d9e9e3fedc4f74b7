import json
from pathlib import Path

import polars as pl
import pytest

from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    FORMAT,
    LIVE_COLUMNS,
    LIVE_TRUTH_COLUMNS,
    TASKS,
    USERS_COLUMNS,
    VIDEO_COLUMNS,
    VIDEO_FLAGS,
    schema_of,
)
from farmcli.data.simulator import PRESETS, SimConfig, sim_config, synthesize
from farmcli.errors import UserError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scan(root: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(sorted((root / f"{table}.parquet").glob("part-*.parquet")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "tiny"
    synthesize(sim_config("tiny"), out)
    return out


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = tmp_path / "again"
    synthesize(sim_config("tiny"), again)
    a, b = _files(tiny), _files(again)
    assert a.keys() == b.keys() and a == b
    other = tmp_path / "other"
    synthesize(sim_config("tiny", seed=1), other)
    c = _files(other)
    assert c["live.parquet/part-00000.parquet"] != a["live.parquet/part-00000.parquet"]
    assert c["video.parquet/part-00000.parquet"] != a["video.parquet/part-00000.parquet"]


def test_shards_per_block_and_progress(tmp_path):
    calls = []
    cfg = sim_config("tiny", n_users=50, block_users=20, n_live_authors=50, n_video_authors=200)
    summary = synthesize(cfg, tmp_path / "ds", on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(20, 50), (40, 50), (50, 50)]
    for table in ("live", "video", "users"):
        assert len(list((tmp_path / "ds" / f"{table}.parquet").glob("part-*.parquet"))) == 3
    users = _scan(tmp_path / "ds", "users")
    assert users["user_id"].to_list() == list(range(50))
    assert summary["rows"]["live"] == _scan(tmp_path / "ds", "live").height


def test_tables_conform_to_the_format(tiny):
    m = json.loads((tiny / "manifest.json").read_text())
    assert m["format"] == FORMAT and m["time_unit"] == "ms" and m["source"] == "synthetic"
    assert m["name"] == "synthetic-tiny"
    assert m["train_start"] < m["train_end"] <= m["valid_end"] < m["test_end"]
    assert SimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in m["simulator"].items()}) == sim_config(
        "tiny"
    )
    start = m["simulator"]["start_ms"]

    live, video, users = _scan(tiny, "live"), _scan(tiny, "video"), _scan(tiny, "users")
    assert live.schema == pl.Schema(schema_of(LIVE_COLUMNS + LIVE_TRUTH_COLUMNS))
    assert video.schema == pl.Schema(schema_of(VIDEO_COLUMNS))
    assert users.schema == pl.Schema(schema_of(USERS_COLUMNS))
    assert set(users["activity"]) <= set(ACTIVITY_LEVELS)

    for df, flags in ((live, TASKS), (video, VIDEO_FLAGS)):
        assert df.height > 0
        for f in flags:
            assert set(df[f].unique()) <= {0, 1}
        for c in ("user_id", "author_id", "page", "tag", "play_ms"):
            assert df[c].min() >= 0
        assert df["ts"].min() >= start and df["ts"].max() < m["test_end"]
        assert df["ts"].min() < m["train_start"]  # warm-up history is written
        assert df.equals(df.sort("user_id", "ts", maintain_order=True))
    assert live["cluster"].min() >= 0
    for t in TASKS:
        assert live[f"p_{t}"].min() >= 0 and live[f"p_{t}"].max() <= 1
    clicked = live["click"] == 1
    for t in ("effective_view", "long_view", "like", "comment", "gift"):
        assert (live[t] <= live["click"]).all()
    assert (live["long_view"] <= live["effective_view"]).all()
    assert (live.filter(~clicked)["play_ms"] == 0).all()
    ev = live.filter(clicked)
    assert ((ev["play_ms"] < 10_000) == (ev["effective_view"] == 0)).all()
    assert ((ev["play_ms"] >= 60_000) == (ev["long_view"] == 1)).all()
    # One author id space: live authors that post videos keep their id.
    assert len(set(live["author_id"]) & set(video["author_id"])) > 0


def test_existing_output_needs_overwrite(tiny):
    with pytest.raises(UserError, match="exists"):
        synthesize(sim_config("tiny"), tiny)


def test_video_to_live_ratio_near_nine(tiny):
    ratio = _scan(tiny, "video").height / _scan(tiny, "live").height
    assert 8.0 < ratio < 10.0


def test_low_active_users_have_shorter_live_histories(tiny):
    clicks = _scan(tiny, "live").group_by("user_id").agg(pl.col("click").sum())
    per_level = (
        _scan(tiny, "users")
        .join(clicks, on="user_id", how="left")
        .fill_null(0)
        .group_by("activity")
        .agg(pl.col("click").mean())
    )
    mean = dict(zip(per_level["activity"], per_level["click"]))
    assert mean["low"] * 3 < mean["mid"] < mean["high"]


def test_config_errors_name_the_setting():
    with pytest.raises(UserError, match="huge"):
        sim_config("huge")
    with pytest.raises(UserError, match="n_userz"):
        sim_config("tiny", n_userz=5)
    with pytest.raises(UserError, match="n_users"):
        sim_config("tiny", n_users="many")
    with pytest.raises(UserError, match="n_users"):
        sim_config("tiny", n_users=0)
    with pytest.raises(UserError, match="p_live"):
        sim_config("tiny", p_live=1.5)
    with pytest.raises(UserError, match="activity_shares"):
        sim_config("tiny", activity_shares=[0.5, 0.5])
    cfg = sim_config("small", rho=1, sessions_per_day=[1, 2, 3])
    assert cfg.rho == 1.0 and cfg.sessions_per_day == (1.0, 2.0, 3.0) and cfg.n_users == PRESETS["small"]["n_users"]
    assert sim_config().n_users == 20000


@pytest.mark.slow
def test_target_rates_on_small(tmp_path):
    """SIMULATOR.md 'Target rates', measured like `farm data inspect` (live samples from train_start on)."""
    out = tmp_path / "small"
    synthesize(sim_config("small"), out)
    m = json.loads((out / "manifest.json").read_text())
    live = _scan(out, "live").filter(pl.col("ts") >= m["train_start"])
    video = _scan(out, "video")
    clicks = live["click"].sum()
    assert 0.08 <= clicks / live.height <= 0.15
    of_clicks = {t: live[t].sum() / clicks for t in TASKS[1:]}
    bounds = {
        "effective_view": (0.50, 0.70),
        "long_view": (0.20, 0.35),
        "like": (0.03, 0.08),
        "comment": (0.01, 0.04),
        "gift": (0.003, 0.015),
    }
    for t, (lo, hi) in bounds.items():
        assert lo <= of_clicks[t] <= hi, (t, of_clicks[t])
    vbounds = {
        "long_view": (0.25, 0.40),
        "like": (0.02, 0.05),
        "comment": (0.003, 0.01),
        "follow": (0.002, 0.006),
        "share": (0.001, 0.005),
    }
    for f, (lo, hi) in vbounds.items():
        assert lo <= video[f].mean() <= hi, (f, video[f].mean())
