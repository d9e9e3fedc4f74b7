"""Benchmark: import a synthetic KuaiLive-M3 download of realistic width; print rows/s and peak RSS.

    python benchmarks/bench_import_klm3.py [--plays 5000000] [--rows-per-partition N] [--raw DIR] [--json]

A raw folder in the published layout (KUAISHOU_DATASETS.md, section 1) is generated first, in a child
process, with every published column (text columns included) and the full dataset's proportions:
photo_play = --plays rows; live_interaction (csv, date-time strings) = plays x 35/111; live_show = plays x
92/111; photo_meta / photo_tag = plays x 6.74/111 videos; live_room_meta / live_emb_64 (64 floats) = plays x
6.56/111 rooms; users = 21,938 x plays/111M (at least 500), so a user has as many events as in the full data
only at full size. The import then runs in another child process, so the peak RSS printed
(resource.getrusage, kilobytes on Linux) is the import's own.

Memory is bounded by --rows-per-partition (live or video rows joined and sorted at a time, default 10M as in
the importer) plus per-video and per-author maps, not by the total size; run two sizes with the same
--rows-per-partition to see it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

FULL = {"plays": 111e6, "sessions": 35e6, "impressions": 92e6, "photos": 6.74e6, "rooms": 6.56e6, "users": 21_938}


def _sizes(plays: int) -> dict[str, int]:
    f = plays / FULL["plays"]
    return {
        "plays": plays,
        "sessions": int(FULL["sessions"] * f),
        "impressions": int(FULL["impressions"] * f),
        "photos": max(1000, int(FULL["photos"] * f)),
        "rooms": max(1000, int(FULL["rooms"] * f)),
        "users": max(500, int(FULL["users"] * f)),
    }


def generate(raw: str, plays: int, seed: int = 0) -> dict[str, int]:
    """Write a synthetic raw KuaiLive-M3 folder with ``plays`` photo_play rows (chunked to bound memory)."""
    import numpy as np
    import polars as pl

    raw_p = Path(raw)
    raw_p.mkdir(parents=True, exist_ok=True)
    n = _sizes(plays)
    rng = np.random.default_rng(seed)
    t0 = 1_746_374_400_000 - 8 * 3_600_000  # 2025-05-05 00:00 Beijing, as UTC epoch ms
    span = 14 * 86_400_000
    authors = max(100, n["rooms"] // 6)
    room_author = rng.integers(1, authors + 1, n["rooms"])
    photo_author = rng.integers(1, authors * 3, n["photos"])
    # heavy-tailed users: a few users hold most events, as in real logs
    user_w = rng.pareto(1.5, n["users"]) + 1
    user_w /= user_w.sum()

    def users(k):
        return rng.choice(n["users"], size=k, p=user_w) + 1

    def ts(k):
        return t0 + rng.integers(0, span, k)

    def text(k, words):
        return pl.Series(rng.integers(0, 10**9, k)).cast(pl.String).str.pad_end(words, "字")

    chunk = 2_000_000
    # photo_play.parquet
    frames = []
    for lo in range(0, n["plays"], chunk):
        k = min(chunk, n["plays"] - lo)
        photo = rng.integers(0, n["photos"], k)
        enter = ts(k)
        frames.append(
            pl.DataFrame(
                {
                    "user_id": users(k),
                    "photo_id": photo + 1,
                    "author_id": photo_author[photo],
                    "enter_timestamp": pl.Series(enter).cast(pl.Datetime("ms")),
                    "leave_timestamp": pl.Series(enter + rng.exponential(12_000, k).astype(np.int64)).cast(
                        pl.Datetime("ms")
                    ),
                    "enter_play_type": pl.Series(rng.choice(["click", "slide", "autoplay", "re-enter", "unknown"], k)),
                    "is_complete_play": rng.integers(0, 2, k),
                    "like_status_type": rng.choice([0, 1, 2, 3], k, p=[0.9, 0.05, 0.01, 0.04]),
                    "is_follow_before_play": rng.integers(0, 2, k),
                    "is_follow_after_play": rng.integers(0, 2, k),
                }
            )
        )
    pl.concat(frames).write_parquet(raw_p / "photo_play.parquet", row_group_size=1 << 20)
    del frames
    # live_interaction.csv (date-time strings, every published column)
    with open(raw_p / "live_interaction.csv", "wb") as f:
        for i, lo in enumerate(range(0, n["sessions"], chunk)):
            k = min(chunk, n["sessions"] - lo)
            room = rng.integers(0, n["rooms"], k)
            start = ts(k)
            play = rng.exponential(40_000, k).astype(np.int64)
            start_dt = pl.Series(start).cast(pl.Datetime("ms"))
            df = pl.DataFrame(
                {
                    "user_id": users(k),
                    "author_id": room_author[room],
                    "live_id": room + 1,
                    "live_play_start_timestamp": start_dt.dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
                    "live_play_end_timestamp": pl.Series(start + play)
                    .cast(pl.Datetime("ms"))
                    .dt.strftime("%Y-%m-%d %H:%M:%S%.3f"),
                    "p_date": (
                        start_dt.dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Shanghai").dt.strftime("%Y%m%d")
                    ),
                    "live_source_category": pl.Series(
                        rng.choice(["feed", "follow", "nearby", "search", "profile", "live_square"], k)
                    ),
                    "enter_live_action": pl.Series(rng.choice(["click", "slide", "re-enter", "auto-enter"], k)),
                    "is_auto_play": rng.integers(0, 2, k),
                    "is_follow_enter": rng.integers(0, 2, k),
                    "is_follow_leave": rng.integers(0, 2, k),
                    "play_duration": play,
                    "like_cnt": rng.poisson(0.3, k),
                    "comment_cnt": rng.poisson(0.1, k),
                    "send_gift_cnt": rng.poisson(0.02, k),
                    "send_gift_num": rng.poisson(0.05, k),
                    "follow_author_cnt": rng.poisson(0.01, k),
                    "cancel_follow_author_cnt": rng.poisson(0.001, k),
                    "share_cnt": rng.poisson(0.005, k),
                    "report_live_cnt": rng.poisson(0.0005, k),
                }
            )
            df.write_csv(f, include_header=(i == 0))
    # live_show.parquet
    frames = []
    for lo in range(0, n["impressions"], chunk):
        k = min(chunk, n["impressions"] - lo)
        room = rng.integers(0, n["rooms"], k)
        frames.append(
            pl.DataFrame(
                {
                    "live_id": room + 1,
                    "user_id": users(k),
                    "author_id": room_author[room],
                    "show_timestamp": pl.Series(ts(k)).cast(pl.Datetime("ms")),
                }
            )
        )
    pl.concat(frames).write_parquet(raw_p / "live_show.parquet", row_group_size=1 << 20)
    del frames
    # photo_meta.parquet, photo_tag.csv
    cats = [f"类目{i:02d}" for i in range(40)]
    pl.DataFrame(
        {
            "photo_id": np.arange(1, n["photos"] + 1),
            "author_id": photo_author,
            "duration": rng.integers(3_000, 120_000, n["photos"]),
            "display_type": rng.integers(0, 4, n["photos"]),
            "cover_title": text(n["photos"], 20),
            "video_texts": text(n["photos"], 100),
        }
    ).write_parquet(raw_p / "photo_meta.parquet")
    tagged = rng.random(n["photos"]) < 0.92
    pl.DataFrame(
        {
            "photo_id": np.arange(1, n["photos"] + 1)[tagged],
            "first_level_category_name": pl.Series(rng.choice(cats, int(tagged.sum()))),
            "second_level_category_name": "二级类目",
            "third_level_category_name": "三级类目",
            "fourth_level_category_name": "四级类目",
        }
    ).write_csv(raw_p / "photo_tag.csv")
    # live_room_meta.parquet, live_emb_64.parquet
    start = pl.Series(ts(n["rooms"])).cast(pl.Datetime("ms"))
    pl.DataFrame(
        {
            "live_id": np.arange(1, n["rooms"] + 1),
            "author_id": room_author,
            "live_name": text(n["rooms"], 16),
            "start_timestamp": start,
            "end_timestamp": start + timedelta(hours=2),
            "live_duration": np.full(n["rooms"], 7_200_000),
        }
    ).write_parquet(raw_p / "live_room_meta.parquet")
    has = rng.random(n["rooms"]) < 0.99
    k = int(has.sum())
    emb = rng.normal(0, 1, (k, 64)).astype(np.float32)
    pl.DataFrame(
        {"live_id": np.arange(1, n["rooms"] + 1)[has], "embedding": pl.Series(emb).cast(pl.List(pl.Float32))}
    ).write_parquet(raw_p / "live_emb_64.parquet")
    pl.DataFrame({"user_id": np.arange(1, n["users"] + 1)}).write_csv(raw_p / "user_id_set.csv")
    return n


def _generate_child(raw: str, plays: int, q) -> None:
    q.put(generate(raw, plays))


def _import_child(raw: str, out: str, rows_per_partition: int, q) -> None:
    from farmcli.data.importers import KLM3Options, import_kuailive_m3

    t = time.perf_counter()
    rep = import_kuailive_m3(raw, out, options=KLM3Options(rows_per_partition=rows_per_partition), overwrite=True)
    seconds = time.perf_counter() - t
    q.put(
        {
            "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows_read": rep.rows_read,
            "rows_written": rep.rows_written,
        }
    )


def _child(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    while True:  # a child that dies without answering must not hang the benchmark
        try:
            result = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive():
                raise SystemExit(f"{target.__name__} failed (exit {p.exitcode})") from None
    p.join()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plays", type=int, default=5_000_000, help="photo_play rows (the other tables follow)")
    ap.add_argument("--rows-per-partition", type=int, default=10_000_000)
    ap.add_argument("--raw", help="reuse (or keep) the generated raw folder here")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="bench-klm3-")
    raw = Path(args.raw) if args.raw else Path(tmp.name) / "raw"
    gen_s = 0.0
    if not (raw / "user_id_set.csv").exists():  # written last: the folder is complete
        t = time.perf_counter()
        _child(_generate_child, str(raw), args.plays)
        gen_s = time.perf_counter() - t
    sizes = {p.name: p.stat().st_size for p in sorted(raw.iterdir())}
    res = _child(_import_child, str(raw), str(Path(tmp.name) / "out"), args.rows_per_partition)
    rows_in = sum(res["rows_read"].values())
    fig = {
        "plays": args.plays,
        "rows_per_partition": args.rows_per_partition,
        "rows_read": res["rows_read"],
        "rows_written": res["rows_written"],
        "raw_mb": round(sum(sizes.values()) / 2**20, 1),
        "generate_s": round(gen_s, 1),
        "import_s": round(res["seconds"], 1),
        "rows_per_s": round(rows_in / res["seconds"]),
        "peak_rss_mb": round(res["peak_rss_mb"]),
        "full_dataset_estimate_s": round(
            (FULL["plays"] + FULL["sessions"] + FULL["impressions"]) / rows_in * res["seconds"]
        ),
    }
    if args.json:
        print(json.dumps(fig))
    else:
        for k, v in fig.items():
            print(f"{k:>26}: {v}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
