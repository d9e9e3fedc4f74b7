"""What a modeller wants to know about a dataset, computed with lazy scans (no whole table in memory)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from farmcli.data.activity import user_activity
from farmcli.data.dataset import Dataset, in_window, split_windows
from farmcli.data.schema import ACTIVITY_LEVELS, TASKS, TRUTH_COLUMNS, VIDEO_FLAGS

HISTORY_USERS = 20_000
"""History-length percentiles are taken over the samples of at most about this many users (a hash sample)."""


def split_expr(ds: Dataset) -> pl.Expr:
    """A row's split: its window's name, 'warmup' before train_start, 'ignored' from test_end on."""
    ts, windows = pl.col("ts"), split_windows(ds.manifest)
    e: Any = pl.when(ts >= windows["test"][1]).then(pl.lit("ignored"))  # a Then, then a ChainedThen
    for split in ("test", "valid"):
        e = e.when(ts >= windows[split][0]).then(pl.lit(split))
    if (start := windows["train"][0]) is not None:
        e = e.when(ts < start).then(pl.lit("warmup"))
    return e.otherwise(pl.lit("train")).alias("split")


def split_rows(ds: Dataset, table: str) -> dict[str, int]:
    """Rows of ``table`` per split of :func:`split_expr`."""
    df = ds.scan(table).select(split_expr(ds)).group_by("split").agg(pl.len()).collect(engine="streaming")
    got = dict(zip(df["split"], df["len"]))
    return {s: int(got.get(s, 0)) for s in ("warmup", "train", "valid", "test", "ignored")}


def _samples(ds: Dataset, live: pl.LazyFrame) -> pl.LazyFrame:
    """The live rows that are samples: in [train_start, test_end)."""
    return live.filter(in_window(pl.col("ts"), ds.manifest.train_start, ds.manifest.test_end))


def label_rates(live: pl.LazyFrame) -> dict[str, dict[str, float]]:
    """Each task's positives over the rows of ``live`` and over its clicks (NaN where there is none)."""
    row = (
        live.select(pl.len().alias("n"), *(pl.col(t).cast(pl.Int64).sum().alias(t) for t in TASKS))
        .collect(engine="streaming")
        .row(0, named=True)
    )
    n, clicks = row["n"], row["click"]
    return {
        t: {
            "of_impressions": row[t] / n if n else math.nan,
            "of_clicks": (row[t] / clicks if clicks else math.nan) if t != "click" else 1.0,
        }
        for t in TASKS
    }


def video_rates(video: pl.LazyFrame) -> dict[str, float]:
    """Each video flag's mean over the rows of ``video`` (NaN where there is none)."""
    row = (
        video.select(*(pl.col(f).cast(pl.Float64).mean().alias(f) for f in VIDEO_FLAGS))
        .collect(engine="streaming")
        .row(0, named=True)
    )
    return {f: float(v) if v is not None else math.nan for f, v in row.items()}


def _number(x: Any) -> float:
    """A polars aggregate (typed as any scalar) as a float; NaN for null."""
    return math.nan if x is None else float(x)


def _history_lengths(ds: Dataset, levels: pl.DataFrame, history_len: int) -> dict:
    """Point-in-time history length (events strictly before the sample, capped at L) per level and domain."""
    n_users = levels.height
    k = max(1, n_users // HISTORY_USERS)
    keep = (pl.col("user_id").hash(seed=0) % k) == 0
    live = ds.scan("live").filter(keep)
    samples = _samples(ds, live).select("user_id", (pl.col("ts") - 1).alias("before")).sort("before").collect()
    out: dict = {}
    for domain, events in (("video", ds.scan("video").filter(keep)), ("live", live.filter(pl.col("click") == 1))):
        ev = (
            events.select("user_id", "ts")
            .sort("user_id", "ts")
            .with_columns(n=pl.int_range(1, pl.len() + 1).over("user_id"))
            .sort("ts")
            .collect()
        )
        joined = samples.join_asof(
            ev, left_on="before", right_on="ts", by="user_id", strategy="backward", check_sortedness=False
        )  # sorted by ts just above
        joined = joined.with_columns(pl.col("n").fill_null(0).clip(upper_bound=history_len))
        joined = joined.join(levels, on="user_id", how="left")
        for level in (*ACTIVITY_LEVELS, "full"):
            part = joined if level == "full" else joined.filter(pl.col("activity") == level)
            if part.height == 0:
                continue
            n = part["n"]
            out.setdefault(level, {})[domain] = {
                "samples": part.height,
                "mean": _number(n.mean()),
                **{f"p{q}": _number(n.quantile(q / 100, "lower")) for q in (10, 50, 90)},
                "empty": _number((n == 0).mean()),
            }
    return {"history_len": history_len, "users_sampled": (n_users + k - 1) // k, "levels": out}


def _oracle(ds: Dataset, split: str = "test") -> dict | None:
    names = ds.scan("live").collect_schema().names()
    if not all(c in names for c in TRUTH_COLUMNS):
        return None
    from farmcli.metrics import grouped_auc

    df = (
        ds.scan("live")
        .filter(in_window(pl.col("ts"), *split_windows(ds.manifest)[split]))
        .select("user_id", *TASKS, *TRUTH_COLUMNS)
        .collect(engine="streaming")
    )
    if df.height == 0:
        return None
    users = df["user_id"].to_torch()
    out = {}
    for t, p in zip(TASKS, TRUTH_COLUMNS):
        r = grouped_auc(df[p].to_torch(), df[t].to_torch(), users)
        out[t] = {"auc": r["auc"], "uauc": r["uauc"], "gauc": r["gauc"]}
    return {"split": split, "samples": df.height, "tasks": out}


def inspect_dataset(root, history_len: int = 50) -> dict:
    """Rows per split, label rates, video:live ratio, users per level, history lengths, oracle AUC."""
    ds = Dataset(root)
    live_rows = split_rows(ds, "live")
    video_rows = split_rows(ds, "video")
    levels = user_activity(ds)
    counts = dict(zip(*levels.group_by("activity").agg(pl.len()).sort("activity").get_columns()))
    n_live = sum(live_rows.values()) - live_rows["ignored"]
    n_video = sum(video_rows.values()) - video_rows["ignored"]
    return {
        "dataset": str(ds.root),
        "name": ds.manifest.name,
        "source": ds.manifest.source,
        "rows": {"live": live_rows, "video": video_rows},
        "video_live_ratio": n_video / n_live if n_live else math.nan,
        "live_label_rates": label_rates(_samples(ds, ds.scan("live"))),
        "video_label_rates": video_rates(ds.scan("video")),
        "users": {
            "total": levels.height,
            "activity_from": "users.parquet" if ds.has("users") else "derived",
            **{lvl: int(counts.get(lvl, 0)) for lvl in ACTIVITY_LEVELS},
        },
        "history": _history_lengths(ds, levels, history_len),
        "oracle": _oracle(ds),
    }
