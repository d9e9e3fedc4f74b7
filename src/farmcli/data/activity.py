"""User activity levels (low / mid / high): from users.parquet, else from live clicks in the training window."""

from __future__ import annotations

import polars as pl

from farmcli.data.dataset import Dataset, in_window, split_windows
from farmcli.data.schema import ACTIVITY_LEVELS

DEFAULT_CUTS = (0.5, 0.85)


def derived_activity(ds: Dataset, cuts: tuple[float, float] = DEFAULT_CUTS) -> pl.LazyFrame:
    """Level by live clicks in [train_start, train_end): low up to the cuts[0] quantile of users, mid up to cuts[1].

    Every user seen in either table is ranked, so users who never clicked count (as zero clicks).
    """
    live = ds.scan("live").select("user_id", "ts", "click")
    in_train = in_window(pl.col("ts"), *split_windows(ds.manifest)["train"])
    users = pl.concat([live.select("user_id"), ds.scan("video").select("user_id")]).unique()
    clicks = live.filter(in_train & (pl.col("click") == 1)).group_by("user_id").agg(pl.len().alias("clicks"))
    counts = users.join(clicks, on="user_id", how="left").with_columns(pl.col("clicks").fill_null(0))
    lo, hi = (pl.col("clicks").quantile(q, interpolation="lower") for q in cuts)
    level = (
        pl.when(pl.col("clicks") <= lo)
        .then(pl.lit("low"))
        .when(pl.col("clicks") <= hi)
        .then(pl.lit("mid"))
        .otherwise(pl.lit("high"))
    )
    return counts.with_columns(activity=level).select("user_id", "activity")


def user_activity(ds: Dataset, cuts: tuple[float, float] = DEFAULT_CUTS) -> pl.DataFrame:
    """(user_id, activity) for every user with events: the users.parquet level where it names a valid one,
    the derived level otherwise (a user missing from users.parquet, or with a null or unknown level)."""
    derived = derived_activity(ds, cuts)
    if not ds.has("users"):
        return derived.collect()
    given = (
        ds.scan("users")
        .select(pl.col("user_id").cast(pl.Int64), pl.col("activity").cast(pl.String))
        .filter(pl.col("activity").is_in(list(ACTIVITY_LEVELS)))
        .group_by("user_id")
        .agg(pl.col("activity").min().alias("given"))
    )
    return (
        derived.join(given, on="user_id", how="left")
        .select("user_id", pl.coalesce("given", "activity").alias("activity"))
        .collect()
    )


def activity_code() -> pl.Expr:
    """low/mid/high -> 0/1/2 (anything else -> -1), the integer form samples carry."""
    return pl.col("activity").replace_strict(list(ACTIVITY_LEVELS), [0, 1, 2], default=-1, return_dtype=pl.Int8)
