"""Import the public KuaiLive-M3 dataset (Hugging Face ``imgkkk2004/KuaiLive-M3``) as a farm-events/1 dataset.

docs/IMPORT_KUAILIVE_M3.md states every mapping, derived field (page, tag, cluster), split rule and assumption
(like_codes, naive_tz). Raw tables are ``NAME.csv``, ``NAME.parquet`` or a folder of shards (parquet wins); a
missing required file or column is a UserError naming it. Rows are sorted by (user_id, ts), then every other
column, so the output never depends on file order; memory is bounded by streaming the raw tables into user-id
buckets of about ``rows_per_partition`` rows, each then joined and sorted on its own.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from farmcli.data import schema as S
from farmcli.data.activity import derived_activity
from farmcli.data.dataset import Dataset
from farmcli.data.importers import _klm3_authors, _stage
from farmcli.data.importers._klm3_report import (
    DROP_ID,
    DROP_TS,
    FIX_MISSING,
    FIX_NEGATIVE,
    ImportReport,
    read_stats,
    written_stats,
)
from farmcli.data.importers._klm3_splits import split_days
from farmcli.data.importers._readers import (
    RawTable,
    local_date,
    locate,
    missing_columns,
    read_schema,
    str_expr,
    ts_expr,
)
from farmcli.errors import UserError
from farmcli.io import atomic_dir, output_dir, seal_dataset

SOURCE = "kuailive-m3"
DOWNLOAD = "https://huggingface.co/datasets/imgkkk2004/KuaiLive-M3"

REQUIRED: dict[str, tuple[str, ...]] = {
    "live_interaction": tuple(
        "user_id author_id live_id live_play_start_timestamp live_source_category play_duration like_cnt "
        "comment_cnt send_gift_cnt".split()
    ),
    "live_show": ("user_id", "author_id", "live_id", "show_timestamp"),
    "photo_play": tuple(
        "user_id photo_id author_id enter_timestamp leave_timestamp enter_play_type is_complete_play "
        "like_status_type is_follow_before_play is_follow_after_play".split()
    ),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "photo_tag": ("photo_id", "first_level_category_name"),
    "photo_meta": ("photo_id", "author_id"),
    "live_room_meta": ("live_id", "author_id"),
    "live_emb_64": ("live_id", "embedding"),
}
PUBLISHED_AS_CSV = ("live_interaction", "photo_tag")
"""The tables published as csv (the others as parquet), for the message naming a missing one."""

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class KLM3Options:
    """Settings of :func:`import_kuailive_m3` (see the module docstring for what each derived field means)."""

    effective_view_ms: int = 3_000
    """effective_view = play_ms >= this (Kuaishou counts a watch under 3 s as a short, negative view)."""
    long_view_ms: int = 60_000
    """long_view = play_ms >= this (no official threshold; 60 s)."""
    like_codes: tuple[int, ...] = (1,)
    """like_status_type values that mean a like on that play (codes undocumented upstream; 1 = new like assumed)."""
    valid_days: int = 1
    test_days: int = 1
    warmup_days: int = 0
    day_tz: str = "Asia/Shanghai"
    """Time zone of the day boundaries of the splits (Kuaishou is Beijing time, UTC+8)."""
    naive_tz: str = "UTC"
    """Time zone in which date-times without a zone are read (the official preprocessing reads them as UTC)."""
    live_page: str = "none"
    """"none" (default): page 0 on every live row. "source": page = live_source_category, which live_show
    impressions do not have, so every non-click gets page 0 and the page gives the click label away."""
    clusters: int = 64
    seed: int = 0
    activity_cuts: tuple[float, float] = (0.5, 0.85)
    rows_per_partition: int = 10_000_000
    """About this many live (and video) rows are joined and sorted at a time; lower it to use less memory."""
    name: str = SOURCE

    def check(self) -> None:
        def at_least(lo: int, *keys: str) -> list[str]:
            return [f"{k} must be >= {lo}, got {getattr(self, k)}." for k in keys if getattr(self, k) < lo]

        problems = at_least(0, "effective_view_ms", "long_view_ms", "valid_days", "warmup_days")
        if self.long_view_ms < self.effective_view_ms:
            problems.append(
                f"long_view_ms ({self.long_view_ms}) must be >= effective_view_ms "
                f"({self.effective_view_ms}): a long view is also an effective view."
            )
        problems += at_least(1, "test_days", "clusters", "rows_per_partition")
        if self.live_page not in ("source", "none"):
            problems.append(f"live_page must be 'source' or 'none', got '{self.live_page}'.")
        lo, hi = self.activity_cuts
        if not 0 < lo < hi < 1:
            problems.append(f"activity_cuts must be two quantiles 0 < low < high < 1, got {self.activity_cuts}.")
        for key in ("day_tz", "naive_tz"):
            try:
                ZoneInfo(getattr(self, key))
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(
                    f"{key}: unknown time zone '{getattr(self, key)}' (use an IANA name such as Asia/Shanghai or UTC)."
                )
        if problems:
            raise UserError("invalid import options: " + " ".join(problems))


# --- the import -------------------------------------------------------------------------------------------


def import_kuailive_m3(
    raw_dir: str | Path,
    out: str | Path,
    *,
    options: KLM3Options | None = None,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> ImportReport:
    """Turn a downloaded KuaiLive-M3 folder into a farm-events/1 dataset at ``out``; return the import report.

    The output is built in a temporary folder beside ``out`` and renamed into place at the end, so a failed
    or interrupted import leaves nothing behind. Besides the farm-events/1 files it holds ``pages.json``,
    ``tags.json``, ``author_attrs.parquet`` and ``import_report.json``. ``on_progress(step, done, total)`` is
    called before each step. See the module docstring for every mapping and derived field.
    """
    opt = options or KLM3Options()
    opt.check()
    raw_dir = Path(raw_dir)
    if raw_dir.exists() and (
        Path(out).resolve() == raw_dir.resolve() or Path(out).resolve() in raw_dir.resolve().parents
    ):
        raise UserError(f"--out {out} would replace the raw data folder {raw_dir}; choose another --out.")
    out = output_dir(out, overwrite)
    t0 = time.perf_counter()
    if raw_dir.exists() and (out.resolve() == raw_dir.resolve() or out.resolve() in raw_dir.resolve().parents):
        raise UserError(f"--out {out} would replace the raw data folder {raw_dir}; choose another --out.")
    tables, missing_optional = find_tables(raw_dir)
    report = ImportReport(
        out=str(out),
        raw_dir=str(raw_dir),
        options=_options_dict(opt),
        files={k: str(v.path) for k, v in tables.items()},
        missing_optional=missing_optional,
    )
    with atomic_dir(out, overwrite=overwrite) as tmp:
        job = _Import(tables, opt, tmp, report, on_progress)
        try:
            job.run()
        except pl.exceptions.ComputeError as e:
            raise UserError(
                f"{raw_dir}: reading the raw tables failed ({e}). Check that the files are complete "
                "and in the published format."
            ) from None
        shutil.rmtree(job.stage, ignore_errors=True)
        report.seconds = round(time.perf_counter() - t0, 3)
        (tmp / "import_report.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        seal_dataset(tmp, "farm data import kuailive-m3")
        if on_progress is not None:
            on_progress("done", job.total, job.total)
    return report


def _options_dict(opt: KLM3Options) -> dict[str, Any]:
    return {**asdict(opt), "like_codes": list(opt.like_codes), "activity_cuts": list(opt.activity_cuts)}


# --- finding and checking the raw files -------------------------------------------------------------------


def find_tables(raw_dir: Path) -> tuple[dict[str, RawTable], list[str]]:
    """The raw tables present (required and optional) and the names of the optional ones that are not.

    Every missing required file and every missing column is reported at once, as one UserError.
    """
    if not raw_dir.is_dir():
        raise UserError(
            f"{raw_dir}: no such directory. Download KuaiLive-M3 from {DOWNLOAD} and pass the folder "
            "that holds live_interaction.csv, live_show.parquet and photo_play.parquet."
        )
    tables: dict[str, RawTable] = {}
    problems: list[str] = []
    missing_optional: list[str] = []
    for name, cols in {**REQUIRED, **OPTIONAL}.items():
        t = locate(raw_dir, name)
        if t is None:
            if name in REQUIRED:
                fmt, other = ("csv", "parquet") if name in PUBLISHED_AS_CSV else ("parquet", "csv")
                problems.append(
                    f"{raw_dir}: required file {name}.{fmt} (or {name}.{other}) is "
                    f"missing. Download it from {DOWNLOAD}."
                )
            else:
                missing_optional.append(name)
            continue
        read_schema(t)
        for col in missing_columns(t, cols):
            problems.append(
                f"{t.path}: required column '{col}' is missing (columns found: {', '.join(t.schema) or 'none'})."
            )
        tables[name] = t
    if problems:
        raise UserError("\n".join(problems))
    return tables, missing_optional


# --- the steps --------------------------------------------------------------------------------------------


@dataclass
class _Import:
    """One import into ``tmp``: :meth:`run` is its steps, in order; the methods below follow that order."""

    t: dict[str, RawTable]
    opt: KLM3Options
    tmp: Path
    report: ImportReport
    on_progress: ProgressFn | None
    done: int = 0
    total: int = 12

    @property
    def stage(self) -> Path:
        return self.tmp / ".staging"

    def step(self, name: str) -> None:
        if self.on_progress is not None:
            self.on_progress(name, self.done, self.total)
        self.done += 1

    def run(self) -> None:
        """Stage the raw tables in user buckets, derive the maps, then write the dataset bucket by bucket."""
        opt, t = self.opt, self.t
        est_live = t["live_interaction"].rows_estimate() + t["live_show"].rows_estimate()
        est_video = t["photo_play"].rows_estimate()
        n = max(1, math.ceil(max(est_live, est_video) / opt.rows_per_partition))
        self.total = 10 + 2 * n
        self.step("photo tags")
        photo_tags, tag_names = _klm3_authors.photo_tags(t)
        self.step("user buckets")
        breaks = self.user_breaks(n)
        n = len(breaks) + 1
        self.total = 10 + 2 * n
        self.step("staging live_interaction")
        sess_schema = self.stage_sessions(breaks, n)
        self.step("staging live_show")
        imp_schema = self.stage_impressions(breaks, n)
        self.step("staging photo_play")
        plays_schema = self.stage_plays(breaks, n, photo_tags)
        sessions = _stage.scan_bucket(self.stage / "sessions", None, sess_schema)
        impressions = _stage.scan_bucket(self.stage / "impressions", None, imp_schema)
        plays = _stage.scan_bucket(self.stage / "plays", None, plays_schema)
        kept_live = [lf.filter(pl.col("drop").is_null()) for lf in (sessions, impressions)]
        self.step("author tags")
        a_tags = _klm3_authors.author_tags(t, photo_tags, plays)
        self.step("author clusters")
        a_clusters, cluster_info = _klm3_authors.author_clusters(t, kept_live, opt.clusters, opt.seed)
        authors = _klm3_authors.author_attrs(a_tags, a_clusters)

        read_stats(self.report, sessions, impressions, plays, opt.day_tz, opt.like_codes)
        pages = self._pages(sessions, plays)
        where = f"{t['live_interaction'].path} and {t['live_show'].path}"
        live_ts = pl.concat([lf.select("ts") for lf in kept_live])
        bounds, about = split_days(live_ts, opt.day_tz, opt.warmup_days, opt.valid_days, opt.test_days, where)
        self.report.splits.update(about)

        parts = self.stage / "parts"
        parts.mkdir()
        live_parts, video_parts = ([parts / f"{t}-{b:05d}.parquet" for b in range(n)] for t in ("live", "video"))
        for b, p in enumerate(live_parts):
            self.step(f"live rows, part {b + 1}/{n}")
            self.live_part(b, sess_schema, imp_schema, pages, authors, p)
        for b, p in enumerate(video_parts):
            self.step(f"video rows, part {b + 1}/{n}")
            self.video_part(b, plays_schema, pages, p)
        self.step("writing live.parquet and video.parquet")
        _write(pl.scan_parquet(live_parts), self.tmp / "live.parquet")
        _write(pl.scan_parquet(video_parts), self.tmp / "video.parquet")

        self.step("manifest and users")
        self._write_manifest(bounds)
        ds = Dataset(self.tmp)
        users = _collect(derived_activity(ds, opt.activity_cuts)).sort("user_id")
        users = users.select([pl.col(c).cast(d) for c, d in S.schema_of(S.USERS_COLUMNS).items()])
        _write(users, self.tmp / "users.parquet")
        _write(authors, self.tmp / "author_attrs.parquet")
        self._write_maps(pages, tag_names)

        self.step("report")
        written_stats(self.report, ds, users, authors, cluster_info, photo_tags is not None, opt.day_tz, opt.live_page)

    # -- the raw tables -> staged user buckets

    def user_breaks(self, n_buckets: int) -> list[int]:
        if n_buckets <= 1:
            return []
        t = self.t["live_interaction"]
        ids = t.scan().select(user_id=t.int_col("user_id")).filter(pl.col("user_id").is_not_null())
        qs = _collect(
            ids.select(pl.col("user_id").quantile(i / n_buckets, "lower").alias(f"q{i}") for i in range(1, n_buckets))
        )
        return sorted({int(v) for v in qs.row(0) if v is not None})

    def _sink(self, name: str, lf: pl.LazyFrame, breaks: list[int], n: int, play: bool = False) -> dict:
        """Stage rows by user bucket with why a row is dropped and, with ``play``, why its play_ms is 0."""
        lf = lf.with_columns(_drop_reason("user_id", "author_id"))
        if play:
            lf = lf.with_columns(_play_fix("play_raw"), play_ms=pl.col("play_raw").clip(lower_bound=0).fill_null(0))
        lf = lf.drop("play_raw", strict=False).with_columns(_stage.bucket_expr(breaks))
        return _stage.sink_buckets(lf, self.stage / name, n)

    def stage_sessions(self, breaks: list[int], n: int) -> dict:
        t, opt = self.t["live_interaction"], self.opt
        pd_type = t.schema.get("p_date")
        if pd_type is None:
            p_date = pl.lit(None, dtype=pl.Date)
        elif pd_type == pl.Date:
            p_date = pl.col("p_date")
        else:
            p_date = str_expr("p_date", pd_type).str.slice(0, 8).str.to_date("%Y%m%d", strict=False)
        lf = t.scan().select(
            user_id=t.int_col("user_id"),
            author_id=t.int_col("author_id"),
            live_id=t.int_col("live_id"),
            ts=ts_expr(t, "live_play_start_timestamp", opt.naive_tz),
            page_name=str_expr("live_source_category", t.schema["live_source_category"]),
            play_raw=t.int_col("play_duration"),
            like=_flag(t.int_col("like_cnt")),
            comment=_flag(t.int_col("comment_cnt")),
            gift=_flag(t.int_col("send_gift_cnt")),
            p_date=p_date,
        )
        agrees = local_date(pl.col("ts"), opt.day_tz) == pl.col("p_date")
        pdate_ok = (
            pl.when(pl.col("p_date").is_null() | pl.col("ts").is_null()).then(None).otherwise(agrees).cast(pl.Int8)
        )
        return self._sink("sessions", lf.with_columns(pdate_ok=pdate_ok).drop("p_date"), breaks, n, play=True)

    def stage_impressions(self, breaks: list[int], n: int) -> dict:
        t = self.t["live_show"]
        lf = t.scan().select(
            user_id=t.int_col("user_id"),
            author_id=t.int_col("author_id"),
            live_id=t.int_col("live_id"),
            ts=ts_expr(t, "show_timestamp", self.opt.naive_tz),
        )
        return self._sink("impressions", lf, breaks, n)

    def stage_plays(self, breaks: list[int], n: int, photo_tags: pl.DataFrame | None) -> dict:
        t, tz = self.t["photo_play"], self.opt.naive_tz
        lf = t.scan().select(
            user_id=t.int_col("user_id"),
            author_id=t.int_col("author_id"),
            photo_id=t.int_col("photo_id"),
            ts=ts_expr(t, "enter_timestamp", tz),
            play_raw=ts_expr(t, "leave_timestamp", tz) - ts_expr(t, "enter_timestamp", tz),
            page_name=str_expr("enter_play_type", t.schema["enter_play_type"]),
            long_view=_flag(t.int_col("is_complete_play")),
            like_code=t.int_col("like_status_type"),
            follow=(
                (t.int_col("is_follow_after_play").fill_null(0) > 0)
                & (t.int_col("is_follow_before_play").fill_null(0) <= 0)
            ).cast(pl.Int8),
        )
        if photo_tags is not None:
            lf = lf.join(photo_tags.lazy(), on="photo_id", how="left").with_columns(pl.col("tag").fill_null(0))
        else:
            lf = lf.with_columns(tag=pl.lit(0, dtype=pl.Int32))
        return self._sink("plays", lf, breaks, n, play=True)

    # -- page ids, from the staged rows

    def _pages(self, sessions: pl.LazyFrame, plays: pl.LazyFrame) -> pl.DataFrame:
        def counts(lf: pl.LazyFrame, domain: str, field_name: str) -> pl.DataFrame:
            kept = lf.filter(pl.col("drop").is_null() & pl.col("page_name").is_not_null())
            c = _collect(kept.group_by("page_name").agg(pl.len().alias("rows"))).sort("page_name")
            self.report.value_counts[field_name] = {n: int(r) for n, r in c.iter_rows()}
            return c.select(
                domain=pl.lit(domain), field=pl.lit(field_name), name="page_name", rows=pl.col("rows").cast(pl.Int64)
            )

        live = counts(sessions, "live", "live_interaction.live_source_category")
        video = counts(plays, "video", "photo_play.enter_play_type")
        pages = pl.concat([live, video] if self.opt.live_page == "source" else [video]).sort("domain", "name")
        return pages.with_columns(page=pl.int_range(1, pages.height + 1, dtype=pl.Int32))

    # -- pass 2: one bucket at a time -> sorted parts

    def live_part(
        self, b: int, sess_schema: dict, imp_schema: dict, pages: pl.DataFrame, authors: pl.DataFrame, path: Path
    ) -> None:
        opt = self.opt
        sess = _stage.scan_bucket(self.stage / "sessions", b, sess_schema)
        imp = _stage.scan_bucket(self.stage / "impressions", b, imp_schema)
        keys = (
            sess.filter(pl.col("user_id").is_not_null() & pl.col("live_id").is_not_null())
            .select("user_id", "live_id")
            .unique()
        )
        neg = imp.filter(pl.col("drop").is_null()).join(keys, on=["user_id", "live_id"], how="anti")
        pos = sess.filter(pl.col("drop").is_null()).select(
            "user_id",
            "author_id",
            "ts",
            "page_name",
            "play_ms",
            click=pl.lit(1, dtype=pl.Int8),
            effective_view=(pl.col("play_ms") >= opt.effective_view_ms).cast(pl.Int8),
            long_view=(pl.col("play_ms") >= opt.long_view_ms).cast(pl.Int8),
            like="like",
            comment="comment",
            gift="gift",
        )
        labels = dict.fromkeys(S.TASKS, pl.lit(0, dtype=pl.Int8))  # a live_show impression: no label at all
        neg = neg.select(
            "user_id",
            "author_id",
            "ts",
            page_name=pl.lit(None, dtype=pl.String),
            play_ms=pl.lit(0, dtype=pl.Int64),
            **labels,
        )
        live = pl.concat([pos, neg], how="vertical_relaxed")
        live_pages = pages.filter(pl.col("domain") == "live").select("name", "page")
        live = live.join(live_pages.lazy(), left_on="page_name", right_on="name", how="left").join(
            authors.lazy(), on="author_id", how="left"
        )
        sch = S.schema_of(S.LIVE_COLUMNS)
        live = live.select([pl.col(c).fill_null(0).cast(d) for c, d in sch.items()])
        _write(live.sort(_sort_keys(sch)), path)

    def video_part(self, b: int, plays_schema: dict, pages: pl.DataFrame, path: Path) -> None:
        plays = _stage.scan_bucket(self.stage / "plays", b, plays_schema).filter(pl.col("drop").is_null())
        video_pages = pages.filter(pl.col("domain") == "video").select("name", "page")
        codes = list(self.opt.like_codes)
        v = plays.join(video_pages.lazy(), left_on="page_name", right_on="name", how="left").with_columns(
            like=pl.col("like_code").is_in(codes).fill_null(False).cast(pl.Int8),
            comment=pl.lit(0, dtype=pl.Int8),
            share=pl.lit(0, dtype=pl.Int8),
        )
        sch = S.schema_of(S.VIDEO_COLUMNS)
        v = v.select([pl.col(c).fill_null(0).cast(d) for c, d in sch.items()])
        _write(v.sort(_sort_keys(sch)), path)

    # -- the written dataset

    def _write_manifest(self, bounds: dict[str, int]) -> None:
        opt, sp = self.opt, self.report.splits
        manifest = {
            "format": S.FORMAT,
            "name": opt.name,
            "source": SOURCE,
            "time_unit": "ms",
            **bounds,
            "description": (
                f"KuaiLive-M3 ({DOWNLOAD}) imported by farmcli: days {sp['first_day']} to "
                f"{sp['last_day']} ({opt.day_tz}); {sp['warmup_days']} warm-up, {sp['train_days']} "
                f"train, {sp['valid_days']} validation, {sp['test_days']} test day(s). Derived "
                "fields: see import_report.json and docs/IMPORT_KUAILIVE_M3.md."
            ),
            "importer": {"name": SOURCE, "options": _options_dict(opt)},
        }
        (self.tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    def _write_maps(self, pages: pl.DataFrame, tag_names: list[str]) -> None:
        page_doc = {
            "missing": 0,
            "note": (
                "One page id space for both tables, ids by (domain, name) in sorted order; 0 = missing "
                "(live impressions without a session have no entry page)."
            ),
            "pages": pages.select(pl.col("page").alias("id"), "domain", "field", "name", "rows").to_dicts(),
        }
        tag_doc = {
            "unknown": 0,
            "note": (
                "First-level categories of photo_tag, ids by sorted name; 0 = unknown. Video rows: the "
                "photo's category. Live rows: the author's most frequent category over the videos they post."
            ),
            "tags": [{"id": i, "name": n} for i, n in enumerate(tag_names, start=1)],
        }
        (self.tmp / "pages.json").write_text(json.dumps(page_doc, indent=2, ensure_ascii=False) + "\n")
        (self.tmp / "tags.json").write_text(json.dumps(tag_doc, indent=2, ensure_ascii=False) + "\n")


# --- small helpers ----------------------------------------------------------------------------------------


def _flag(e: pl.Expr) -> pl.Expr:
    return (e.fill_null(0) > 0).cast(pl.Int8)


def _drop_reason(*ids: str) -> pl.Expr:
    bad = pl.any_horizontal([pl.col(c).is_null() | (pl.col(c) < 0) for c in ids])
    return (
        pl.when(bad)
        .then(DROP_ID)
        .when(pl.col("ts").is_null())
        .then(DROP_TS)
        .otherwise(None)
        .cast(pl.Int8)
        .alias("drop")
    )


def _play_fix(raw: str) -> pl.Expr:
    r = pl.col(raw)
    return (
        pl.when(r.is_null())
        .then(FIX_MISSING)
        .when(r < 0)
        .then(FIX_NEGATIVE)
        .otherwise(0)
        .cast(pl.Int8)
        .alias("play_fix")
    )


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(engine="streaming")


def _write(df_or_lf: pl.DataFrame | pl.LazyFrame, path: Path) -> None:
    write = df_or_lf.sink_parquet if isinstance(df_or_lf, pl.LazyFrame) else df_or_lf.write_parquet
    write(path, compression="zstd", compression_level=3, statistics=True)


def _sort_keys(schema: Mapping[str, Any]) -> list[str]:
    """(user_id, ts), then every other column: a total order, so the output never depends on input order."""
    return ["user_id", "ts"] + [c for c in schema if c not in ("user_id", "ts")]
