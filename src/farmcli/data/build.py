"""Events -> training samples with point-in-time histories, written as a cached sample store
(:mod:`farmcli.data.store`), built partition by partition (a hash of user_id) in bounded memory.

The store is built beside its final path and renamed into place (``farmcli.io.atomic_dir``), so a killed build
never looks complete. Its name hashes the input files' bytes, the settings and STORE_VERSION: a changed dataset
or setting is a new store, never a stale one.

Vocabularies come from the training window (ts < train_end, warm-up included): one author vocabulary for both
domains (ids are one space), one page and one tag vocabulary; an id seen fewer than ``min_count`` times is
out-of-vocabulary. Histories: video = all of the user's video rows, live = the user's clicked live rows. Events
and samples are ordered by (user_id, ts) and then every other column, so nothing depends on file or shard order.
Samples: the live rows of each split window (DATA_FORMAT.md), partition by partition. Activity: the level
users.parquet gives, else the derived rule of :func:`farmcli.data.activity.derived_activity`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

from farmcli.config import MAX_HISTORY_LEN
from farmcli.data.activity import DEFAULT_CUTS, activity_code, user_activity
from farmcli.data.dataset import Dataset, in_window, split_windows
from farmcli.data.encoding import (
    N_LABEL_IDS,
    N_LAG_BUCKETS,
    N_PLAY_BUCKETS,
    Encoder,
    index_dtype,
    label_id,
    lex_searchsorted,
    partition_expr,
    play_bucket,
    tie_order,
)
from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    LIVE_COLUMNS,
    LIVE_FLAGS,
    SPLITS,
    TASKS,
    TRUTH_COLUMNS,
    VIDEO_COLUMNS,
    VIDEO_FLAGS,
    schema_of,
)
from farmcli.data.store import FORMAT, PREFIX, SAMPLE_IDS, STORE_VERSION, DamagedStore, SampleStore
from farmcli.errors import UserError
from farmcli.io import atomic_dir, write_json

ROWS_PER_PARTITION = 20_000_000
"""Automatic partitioning: about one partition per this many event rows (live + video)."""

VOCABS = ("author", "page", "tag", "cluster", "user")

VIDEO_SORT = ("user_id", "ts", "author_id", "page", "tag", "play_ms", *VIDEO_FLAGS)
"""Order of video events: user, time, then every other column, so ties never depend on file/shard order."""
LIVE_SORT = ("user_id", "ts", "author_id", "page", "tag", "play_ms", "cluster", *TASKS)
"""Order of live rows (history events and samples); ``p_*`` follow when present."""

ID_COLUMNS = {"user": "user_id", "author": "author_id", "page": "page", "tag": "tag", "cluster": "cluster"}
"""Vocabulary -> the raw column it encodes."""
EVENT_IDS = {"video": ("author", "page", "tag"), "live": ("author", "page", "tag", "cluster")}
"""The encoded id fields of a history event, per domain."""

ProgressFn = Callable[[str, int, int], None]


def input_digest(ds: Dataset) -> str:
    """blake2b of manifest.json and every parquet file of live / video / users (names, sizes and bytes)."""
    h = hashlib.blake2b(digest_size=32)
    paths = [ds.root / "manifest.json"] + [f for t in ("live", "video", "users") for f in ds.files(t)]
    for p in paths:
        rel = p.relative_to(ds.root).as_posix()
        h.update(f"\0{rel}\0{p.stat().st_size}\0".encode())
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def store_key(digest: str, settings: dict) -> str:
    payload = json.dumps({"version": STORE_VERSION, "inputs": digest, "settings": settings}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=32).hexdigest()


class _Writer:
    """Append-only raw binary arrays in a directory, with their dtype and shape for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.meta: dict[str, dict] = {}
        self.checksums: dict[str, int] = {}
        """Array -> CRC-32 of its bytes as written (the store checks them on open: farmcli.data.store)."""
        self._files: dict[str, Any] = {}

    def declare(self, name: str, dtype: Any, tail: tuple[int, ...] = ()) -> None:
        self.meta[name] = {"dtype": np.dtype(dtype).name, "shape": [0, *tail]}
        self.checksums[name] = 0
        self._files[name] = open(self.root / f"{name}.bin", "wb")

    def append(self, name: str, arr: np.ndarray) -> None:
        meta = self.meta[name]
        arr = np.ascontiguousarray(arr, dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
        if tuple(arr.shape[1:]) != tuple(meta["shape"][1:]):
            raise ValueError(f"{name}: shape {arr.shape} does not match {meta['shape']}")
        data = arr.tobytes()
        self._files[name].write(data)
        self.checksums[name] = zlib.crc32(data, self.checksums[name])
        meta["shape"][0] += int(arr.shape[0])

    def rows(self, name: str) -> int:
        return int(self.meta[name]["shape"][0])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _build_vocabs(ds: Dataset, train_end: int, min_count: int) -> dict[str, np.ndarray]:
    """Sorted raw ids per vocabulary, from every video and live row with ts < train_end (one lazy pass)."""
    live = ds.scan("live").filter(pl.col("ts") < train_end)
    video = ds.scan("video").filter(pl.col("ts") < train_end)
    sources = {
        "author": ("author_id", (live, video)),
        "page": ("page", (live, video)),
        "tag": ("tag", (live, video)),
        "cluster": ("cluster", (live,)),
        "user": ("user_id", (live, video)),
    }
    queries = []
    for col, frames in sources.values():
        q = pl.concat([f.select(pl.col(col).cast(pl.Int64).alias("id")) for f in frames])
        q = q.group_by("id").agg(pl.len().alias("n"))
        if min_count > 1:
            q = q.filter(pl.col("n") >= min_count)
        queries.append(q.select("id").sort("id"))
    results = pl.collect_all(queries, engine="streaming")
    return {name: res["id"].to_numpy().astype(np.int64) for name, res in zip(sources, results)}


def _scan(
    ds: Dataset,
    table: str,
    columns: dict[str, PolarsDataType],
    test_end: int,
    part: int,
    n_parts: int,
    sort: Sequence[str],
) -> dict[str, np.ndarray]:
    """One partition of a table (ts < test_end) as numpy columns sorted by ``sort`` (every key, ties included)."""
    lf = ds.scan(table).select([pl.col(c).cast(t) for c, t in columns.items()]).filter(pl.col("ts") < test_end)
    if n_parts > 1:
        lf = lf.filter(partition_expr(n_parts) == part)
    df = lf.collect(engine="streaming")  # streaming: only this partition's rows are ever held
    bad = [c for c, k in zip(df.columns, df.null_count().row(0)) if k]
    if bad:
        raise UserError(
            f"{ds.path(table)}: null values in column(s) {', '.join(bad)}. "
            f"Run `farm data validate {ds.root}` and fix the data."
        )
    # sort by (user_id, ts) as a permutation, then gather column by column into numpy, dropping each source
    # column as we go (peak about twice the partition's columns; the partition count bounds it)
    perm = df.select(pl.arg_sort_by(list(sort[:2]))).to_series().to_numpy()
    cols: dict[str, np.ndarray] = {}
    for c in list(df.columns):
        cols[c] = df.get_column(c).to_numpy()[perm]
        df = df.drop(c)
    del df, perm
    ties = tie_order([cols[c] for c in sort])
    if ties is not None:
        for c in cols:
            cols[c] = cols[c][ties]
    return cols


def _take(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {c: a[mask] for c, a in cols.items()}


def _resolve(
    ds: Dataset,
    history_len: int,
    min_count: int,
    activity_cuts: Sequence[float],
    partitions: int | None,
    vocab_from: SampleStore | None = None,
) -> tuple[dict, str]:
    """The checked settings, as the store key hashes them, and that key."""
    if not 1 <= int(history_len) <= MAX_HISTORY_LEN:
        raise UserError(f"history_len must be in 1..{MAX_HISTORY_LEN:,}, got {history_len:,}.")
    if int(min_count) < 1:
        raise UserError(f"min_count must be >= 1, got {min_count}.")
    cuts = tuple(activity_cuts)
    if len(cuts) != 2 or not 0 <= cuts[0] <= cuts[1] <= 1:
        raise UserError(f"activity_cuts must be two quantiles 0 <= a <= b <= 1, got {activity_cuts}.")
    if partitions is not None and int(partitions) < 1:
        raise UserError(f"partitions must be >= 1 (or None for automatic), got {partitions}.")
    if partitions is None:  # parquet metadata only
        rows = sum(int(ds.scan(t).select(pl.len()).collect().item()) for t in ("live", "video"))
        partitions = max(1, math.ceil(rows / ROWS_PER_PARTITION))
    settings = {
        "history_len": int(history_len),
        "min_count": int(min_count),
        "activity_cuts": [float(c) for c in activity_cuts],
        "partitions": int(partitions),
    }
    if vocab_from is not None:
        settings["vocab_from"] = vocab_from.manifest["key"]
    return settings, store_key(input_digest(ds), settings)


def sample_store_path(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    history_len: int = 50,
    min_count: int = 1,
    activity_cuts: Sequence[float] = DEFAULT_CUTS,
    partitions: int | None = None,
) -> Path:
    """Where :func:`build_samples` keeps (or would keep) the store for these inputs and settings."""
    ds = Dataset(dataset_dir)
    _, key = _resolve(ds, history_len, min_count, activity_cuts, partitions)
    return Path(cache_dir) / f"samples-{key[:16]}"


def build_samples(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    history_len: int = 50,
    min_count: int = 1,
    activity_cuts: Sequence[float] = DEFAULT_CUTS,
    partitions: int | None = None,
    on_progress: ProgressFn | None = None,
    vocab_from: SampleStore | None = None,
) -> SampleStore:
    """Build (or reuse: ``store.reused``) the sample store of a farm-events/1 dataset; see the module docstring.

    ``history_len``: L, history positions per domain. ``min_count``: occurrences in the training window an id
    needs to enter a vocabulary. ``activity_cuts``: the quantiles of the derived activity rule. ``partitions``:
    user partitions built one after the other (memory ~ one partition's events; None: one per ~20M event rows).
    ``on_progress(step, done, total)``: at the start, after the vocabularies and after each partition; raising
    there aborts the build and leaves nothing behind. ``vocab_from``: encode with another store's vocabularies
    (a trained model's), so a model can score data it was not trained on (``min_count`` then plays no part).
    """
    ds = Dataset(dataset_dir)
    cache_dir = Path(cache_dir)
    settings, key = _resolve(ds, history_len, min_count, activity_cuts, partitions, vocab_from)
    final = cache_dir / f"samples-{key[:16]}"
    existing = _open_if_complete(final, key)
    if existing is not None:
        return existing
    if final.exists():  # a directory at the store's path that is not a complete store of this key
        shutil.rmtree(final)
    try:
        with atomic_dir(final, overwrite=False) as tmp:
            manifest = _build_into(tmp, ds, settings, key, on_progress, vocab_from)
    except OSError:
        # another process may have put the same store in place while we built ours: use theirs
        existing = _open_if_complete(final, key)
        if existing is None:
            raise
        return existing
    return SampleStore(final, manifest)


def _open_if_complete(path: Path, key: str) -> SampleStore | None:
    """The complete store of ``key`` at ``path``, or None (a damaged one with a note: it is farm's cache, rebuilt)."""
    if not (path / "manifest.json").is_file():
        return None
    try:
        store = SampleStore.open(path)
    except DamagedStore as e:
        note = str(e).partition(", so it cannot")[0]
        logging.getLogger("farmcli").warning("note: %s. It is farm's cache: it is rebuilt now.", note)
        return None
    except UserError:
        return None
    if store.manifest.get("key") != key:
        return None
    store.reused = True
    return store


@dataclass(frozen=True)
class _Events:
    """One partition's history events of a domain as written: their users, times and first row in the store."""

    user_id: np.ndarray
    ts: np.ndarray
    first_row: int


@dataclass(frozen=True)
class _Activity:
    """Activity level per user: sorted user ids and their codes (0 low, 1 mid, 2 high)."""

    users: np.ndarray
    codes: np.ndarray

    def of(self, user_id: np.ndarray) -> np.ndarray:
        if not len(self.users):  # users without a level (none expected) count as low
            return np.zeros(len(user_id), dtype=np.int8)
        i = np.minimum(np.searchsorted(self.users, user_id), len(self.users) - 1)
        return np.where(self.users[i] == user_id, self.codes[i], 0).astype(np.int8)


def _build_into(
    out: Path,
    ds: Dataset,
    settings: dict,
    key: str,
    on_progress: ProgressFn | None,
    vocab_from: SampleStore | None = None,
) -> dict:
    """Write every array of the store into ``out`` (vocabularies, then partition by partition) and its manifest."""
    n_parts = settings["partitions"]
    total = n_parts + 1
    progress = on_progress or (lambda step, done, total: None)
    progress("vocabularies", 0, total)

    if vocab_from is None:
        vocabs = _build_vocabs(ds, ds.manifest.train_end, settings["min_count"])
    else:
        vocabs = {k: np.array(vocab_from.vocab(k), dtype=np.int64) for k in VOCABS}
    encoders = {k: Encoder(v, index_dtype(len(v) + 2)) for k, v in vocabs.items()}
    low, mid = settings["activity_cuts"]
    levels = user_activity(ds, (low, mid)).with_columns(activity_code()).sort("user_id")
    activity = _Activity(levels["user_id"].to_numpy().astype(np.int64), levels["activity"].to_numpy().astype(np.int8))
    has_truth = all(c in ds.scan("live").collect_schema().names() for c in TRUTH_COLUMNS)
    windows = split_windows(ds.manifest)

    writer = _Writer(out)
    _declare_arrays(writer, encoders, has_truth)
    for k, v in vocabs.items():
        writer.append(f"vocab.{k}", v)
    progress("vocabularies", 1, total)

    live_columns = schema_of(LIVE_COLUMNS) | ({c: pl.Float32 for c in TRUTH_COLUMNS} if has_truth else {})
    live_sort = (*LIVE_SORT, *(TRUTH_COLUMNS if has_truth else ()))
    counts = {s: [0] * len(ACTIVITY_LEVELS) for s in SPLITS}  # samples per split and activity level
    for part in range(n_parts):
        # one domain at a time: of the video rows only their users and times stay in memory
        video = _scan(ds, "video", schema_of(VIDEO_COLUMNS), ds.manifest.test_end, part, n_parts, VIDEO_SORT)
        events = {"video": _write_events(writer, "video", video, encoders, VIDEO_FLAGS)}
        del video
        live = _scan(ds, "live", live_columns, ds.manifest.test_end, part, n_parts, live_sort)
        events["live"] = _write_events(writer, "live", _take(live, live["click"] > 0), encoders, LIVE_FLAGS)
        for split in SPLITS:
            in_split = in_window(live["ts"], *windows[split])
            samples = _sample_columns(_take(live, in_split), encoders, activity, events, has_truth)
            for level, k in zip(*np.unique(samples["activity"], return_counts=True)):
                counts[split][int(level)] += int(k)
            for c, a in samples.items():
                writer.append(f"{split}.{c}", a)
        del live, events
        progress(f"partition {part + 1}/{n_parts}", part + 2, total)
    writer.close()

    user_levels = np.bincount(activity.codes[activity.codes >= 0], minlength=len(ACTIVITY_LEVELS))
    manifest = {
        "format": FORMAT,
        "key": key,
        "store_version": STORE_VERSION,
        "settings": settings,
        "dataset": str(ds.root.resolve()),
        "windows": {s: list(windows[s]) for s in SPLITS},
        "history_len": settings["history_len"],
        "vocab_sizes": {k: len(e.vocab) + 2 for k, e in encoders.items()},
        "n_play_buckets": N_PLAY_BUCKETS,
        "n_lag_buckets": N_LAG_BUCKETS,
        "n_label_ids": N_LABEL_IDS,
        "splits": {s: writer.rows(f"{s}.ts") for s in SPLITS},
        "events": {d: writer.rows(f"{d}.ts") for d in ("video", "live")},
        "arrays": writer.meta,
        "checksums": writer.checksums,
        "has_truth": has_truth,
        "activity_counts": {
            "users": dict(zip(ACTIVITY_LEVELS, map(int, user_levels))),
            **{s: dict(zip(ACTIVITY_LEVELS, counts[s])) for s in SPLITS},
        },
        "complete": True,
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def _declare_arrays(writer: _Writer, encoders: dict[str, Encoder], has_truth: bool) -> None:
    for k in encoders:
        writer.declare(f"vocab.{k}", np.int64)
    for dom, ids in EVENT_IDS.items():
        writer.declare(f"{dom}.user_id", np.int64)
        writer.declare(f"{dom}.ts", np.int64)
        for k in ids:
            writer.declare(f"{dom}.{k}", encoders[k].dtype)
        writer.declare(f"{dom}.play", np.int8)
        writer.declare(f"{dom}.label", np.int8)
    for split in SPLITS:
        writer.declare(f"{split}.user_id", np.int64)
        writer.declare(f"{split}.author_id", np.int64)
        for k in SAMPLE_IDS:
            writer.declare(f"{split}.{k}", encoders[k].dtype)
        writer.declare(f"{split}.ts", np.int64)
        writer.declare(f"{split}.activity", np.int8)
        for offset in ("v_start", "v_end", "l_start", "l_end"):
            writer.declare(f"{split}.{offset}", np.int64)
        writer.declare(f"{split}.labels", np.int8, (len(TASKS),))
        if has_truth:
            writer.declare(f"{split}.p", np.float32, (len(TASKS),))


def _write_events(
    writer: _Writer, dom: str, rows: dict[str, np.ndarray], encoders: dict[str, Encoder], flags: Sequence[str]
) -> _Events:
    """Append one partition's history events of ``dom``, encoded."""
    first_row = writer.rows(f"{dom}.ts")
    writer.append(f"{dom}.user_id", rows["user_id"])
    writer.append(f"{dom}.ts", rows["ts"])
    for k in EVENT_IDS[dom]:
        writer.append(f"{dom}.{k}", encoders[k](rows[ID_COLUMNS[k]]))
    writer.append(f"{dom}.play", play_bucket(rows["play_ms"]).astype(np.int8))
    writer.append(f"{dom}.label", label_id([rows[f] for f in flags]))
    return _Events(rows["user_id"], rows["ts"], first_row)


def _sample_columns(
    rows: dict[str, np.ndarray],
    encoders: dict[str, Encoder],
    activity: _Activity,
    events: dict[str, _Events],
    has_truth: bool,
) -> dict[str, np.ndarray]:
    """The stored columns of the samples ``rows`` (live rows of one split and partition)."""
    user_id, ts = rows["user_id"], rows["ts"]
    cols = {"user_id": user_id, "author_id": rows["author_id"], "ts": ts}
    for k in SAMPLE_IDS:
        cols[k] = encoders[k](rows[ID_COLUMNS[k]])
    cols["activity"] = activity.of(user_id)
    for dom, p in PREFIX.items():
        ev = events[dom]
        start, end = lex_searchsorted(ev.user_id, ev.ts, user_id, ts)
        cols[f"{p}_start"], cols[f"{p}_end"] = start + ev.first_row, end + ev.first_row
    cols["labels"] = np.stack([rows[t] > 0 for t in TASKS], axis=1).astype(np.int8).reshape(-1, len(TASKS))
    if has_truth:
        cols["p"] = np.stack([rows[c] for c in TRUTH_COLUMNS], axis=1).astype(np.float32).reshape(-1, len(TASKS))
    return cols
