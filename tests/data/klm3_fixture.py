"""A tiny KuaiLive-M3 download written the way the dataset publishes it (KUAISHOU_DATASETS.md, section 1).

Column names, order and types follow the published schema; timestamps are date-time strings in the CSV
files and timestamp types in the parquet files (``variant="published"``). ``variant="alternate"`` writes the
same events with the other accepted encodings: the CSV tables as parquet with integer epoch milliseconds,
the parquet tables as CSV (``T``-separated date-times) or with integer epoch ms, embeddings as a fixed-size
array. Both variants must import to the same dataset.

The story (Beijing days 2025-05-05 .. 05-08; naive date-times are UTC, p_date is the Beijing date):
- users 1, 2, 3 watch live and short videos; user 4 only plays a short video.
- author 10 hosts live rooms 100 and 101 and posts videos 1000, 1001 (美食) and 1002 (游戏): an author in
  both domains whose most frequent category is 美食.
- author 11 hosts room 110 and posts nothing; author 12 posts videos only (1200 游戏, 1999 untagged);
  author 13 hosts room 130 and posts 1300 (游戏), 1301 (音乐) and 1302 (untagged): a tie, so 游戏 (smaller id).
- author 99 hosts room 990, which has no metadata and no embedding.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

BJ = timezone(timedelta(hours=8))
BAD = "not a time"  # an unreadable timestamp (null in typed encodings)


def bj(day: int, h: int, m: int, s: int = 0, ms: int = 0) -> int:
    """Epoch ms of 2025-05-<day> h:m:s.ms Beijing time."""
    return int(datetime(2025, 5, day, h, m, s, ms * 1000, tzinfo=BJ).timestamp() * 1000)


def _text(ms: int | str | None, sep: str = " ") -> str | None:
    if ms is None or ms == BAD:
        return ms
    d = datetime.fromtimestamp(ms / 1000, timezone.utc)
    frac = f".{d.microsecond // 1000:03d}" if d.microsecond else ""
    return d.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac


def _dt(ms: int | str | None) -> datetime | None:
    if ms is None or ms == BAD:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).replace(tzinfo=None)


def _int_ms(ms: int | str | None) -> int | None:
    return None if ms is None or ms == BAD else ms


# user, author, live, start, play_duration, like, comment, gift(send_gift_cnt), source
SESSIONS = [
    (1, 10, 100, bj(5, 20, 0, 0, 250), 125_000, 2, 0, 0, "feed"),  # S1
    (1, 11, 110, bj(6, 21, 30), 2_500, 0, 1, 0, "follow"),  # S2: short view
    (1, 13, 130, bj(7, 12, 0), 45_000, 0, 0, 1, "feed"),  # S3: gift
    (2, 10, 101, bj(8, 9, 15, 0, 500), 60_000, 0, 3, 2, "search"),  # S4: exactly the long threshold
    (2, 11, 110, bj(5, 23, 59, 59, 999), 3_000, 0, 0, 0, None),  # S5: exactly 3 s; no source
    (3, 13, 130, bj(6, 0, 0), -5, 0, 0, 0, "nearby"),  # S6: Beijing midnight; negative play
    (3, None, 130, bj(6, 1, 0), 9_000, 0, 0, 0, "feed"),  # S7: no author -> dropped
    (2, 10, 100, BAD, 9_000, 1, 0, 0, "feed"),  # S8: bad timestamp -> dropped
]

# live_id, user, author, show_timestamp
SHOWS = [
    (100, 1, 10, bj(5, 19, 59, 50)),  # I1: user 1 has a session in room 100 -> not a negative
    (101, 1, 10, bj(6, 10, 0)),  # I2: negative
    (110, 1, 11, bj(8, 8, 0)),  # I3: session S2 two days earlier, same room -> not a negative
    (130, 2, 13, bj(7, 15, 0, 0, 123)),  # I4: negative
    (110, 3, 11, bj(8, 22, 0)),  # I5: negative (test day)
    (990, 3, 99, bj(6, 12, 0)),  # I6: negative, unknown author
    (101, 2, 10, bj(8, 9, 14)),  # I7: session S4 -> not a negative
    (101, None, 10, bj(6, 9, 0)),  # I8: no user -> dropped
]

# user, photo, author, enter, leave, enter_play_type, complete, like_status_type, follow_before, follow_after
PLAYS = [
    (1, 1000, 10, bj(5, 19, 0), bj(5, 19, 0, 12, 345), "click", 1, 1, 0, 1),  # P1: like, follow gained
    (1, 1200, 12, bj(6, 8, 0), bj(6, 7, 59, 59), "slide", 0, 3, 1, 1),  # P2: leave < enter
    (2, 1301, 13, bj(7, 10, 0), bj(7, 10, 0, 30), "autoplay", 1, 2, 0, 0),  # P3
    (2, 1999, 12, bj(8, 23, 0), None, "slide", 0, 1, 0, 0),  # P4: no leave time
    (4, 1002, 10, bj(6, 12, 0), bj(6, 12, 0, 5), None, 0, 0, 0, 0),  # P5: no play type
    (3, 1300, 13, None, bj(6, 9, 0), "click", 0, 0, 0, 0),  # P6: no enter time -> dropped
    (3, 1302, 13, bj(5, 10, 0), bj(5, 10, 0, 8), "click", 0, 0, 0, 0),  # P7: untagged photo
]

# photo_id, author_id (photo_meta); 1999 is in no metadata table
PHOTOS = [(1000, 10), (1001, 10), (1002, 10), (1200, 12), (1300, 13), (1301, 13), (1302, 13)]
TAGS = [(1000, "美食"), (1001, "美食"), (1002, "游戏"), (1200, "游戏"), (1300, "游戏"), (1301, "音乐")]
ROOMS = [(100, 10), (101, 10), (110, 11), (130, 13)]


def _embedding(live_id: int) -> np.ndarray:
    v = np.zeros(64, dtype=np.float32)
    if live_id == 100:
        v[0] = 2.0
    elif live_id == 101:
        v[0], v[1] = 1.0, 0.1
    elif live_id == 110:
        v[5] = 3.0
    elif live_id == 130:
        v[0], v[2] = 0.5, 0.03
    return v


def _live_interaction(variant: str) -> pl.DataFrame:
    rows = []
    for u, a, lid, start, play, like, com, gift, src in SESSIONS:
        end = None if start == BAD else start + max(play, 0)
        p_date = None if start == BAD else datetime.fromtimestamp(start / 1000, BJ).strftime("%Y%m%d")
        rows.append(
            dict(
                user_id=u,
                author_id=a,
                live_id=lid,
                live_play_start_timestamp=start,
                live_play_end_timestamp=end,
                p_date=p_date,
                live_source_category=src,
                enter_live_action="click",
                is_auto_play=0,
                is_follow_enter=0,
                is_follow_leave=0,
                play_duration=play,
                like_cnt=like,
                comment_cnt=com,
                send_gift_cnt=gift,
                send_gift_num=3 * gift,
                follow_author_cnt=0,
                cancel_follow_author_cnt=0,
                share_cnt=0,
                report_live_cnt=0,
            )
        )
    ts_cols = ("live_play_start_timestamp", "live_play_end_timestamp")
    if variant == "published":
        conv = {c: [_text(r[c]) for r in rows] for c in ts_cols}
        df = pl.DataFrame(
            [{**r, **{c: conv[c][i] for c in ts_cols}} for i, r in enumerate(rows)],
            schema_overrides={c: pl.String for c in ts_cols} | {"author_id": pl.Int64},
        )
    else:
        df = pl.DataFrame(
            [
                {
                    **r,
                    **{c: _int_ms(r[c]) for c in ts_cols},
                    "p_date": None if r["p_date"] is None else int(r["p_date"]),
                }
                for r in rows
            ],
            schema_overrides={c: pl.Int64 for c in ts_cols} | {"author_id": pl.Int64},
        )
    return df


def write_klm3(raw: Path, variant: str = "published", *, embeddings: bool = True, room_meta: bool = True) -> Path:
    """Write the fixture download into ``raw`` (created); return it."""
    assert variant in ("published", "alternate")
    raw.mkdir(parents=True, exist_ok=True)
    pub = variant == "published"

    sess = _live_interaction(variant)
    if pub:
        sess.write_csv(raw / "live_interaction.csv")
    else:
        sess.write_parquet(raw / "live_interaction.parquet")

    show = pl.DataFrame(
        {"live_id": [r[0] for r in SHOWS], "user_id": [r[1] for r in SHOWS], "author_id": [r[2] for r in SHOWS]},
        schema={c: pl.Int64 for c in ("live_id", "user_id", "author_id")},
    )
    if pub:
        show.with_columns(show_timestamp=pl.Series([_dt(r[3]) for r in SHOWS], dtype=pl.Datetime("ms"))).write_parquet(
            raw / "live_show.parquet"
        )
    else:
        show.with_columns(show_timestamp=pl.Series([_text(r[3], "T") for r in SHOWS], dtype=pl.String)).write_csv(
            raw / "live_show.csv"
        )

    cols = (
        "user_id",
        "photo_id",
        "author_id",
        "enter_timestamp",
        "leave_timestamp",
        "enter_play_type",
        "is_complete_play",
        "like_status_type",
        "is_follow_before_play",
        "is_follow_after_play",
    )
    data = {c: [r[i] for r in PLAYS] for i, c in enumerate(cols)}
    ts_type = pl.Datetime("us") if pub else pl.Int64
    conv = _dt if pub else _int_ms
    play = pl.DataFrame(
        {
            **{c: pl.Series(c, data[c], dtype=pl.Int64) for c in ("user_id", "photo_id", "author_id")},
            "enter_timestamp": pl.Series([conv(v) for v in data["enter_timestamp"]], dtype=ts_type),
            "leave_timestamp": pl.Series([conv(v) for v in data["leave_timestamp"]], dtype=ts_type),
            "enter_play_type": pl.Series(data["enter_play_type"], dtype=pl.String),
            **{c: pl.Series(c, data[c], dtype=pl.Int64) for c in cols[6:]},
        }
    )
    play.write_parquet(raw / "photo_play.parquet")

    pl.DataFrame(
        {
            "photo_id": [p for p, _ in PHOTOS],
            "author_id": [a for _, a in PHOTOS],
            "duration": [15_000] * len(PHOTOS),
            "display_type": [1] * len(PHOTOS),
            "cover_title": ["标题"] * len(PHOTOS),
            "video_texts": [""] * len(PHOTOS),
        }
    ).write_parquet(raw / "photo_meta.parquet")

    tag = pl.DataFrame(
        {
            "photo_id": [p for p, _ in TAGS],
            "first_level_category_name": [n for _, n in TAGS],
            "second_level_category_name": ["二级"] * len(TAGS),
            "third_level_category_name": ["三级"] * len(TAGS),
            "fourth_level_category_name": ["四级"] * len(TAGS),
        }
    )
    if pub:
        tag.write_csv(raw / "photo_tag.csv")
    else:
        tag.write_parquet(raw / "photo_tag.parquet")

    if room_meta:
        start = _dt(bj(5, 8, 0))
        pl.DataFrame(
            {
                "live_id": [r for r, _ in ROOMS],
                "author_id": [a for _, a in ROOMS],
                "live_name": ["直播"] * len(ROOMS),
                "start_timestamp": pl.Series([start] * len(ROOMS), dtype=pl.Datetime("ms")),
                "end_timestamp": pl.Series([None] * len(ROOMS), dtype=pl.Datetime("ms")),
                "live_duration": [3_600_000] * len(ROOMS),
            }
        ).write_parquet(raw / "live_room_meta.parquet")

    if embeddings:
        ids = [r for r, _ in ROOMS]
        vecs = [_embedding(r) for r in ids]
        emb_type = pl.List(pl.Float32) if pub else pl.Array(pl.Float32, 64)
        pl.DataFrame(
            {"live_id": ids, "embedding": pl.Series([v.tolist() for v in vecs], dtype=emb_type)}
        ).write_parquet(raw / "live_emb_64.parquet")

    pl.DataFrame({"user_id": [1, 2, 3, 4]}).write_csv(raw / "user_id_set.csv")
    pl.DataFrame(
        {
            "author_id": [10, 11, 12, 13],
            "is_photo_author": [1, 0, 1, 1],
            "is_live_author": [1, 1, 0, 1],
            "gender": ["M", "F", "U", "F"],
            "age_segment": ["24-30", "18-23", "unknown", "31-40"],
            "fans_user_num": ["0-1k", "1k-5k", "0-1k", "0-1k"],
        }
    ).write_csv(raw / "author_profile.csv")
    return raw
