"""A small, hand-checkable farm-events/1 dataset for tests of readers (not the simulator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from farmcli.data.schema import FORMAT, LIVE_COLUMNS, LIVE_TRUTH_COLUMNS, TASKS, USERS_COLUMNS, VIDEO_COLUMNS, schema_of

DAY = 86_400_000
T0 = 1_700_000_000_000


def manifest(**over) -> dict:
    m = {
        "format": FORMAT,
        "name": "toy",
        "source": "custom",
        "time_unit": "ms",
        "train_start": T0 + DAY,
        "train_end": T0 + 3 * DAY,
        "valid_end": T0 + 4 * DAY,
        "test_end": T0 + 5 * DAY,
        "description": "test data",
    }
    m.update(over)
    return m


def live_frame(n: int = 200, seed: int = 0, truth: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.3).astype(np.int8)
    ev = click * (rng.random(n) < 0.6)
    lv = ev * (rng.random(n) < 0.5)
    df = pl.DataFrame(
        {
            "user_id": rng.integers(0, 20, n),
            "author_id": rng.integers(100, 130, n),
            "ts": np.sort(rng.integers(T0, T0 + 5 * DAY, n)),
            "page": rng.integers(0, 3, n),
            "tag": rng.integers(0, 5, n),
            "cluster": rng.integers(0, 4, n),
            "play_ms": click * rng.integers(1, 100_000, n),
            "click": click,
            "effective_view": ev,
            "long_view": lv,
            "like": click * (rng.random(n) < 0.2),
            "comment": click * (rng.random(n) < 0.1),
            "gift": click * (rng.random(n) < 0.05),
        }
    ).cast(schema_of(LIVE_COLUMNS))
    if truth:
        df = df.with_columns(pl.lit(rng.random(n)).alias(c) for c in (f"p_{t}" for t in TASKS)).cast(
            schema_of(LIVE_TRUTH_COLUMNS)
        )
    return df


def video_frame(n: int = 900, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_id": rng.integers(0, 20, n),
            "author_id": rng.integers(110, 200, n),
            "ts": np.sort(rng.integers(T0 - DAY, T0 + 5 * DAY, n)),
            "page": rng.integers(0, 3, n),
            "tag": rng.integers(0, 5, n),
            "play_ms": rng.integers(0, 60_000, n),
            **{
                f: (rng.random(n) < p).astype(np.int8)
                for f, p in (("long_view", 0.3), ("like", 0.05), ("comment", 0.02), ("follow", 0.01), ("share", 0.01))
            },
        }
    ).cast(schema_of(VIDEO_COLUMNS))


def users_frame() -> pl.DataFrame:
    levels = ["low", "mid", "high"]
    return pl.DataFrame({"user_id": list(range(20)), "activity": [levels[i % 3] for i in range(20)]}).cast(
        schema_of(USERS_COLUMNS)
    )


def write_dataset(
    root: Path,
    live: pl.DataFrame | None = None,
    video: pl.DataFrame | None = None,
    users: pl.DataFrame | None | bool = None,
    manifest_obj: dict | None = None,
    shards: int = 1,
) -> Path:
    """Write a valid toy dataset (or the given frames) to root; shards > 1 writes folders of parquet shards."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest_obj if manifest_obj is not None else manifest()))
    frames = {
        "live": live if live is not None else live_frame(),
        "video": video if video is not None else video_frame(),
    }
    if users is not False:
        frames["users"] = users if users is not None else users_frame()
    for name, df in frames.items():
        if shards > 1 and name != "users":
            d = root / f"{name}.parquet"
            d.mkdir()
            bounds = np.linspace(0, df.height, shards + 1).astype(int)
            for i in range(shards):
                df.slice(bounds[i], bounds[i + 1] - bounds[i]).write_parquet(d / f"part-{i:05d}.parquet")
        else:
            df.write_parquet(root / f"{name}.parquet")
    return root
