"""KuaiLive-M3's import report (``import_report.json``): what the import read, dropped, adjusted and derived; the
written tables' rows per split and label rates as :mod:`farmcli.data.inspect` computes them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import polars as pl

from farmcli.data import schema as S
from farmcli.data.dataset import Dataset
from farmcli.data.importers._klm3_splits import day_rows
from farmcli.data.inspect import label_rates, split_rows, video_rates

DROP_ID, DROP_TS = 1, 2
"""Why a raw row is dropped: a staged row's ``drop`` (null: kept)."""
FIX_NEGATIVE, FIX_MISSING = 1, 2
"""Why a kept row's play_ms is 0: a staged row's ``play_fix`` (0: as read)."""
_TS = {"live_interaction": "live_play_start_timestamp", "live_show": "show_timestamp", "photo_play": "enter_timestamp"}
"""The timestamp column of each raw table."""


@dataclass
class ImportReport:
    """What an import read, wrote, dropped and derived; saved as ``import_report.json`` in the dataset."""

    out: str
    raw_dir: str
    files: dict[str, str] = field(default_factory=dict)
    missing_optional: list[str] = field(default_factory=list)
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    adjusted: dict[str, dict[str, int]] = field(default_factory=dict)
    label_rates: dict[str, dict[str, float | None]] = field(default_factory=dict)
    splits: dict[str, Any] = field(default_factory=dict)
    days: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, float | None] = field(default_factory=dict)
    value_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    not_available: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(lf: pl.LazyFrame, by: str) -> dict[Any, int]:
    return {k: int(n) for k, n in lf.group_by(by).len("n").collect(engine="streaming").iter_rows()}


def read_stats(
    rep: ImportReport,
    sessions: pl.LazyFrame,
    impressions: pl.LazyFrame,
    plays: pl.LazyFrame,
    day_tz: str,
    like_codes: tuple[int, ...],
) -> None:
    """Rows read, dropped and adjusted per raw table (from the staged rows), the p_date check, the like codes."""
    for name, lf in (("live_interaction", sessions), ("live_show", impressions), ("photo_play", plays)):
        counts = _counts(lf, "drop")
        rep.rows_read[name] = sum(counts.values())
        rep.rows_dropped[name] = {
            "missing or negative user_id / author_id": counts.get(DROP_ID, 0),
            f"missing or unreadable {_TS[name]}": counts.get(DROP_TS, 0),
        }
    for name, lf, what, missing in (
        ("live_interaction", sessions, "play_duration", "play_duration"),
        ("photo_play", plays, "leave_timestamp - enter_timestamp", "leave_timestamp"),
    ):
        fx = _counts(lf.filter(pl.col("drop").is_null()), "play_fix")
        rep.adjusted[name] = {
            f"play_ms set to 0: negative {what}": fx.get(FIX_NEGATIVE, 0),
            f"play_ms set to 0: missing {missing}": fx.get(FIX_MISSING, 0),
        }
    pd_ok = sessions.filter(pl.col("drop").is_null()).select(
        checked=pl.col("pdate_ok").is_not_null().sum(), agree=pl.col("pdate_ok").sum()
    )
    checked, agree = (int(v or 0) for v in pd_ok.collect(engine="streaming").row(0))
    rep.splits["p_date_agreement"] = (agree / checked) if checked else None
    if checked and agree / checked < 0.9:
        rep.warnings.append(
            f"p_date agrees with the {day_tz} date of live_play_start_timestamp for only "
            f"{100 * agree / checked:.1f}% of sessions: the timestamps are probably in another zone. If the "
            f"raw date-times are local time, re-run with --naive-tz {day_tz}."
        )
    like = _counts(plays.filter(pl.col("drop").is_null()), "like_code")
    rep.value_counts["photo_play.like_status_type"] = {
        ("null" if k is None else str(k)): like[k] for k in sorted(like, key=lambda k: (k is None, k or 0))
    }
    if not any(k in like_codes for k in like if k is not None):
        rep.warnings.append(
            f"no play has like_status_type in {list(like_codes)}, so video.like is 0 "
            "everywhere: check --like-codes against the value counts in this report."
        )


