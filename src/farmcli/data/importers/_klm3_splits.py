"""KuaiLive-M3's splits (module docstring of :mod:`~farmcli.data.importers.kuailive_m3`): whole days in
``day_tz`` over the days the live rows span, and the rows of each day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from farmcli.data.dataset import Dataset
from farmcli.data.importers._readers import local_date
from farmcli.data.inspect import split_expr
from farmcli.errors import UserError


def _day_start_ms(d: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(d, dtime(0), tzinfo=tz).timestamp() * 1000)


def split_days(
    live_ts: pl.LazyFrame, day_tz: str, warmup: int, valid: int, test: int, where: str
) -> tuple[dict[str, int], dict[str, Any]]:
    """The manifest's boundaries over the days of ``live_ts`` (the kept live rows' ts), and what the report says
    of them (days, day counts, boundaries as ISO text); a UserError where no day is left to train on."""
    tz = ZoneInfo(day_tz)
    rng = live_ts.select(lo=pl.col("ts").min(), hi=pl.col("ts").max()).collect(engine="streaming").row(0, named=True)
    if rng["lo"] is None:
        raise UserError(f"{where}: no live row with a user, an author and a readable timestamp; nothing to import.")
    d0 = datetime.fromtimestamp(rng["lo"] / 1000, tz).date()
    d1 = datetime.fromtimestamp(rng["hi"] / 1000, tz).date()
    days = (d1 - d0).days + 1
    n_train = days - test - valid - warmup
    if n_train < 1:
        raise UserError(
            f"the live logs span {days} day(s) ({d0} to {d1}, {day_tz}); {warmup} warm-up + {valid} validation + "
            f"{test} test day(s) leave no training day. Lower --warmup-days, --valid-days or --test-days."
        )
    first_train = d0 + timedelta(days=warmup)
    bounds = {
        "train_start": _day_start_ms(first_train, tz),
        "train_end": _day_start_ms(first_train + timedelta(days=n_train), tz),
        "valid_end": _day_start_ms(d1 + timedelta(days=1 - test), tz),
        "test_end": _day_start_ms(d1 + timedelta(days=1), tz),
    }
    counts = {"warmup_days": warmup, "train_days": n_train, "valid_days": valid, "test_days": test}
    iso = {f"{k}_iso": datetime.fromtimestamp(v / 1000, tz).isoformat() for k, v in bounds.items()}
    return bounds, {
        "day_tz": day_tz,
        "first_day": str(d0),
        "last_day": str(d1),
        "days": days,
        **counts,
        **bounds,
        **iso,
    }


def day_rows(ds: Dataset, day_tz: str, first_day: date) -> list[dict[str, Any]]:
    """Live rows, live clicks and video rows per day in ``day_tz``, with the day's split: that of its first
    millisecond, 'history' before ``first_day`` (the first live day), 'after' from test_end on."""
    day = local_date(pl.col("ts"), day_tz).alias("day")
    live = ds.scan("live").group_by(day).agg(live_rows=pl.len(), live_clicks=(pl.col("click") == 1).sum())
    video = ds.scan("video").group_by(day).agg(video_rows=pl.len())
    days = live.join(video, on="day", how="full", coalesce=True).fill_null(0).sort("day").collect(engine="streaming")
    starts = pl.DataFrame({"ts": [_day_start_ms(d, ZoneInfo(day_tz)) for d in days["day"]]}, schema={"ts": pl.Int64})
    splits = starts.select(split_expr(ds))["split"].replace({"ignored": "after"})
    return [
        {
            "day": str(r["day"]),
            "split": "history" if r["day"] < first_day else split,
            "live_rows": int(r["live_rows"]),
            "live_clicks": int(r["live_clicks"]),
            "video_rows": int(r["video_rows"]),
        }
        for r, split in zip(days.iter_rows(named=True), splits)
    ]