def written_stats(
    rep: ImportReport,
    ds: Dataset,
    users: pl.DataFrame,
    authors: pl.DataFrame,
    clusters: dict[str, Any],
    have_tags: bool,
    day_tz: str,
    live_page: str,
) -> None:
    """Rows written, per split and per day; label rates; the share of rows with a known tag, cluster and page;
    activity levels; what was clustered; what the dataset cannot hold."""
    rows = {t: split_rows(ds, t) for t in ("live", "video")}
    rep.rows_written = {"live": sum(rows["live"].values()), "video": sum(rows["video"].values()), "users": users.height}
    n_sessions = rep.rows_read["live_interaction"] - sum(rep.rows_dropped["live_interaction"].values())
    kept_imp = rep.rows_read["live_show"] - sum(rep.rows_dropped["live_show"].values())
    matched = kept_imp - (rep.rows_written["live"] - n_sessions)
    rep.rows_dropped["live_show"]["has a session of the same user and live room (that session is the click)"] = matched
    live = label_rates(ds.scan("live"))  # every flag implies click here: of_clicks is the rate among clicks
    rep.label_rates = {
        "live_of_impressions": {t: _none(r["of_impressions"]) for t, r in live.items()},
        "live_of_clicks": {t: _none(live[t]["of_clicks"]) for t in S.LIVE_FLAGS},
        "video": {f: _none(r) for f, r in video_rates(ds.scan("video")).items()},
    }
    for t in ("live", "video"):
        rep.splits[f"{t}_rows"] = {("after_test_end" if k == "ignored" else k): n for k, n in rows[t].items()}
    rep.coverage = _coverage(ds, authors)
    rep.splits["activity"] = {lvl: int((users["activity"] == lvl).sum()) for lvl in S.ACTIVITY_LEVELS}
    rep.splits["clusters"] = clusters
    rep.days = day_rows(ds, day_tz, date.fromisoformat(rep.splits["first_day"]))
    _not_available(rep, have_tags, live_page)


def _none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _coverage(ds: Dataset, authors: pl.DataFrame) -> dict[str, float | None]:
    known = lambda c: (pl.col(c) > 0).mean()  # noqa: E731
    live = ds.scan("live").select(
        live_tag_known=known("tag"),
        live_cluster_known=known("cluster"),
        live_clicked_page_known=(pl.col("page") > 0).filter(pl.col("click") == 1).mean(),
    )
    video = ds.scan("video").select(video_tag_known=known("tag"), video_page_known=known("page"))
    return {
        **live.collect(engine="streaming").row(0, named=True),
        **video.collect(engine="streaming").row(0, named=True),
        "authors_with_tag": int((authors["tag"] > 0).sum()),
        "authors_with_cluster": int((authors["cluster"] > 0).sum()),
    }


def _not_available(rep: ImportReport, have_tags: bool, live_page: str) -> None:
    rep.not_available = [
        "video.comment = 0 on every row: photo_play has no per-play comment (photo_interaction holds daily "
        "aggregates without a date or time, so they cannot be joined to plays).",
        "video.share = 0 on every row: same reason.",
    ]
    if live_page == "source":
        rep.not_available.append("live.page = 0 on every click = 0 row: live_show has no entry page.")
        clicks_page0 = 1.0 - (rep.coverage["live_clicked_page_known"] or 0.0)
        rep.warnings.append(
            f"live.page is 0 on every click = 0 row but on only {100 * clicks_page0:.1f}% of clicks, so the page "
            "of a live candidate gives its click label away. For click models that must not see this "
            "shortcut, import with --live-page none (page 0 on every live row)."
        )
    else:
        rep.not_available.append("live.page = 0 on every row (--live-page none).")
    if not have_tags:
        rep.not_available.append("tag = 0 on every row: photo_tag was not found.")
    if "live_emb_64" in rep.missing_optional:
        rep.not_available.append("live.cluster = 0 on every row: live_emb_64 was not found.")
    if "photo_meta" in rep.missing_optional and have_tags:
        rep.warnings.append(
            "photo_meta was not found: live tags use the photo -> author pairs seen in "
            "photo_play instead (only videos somebody played)."
        )
    if "live_room_meta" in rep.missing_optional and "live_emb_64" not in rep.missing_optional:
        rep.warnings.append(
            "live_room_meta was not found: rooms -> authors for clusters come from the "
            "sessions and impressions instead."
        )
