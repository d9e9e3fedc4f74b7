"""Events -> training samples with point-in-time histories, kept in a cached, memory-mapped sample store.

The store never materialises [N, L] history arrays (that is O(samples x L) on disk). It keeps, per domain,
the history events sorted by user and time as encoded columns, and per sample the offsets of its history
inside them. A batch's histories are gathered on the fly, fully vectorised:

    end   = first event of the user with ts >= sample ts      (strictly earlier events only, ties excluded)
    start = the user's first event
    pos   = end - L + arange(L)          valid = pos >= start  (oldest .. newest, padding first)

Layout of a store directory (``cache_dir/samples-<key16>``)::

    manifest.json                 format farm-samples/1, settings, sizes, {array name: dtype, shape}
    vocab.<author|page|tag|cluster|user>.bin    sorted raw ids; raw id vocab[i] has index i + 2
    video.<user_id|ts|author|page|tag|play|label>.bin            video history events
    live.<user_id|ts|author|page|tag|cluster|play|label>.bin     live history events (click = 1 only)
    <split>.<user_id|author_id|user|author|page|tag|cluster|ts|labels|p|activity|v_start|v_end|l_start|l_end>.bin

All arrays are raw little-endian binaries opened with ``np.memmap`` (read-only). The store is built in a
temporary directory beside its final path and renamed into place at the end (``farmcli.io.atomic_dir``), so
a killed build never leaves a directory that looks complete. Its name carries a blake2b hash of the input
files' bytes, the settings and :data:`STORE_VERSION`: a changed dataset or setting is a new store, never a
stale one.

Encodings (0 is padding in every field):

- ids (author, page, tag, cluster, user): vocabularies from the training window (every video and live row
  with ``ts < train_end``, warm-up included), one author vocabulary for both domains (ids are one space),
  one page and one tag vocabulary shared by both domains. 0 = padding, 1 = out-of-vocabulary (never seen in
  training, or seen fewer than ``min_count`` times), known ids 2.. in sorted raw-id order.
- play time: :func:`play_bucket`, 1..31. Lag (sample ts - event ts): :func:`lag_bucket`, 1..23.
- label id of a history event: 1 + bits, bit i = i-th flag of VIDEO_FLAGS / LIVE_FLAGS (1..32).

Histories: video = all of the user's video rows; live = the user's live rows with click = 1. Events are
ordered by (user_id, ts, author_id, page, tag, play_ms[, cluster], flags...), so the content of a history
never depends on file or shard order, ties in ts included.

Samples: every live row with train_start <= ts < train_end (train; no lower bound without train_start),
train_end <= ts < valid_end (valid), valid_end <= ts < test_end (test). Per sample: user_id and author_id
(raw), user / author / page / tag / cluster (vocabulary indices), ts, labels int8 [N, 6] (TASKS order), p
float32 [N, 6] (when every p_* column exists), activity int8 (0 low, 1 mid, 2 high), and the history offsets
v_start, v_end, l_start, l_end. Activity: the level users.parquet gives the user; otherwise (no users.parquet,
user absent, level null or invalid) the derived rule of :func:`farmcli.data.activity.derived_activity`:
live clicks in [train_start, train_end), ranked over every user seen in either table, low up to the
``activity_cuts[0]`` quantile ('lower' interpolation), mid up to ``activity_cuts[1]``, high above.
Order within a split: partition by partition, and inside a partition by the live order above (then p_*).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from farmcli.data.activity import DEFAULT_CUTS, activity_code, user_activity
from farmcli.data.dataset import Dataset
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
from farmcli.errors import UserError
from farmcli.io import atomic_dir, write_json

FORMAT = "farm-samples/1"
STORE_VERSION = "farm-samples/1.0"
"""Part of every store key: bump it whenever the store's content for the same inputs would change."""

N_PLAY_BUCKETS = 32  # P: play buckets 1..P-1, 0 = padding
N_LAG_BUCKETS = 24  # G: lag buckets 1..G-1, 0 = padding
N_LABEL_IDS = 33  # 0 = padding, 1 + 5 bits
ROWS_PER_PARTITION = 20_000_000
"""Automatic partitioning: about one partition per this many event rows (live + video)."""

VOCABS = ("author", "page", "tag", "cluster", "user")

VIDEO_SORT = ("user_id", "ts", "author_id", "page", "tag", "play_ms", *VIDEO_FLAGS)
"""Order of video events: user, time, then every other column, so ties never depend on file/shard order."""
LIVE_SORT = ("user_id", "ts", "author_id", "page", "tag", "play_ms", "cluster", *TASKS)
"""Order of live rows (history events and samples); ``p_*`` follow when present."""

HISTORY_FIELDS = {
    "video": ("author", "page", "tag", "play", "lag", "label"),
    "live": ("author", "page", "tag", "cluster", "play", "lag", "label"),
}
PREFIX = {"video": "v", "live": "l"}
SAMPLE_IDS = ("user", "author", "page", "tag", "cluster")

ProgressFn = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------- buckets


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _ceil_sqrt(n: int) -> int:
    r = math.isqrt(n)
    return r if r * r == n else r + 1


PLAY_THRESHOLDS = np.array([_ceil_sqrt(10**6 * 2**j) - 1000 for j in range(1, N_PLAY_BUCKETS - 1)], dtype=np.int64)
"""PLAY_THRESHOLDS[j-1] = the smallest integer ms with floor(2 * log2(1 + ms / 1000)) >= j, i.e. with
(1000 + ms)^2 >= 10^6 * 2^j: computed in exact integer arithmetic."""
LAG_THRESHOLDS = np.array([1000 * (2**k - 1) for k in range(1, N_LAG_BUCKETS - 1)], dtype=np.int64)
"""LAG_THRESHOLDS[k-1] = the smallest lag with floor(log2(1 + lag / 1000)) >= k, i.e. lag >= 1000 * (2^k - 1)."""


def _bucketize(x: Any, thresholds: np.ndarray) -> Any:
    """1 + the number of thresholds <= x (x < 0 counts as 0): numpy / scalar -> int64 array, torch -> int64."""
    if _is_torch(x):
        import torch

        b = torch.as_tensor(thresholds, device=x.device)
        return 1 + torch.searchsorted(b, x.to(torch.int64).clamp(min=0), right=True)
    return 1 + np.searchsorted(thresholds, np.maximum(np.asarray(x, dtype=np.int64), 0), side="right")


def play_bucket(play_ms: Any) -> Any:
    """Play-time bucket: ``1 + min(P - 2, floor(2 * log2(1 + play_ms / 1000)))`` with P = 32, so 1..31.

    0 is left for padding. Evaluated exactly on integer milliseconds (thresholds :data:`PLAY_THRESHOLDS`,
    no floating-point rounding at bucket edges). Works on scalars, numpy arrays and torch tensors (int64 out).
    Negative inputs are treated as 0.
    """
    return _bucketize(play_ms, PLAY_THRESHOLDS)


def lag_bucket(lag_ms: Any) -> Any:
    """Lag bucket of a history event: ``1 + min(G - 2, floor(log2(1 + lag_ms / 1000)))`` with G = 24, so 1..23.

    ``lag_ms`` = sample ts - event ts (> 0: histories hold strictly earlier events). 0 is left for padding.
    Evaluated exactly on integer milliseconds (thresholds :data:`LAG_THRESHOLDS`). Works on scalars, numpy
    arrays and torch tensors (int64 out).
    """
    return _bucketize(lag_ms, LAG_THRESHOLDS)


def label_id(flags: Sequence[np.ndarray]) -> np.ndarray:
    """1 + bits, bit i set when ``flags[i]`` > 0 (VIDEO_FLAGS or LIVE_FLAGS order): 1..32, int8."""
    out = np.ones(len(flags[0]) if len(flags) else 0, dtype=np.int8)
    for i, f in enumerate(flags):
        out += (np.asarray(f) > 0).astype(np.int8) << i
    return out


# --------------------------------------------------------------------------------------------- helpers


class Encoder:
    """Raw ids -> vocabulary indices: ``vocab[i]`` -> i + 2, anything not in ``vocab`` -> 1 (out-of-vocabulary).

    ``vocab`` is sorted and unique. Dense, non-negative vocabularies (max id < 2**24, or < 8 x their size) use
    a lookup table; others a searchsorted with an equality check. Both give the same result.
    """

    LUT_MAX = 1 << 24

    def __init__(self, vocab: np.ndarray, dtype: Any = np.int64):
        self.vocab = np.asarray(vocab, dtype=np.int64)
        self.dtype = np.dtype(dtype)
        self.lut = None
        n = len(self.vocab)
        if n and self.vocab[0] >= 0 and int(self.vocab[-1]) < max(self.LUT_MAX, 8 * n):
            hi = int(self.vocab[-1])
            self.lut = np.ones(hi + 2, dtype=self.dtype)  # lut[hi + 1] (and lut[-1]) = 1: out of range
            self.lut[self.vocab] = np.arange(2, n + 2)
            self.hi = hi

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        n = len(self.vocab)
        if n == 0:
            return np.ones(ids.shape, dtype=self.dtype)
        if self.lut is not None:
            return self.lut[np.clip(ids, -1, self.hi + 1)]
        i = np.searchsorted(self.vocab, ids)
        found = self.vocab[np.minimum(i, n - 1)] == ids
        return np.where(found, i + 2, 1).astype(self.dtype)


def encode(vocab: np.ndarray, ids: np.ndarray, dtype: Any = np.int64) -> np.ndarray:
    """Raw ids -> vocabulary indices: vocab[i] -> i + 2, anything not in ``vocab`` -> 1 (out-of-vocabulary)."""
    return Encoder(vocab, dtype)(ids)


def _index_dtype(size: int) -> np.dtype:
    return np.dtype(
        np.int16 if size <= np.iinfo(np.int16).max else np.int32 if size <= np.iinfo(np.int32).max else np.int64
    )


def lex_searchsorted(
    ev_u: np.ndarray, ev_t: np.ndarray, q_u: np.ndarray, q_t: np.ndarray, *, force_rank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each query (user q_u, time q_t) in events sorted by (user, ts).

    ``start`` = index of the user's first event, ``end`` = index of the user's first event with ts >= q_t
    (so events[start:end] are the user's events strictly before q_t); both equal the insertion point when
    the user has no events. Vectorised: one searchsorted on a composite key (user rank * span + ts offset);
    when that key could overflow int64, ts is replaced by its rank among the event times first.
    """
    n = len(ev_u)
    q_u = np.asarray(q_u, dtype=np.int64)
    q_t = np.asarray(q_t, dtype=np.int64)
    if n == 0:
        z = np.zeros(len(q_u), dtype=np.int64)
        return z, z.copy()
    change = np.flatnonzero(ev_u[1:] != ev_u[:-1]) + 1
    ustart = np.concatenate([[0], change, [n]]).astype(np.int64)  # user r's events: ustart[r]:ustart[r+1]
    uniq = ev_u[ustart[:-1]]
    nu = len(uniq)
    r = np.searchsorted(uniq, q_u)
    found = (r < nu) & (uniq[np.minimum(r, nu - 1)] == q_u)
    start = ustart[r]
    ev_r = np.repeat(np.arange(nu, dtype=np.int64), np.diff(ustart))
    tmin, tmax = int(ev_t.min()), int(ev_t.max())
    span = tmax - tmin + 2
    if not force_rank and nu * span < 2**62:
        ev_key = ev_r * span + (ev_t - tmin)
        q_key = r * span + (np.clip(q_t, tmin, tmax + 1) - tmin)
    else:
        times = np.unique(ev_t)
        span = len(times) + 1
        ev_key = ev_r * span + np.searchsorted(times, ev_t)
        q_key = r * span + np.searchsorted(times, q_t)  # rank of q_t among event times, left: ties excluded
    end = np.where(found, np.searchsorted(ev_key, q_key), start)
    return start, end


def partition_expr(n_partitions: int) -> pl.Expr:
    """Partition of a row: a multiplicative hash of user_id mod ``n_partitions`` (same as :func:`partition_of`)."""
    x = (pl.col("user_id").cast(pl.Int64) % 4294967291).cast(pl.UInt64) * 2654435761
    return ((x // 65536) % n_partitions).cast(pl.Int64)


def partition_of(user_id: np.ndarray, n_partitions: int) -> np.ndarray:
    """numpy twin of :func:`partition_expr`."""
    x = (np.asarray(user_id, dtype=np.int64) % 4294967291).astype(np.uint64) * np.uint64(2654435761)
    return ((x // np.uint64(65536)) % np.uint64(n_partitions)).astype(np.int64)


# --------------------------------------------------------------------------------------------- key


def _settings(history_len: int, min_count: int, activity_cuts: Sequence[float], partitions: int) -> dict:
    return {
        "history_len": int(history_len),
        "min_count": int(min_count),
        "activity_cuts": [float(c) for c in activity_cuts],
        "partitions": int(partitions),
    }


def _check_settings(history_len: int, min_count: int, activity_cuts: Sequence[float], partitions: int | None) -> None:
    if int(history_len) < 1:
        raise UserError(f"history_len must be >= 1, got {history_len}.")
    if int(min_count) < 1:
        raise UserError(f"min_count must be >= 1, got {min_count}.")
    cuts = tuple(activity_cuts)
    if len(cuts) != 2 or not 0 <= cuts[0] <= cuts[1] <= 1:
        raise UserError(f"activity_cuts must be two quantiles 0 <= a <= b <= 1, got {activity_cuts}.")
    if partitions is not None and int(partitions) < 1:
        raise UserError(f"partitions must be >= 1 (or None for automatic), got {partitions}.")


def _table_rows(ds: Dataset, table: str) -> int:
    return int(ds.scan(table).select(pl.len()).collect().item())  # parquet metadata only


def _auto_partitions(ds: Dataset) -> int:
    rows = _table_rows(ds, "live") + _table_rows(ds, "video")
    return max(1, math.ceil(rows / ROWS_PER_PARTITION))


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


# --------------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class SplitArrays:
    """The per-sample arrays of one split (read-only memmaps, or empty arrays for an empty split)."""

    n: int
    user_id: np.ndarray
    author_id: np.ndarray
    user: np.ndarray
    author: np.ndarray
    page: np.ndarray
    tag: np.ndarray
    cluster: np.ndarray
    ts: np.ndarray
    labels: np.ndarray
    p: np.ndarray | None
    activity: np.ndarray
    v_start: np.ndarray
    v_end: np.ndarray
    l_start: np.ndarray
    l_end: np.ndarray


SAMPLE_COLUMNS = (
    "user_id",
    "author_id",
    "user",
    "author",
    "page",
    "tag",
    "cluster",
    "ts",
    "labels",
    "p",
    "activity",
    "v_start",
    "v_end",
    "l_start",
    "l_end",
)


class SampleStore:
    """An opened sample store: memory-mapped arrays plus its manifest (see the module docstring)."""

    def __init__(self, path: Path, manifest: dict, reused: bool = False):
        self.path = Path(path)
        self.manifest = manifest
        self.reused = reused
        """True when :func:`build_samples` found this store complete and did not rebuild it."""
        self._arrays: dict[str, np.ndarray] = {}
        self._splits: dict[str, SplitArrays] = {}

    def __getstate__(self) -> dict:
        # pickled for DataLoader workers / DDP ranks: send the path, never the memory-mapped data
        return {"path": self.path, "manifest": self.manifest, "reused": self.reused}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["manifest"], state["reused"])

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike) -> SampleStore:
        """Open a complete store; anything else (missing, partial, other format, truncated array) is a UserError."""
        path = Path(path)
        mpath = path / "manifest.json"
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a sample store ({e}). Build one with `farm data build`.") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UserError(f"{mpath}: format is not '{FORMAT}'. Rebuild the store with `farm data build`.")
        if manifest.get("complete") is not True:
            raise UserError(f"{path}: the store is incomplete (an interrupted build). Delete it and rebuild.")
        for name, meta in manifest.get("arrays", {}).items():
            f = path / f"{name}.bin"
            want = int(np.prod(meta["shape"])) * np.dtype(meta["dtype"]).itemsize
            if not f.is_file() or f.stat().st_size != want:
                raise UserError(f"{f}: missing or truncated (want {want} bytes). Delete {path} and rebuild.")
        return cls(path, manifest)

    # -- metadata
    @property
    def history_len(self) -> int:
        return int(self.manifest["history_len"])

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return dict(self.manifest["vocab_sizes"])

    @property
    def has_truth(self) -> bool:
        return bool(self.manifest["has_truth"])

    def n(self, split: str) -> int:
        self._check_split(split)
        return int(self.manifest["splits"][split])

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}.")

    # -- arrays
    def array(self, name: str) -> np.ndarray:
        """One stored array by name (e.g. ``train.user``, ``video.ts``, ``vocab.author``), memory-mapped."""
        if name not in self._arrays:
            meta = self.manifest["arrays"][name]
            shape, dtype = tuple(meta["shape"]), np.dtype(meta["dtype"]).newbyteorder("<")
            if int(np.prod(shape)) == 0:
                a = np.empty(shape, dtype=dtype)
            else:
                a = np.memmap(self.path / f"{name}.bin", dtype=dtype, mode="r", shape=shape)
            self._arrays[name] = a
        return self._arrays[name]

    def vocab(self, name: str) -> np.ndarray:
        """Sorted raw ids of a vocabulary: raw id ``vocab[i]`` has index ``i + 2``."""
        return self.array(f"vocab.{name}")

    def split(self, name: str) -> SplitArrays:
        self._check_split(name)
        if name not in self._splits:
            cols = {
                c: (self.array(f"{name}.{c}") if f"{name}.{c}" in self.manifest["arrays"] else None)
                for c in SAMPLE_COLUMNS
            }
            self._splits[name] = SplitArrays(n=self.n(name), **cols)
        return self._splits[name]

    # -- gathering
    def _rows(self, split: str, idx: Any) -> dict[str, np.ndarray]:
        """Per-sample columns for ``idx`` in the caller's order, read from the memmaps in increasing order."""
        s = self.split(split)
        cols = [c for c in SAMPLE_COLUMNS if getattr(s, c) is not None]
        if isinstance(idx, slice):
            return {c: np.array(getattr(s, c)[idx]) for c in cols}
        if _is_torch(idx):
            idx = idx.cpu().numpy()
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -s.n or idx.max() >= s.n):
            raise IndexError(f"sample index out of range for split '{split}' with {s.n} samples")
        idx = np.where(idx < 0, idx + s.n, idx)
        if len(idx) < 2 or bool(np.all(idx[1:] >= idx[:-1])):
            return {c: np.asarray(getattr(s, c)[idx]) for c in cols}
        order = np.argsort(idx, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        sidx = idx[order]
        return {c: np.asarray(getattr(s, c)[sidx])[inverse] for c in cols}

    def _histories(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        L = self.history_len
        ts = rows["ts"]
        out: dict[str, np.ndarray] = {}
        for dom, fields in HISTORY_FIELDS.items():
            p = PREFIX[dom]
            start, end = rows[f"{p}_start"], rows[f"{p}_end"]
            pos = end[:, None] - L + np.arange(L, dtype=np.int64)
            valid = pos >= start[:, None]
            n_events = self.manifest["arrays"][f"{dom}.ts"]["shape"][0]
            if n_events == 0 or not valid.any():
                for f in fields:
                    dtype = np.int64 if f == "lag" else self.manifest["arrays"][f"{dom}.{f}"]["dtype"]
                    out[f"{p}_{f}"] = np.zeros(pos.shape, dtype=dtype)
                out[f"{p}_mask"] = valid
                continue
            pos = np.where(valid, pos, 0)
            pad = ~valid
            for f in fields:
                if f == "lag":
                    lag = ts[:, None] - np.take(self.array(f"{dom}.ts"), pos)
                    a = lag_bucket(lag)
                else:
                    a = np.take(self.array(f"{dom}.{f}"), pos)
                a[pad] = 0
                out[f"{p}_{f}"] = a
            out[f"{p}_mask"] = valid
        return out

    def histories(self, split: str, idx: Any) -> dict[str, np.ndarray]:
        """Histories of samples ``idx`` of ``split``: each field [len(idx), L], oldest to newest, padding first.

        Keys: v_author, v_page, v_tag, v_play, v_lag, v_label, v_mask and l_author, l_page, l_tag, l_cluster,
        l_play, l_lag, l_label, l_mask. Masks are bool (True = a real event); every field is 0 at padding.
        """
        return self._histories(self._rows(split, idx))

    def batch(self, split: str, idx: Any) -> dict[str, Any]:
        """A model batch as torch tensors (same gathering as :meth:`histories`).

        "user", "author", "page", "tag", "cluster", "user_id", "activity": [B] int64; history fields [B, L]
        int64 and masks [B, L] bool; "labels" [B, 6] float32 (TASKS order); "p" [B, 6] float32 when the
        dataset carries the true probabilities.
        """
        import torch

        rows = self._rows(split, idx)
        out: dict[str, Any] = {}
        for c in (*SAMPLE_IDS, "user_id", "activity"):
            out[c] = torch.from_numpy(rows[c].astype(np.int64))
        out["labels"] = torch.from_numpy(rows["labels"].astype(np.float32))
        if "p" in rows:
            out["p"] = torch.from_numpy(np.ascontiguousarray(rows["p"], dtype=np.float32))
        for k, v in self._histories(rows).items():
            out[k] = torch.from_numpy(v if v.dtype == np.bool_ else v.astype(np.int64))
        return out

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.n(s)}" for s in SPLITS)
        return f"SampleStore({self.path}, {sizes}, L={self.history_len})"


# --------------------------------------------------------------------------------------------- building


class _Writer:
    """Append-only raw binary arrays in a directory, with their dtype and shape for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.meta: dict[str, dict] = {}
        self._files: dict[str, Any] = {}

    def declare(self, name: str, dtype: Any, tail: tuple[int, ...] = ()) -> None:
        self.meta[name] = {"dtype": np.dtype(dtype).name, "shape": [0, *tail]}
        self._files[name] = open(self.root / f"{name}.bin", "wb")

    def append(self, name: str, arr: np.ndarray) -> None:
        meta = self.meta[name]
        arr = np.ascontiguousarray(arr, dtype=np.dtype(meta["dtype"]).newbyteorder("<"))
        if tuple(arr.shape[1:]) != tuple(meta["shape"][1:]):
            raise ValueError(f"{name}: shape {arr.shape} does not match {meta['shape']}")
        self._files[name].write(arr.tobytes())
        meta["shape"][0] += int(arr.shape[0])

    def rows(self, name: str) -> int:
        return int(self.meta[name]["shape"][0])

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(engine="streaming")


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


def _user_activity(ds: Dataset, cuts: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted user ids, activity code 0/1/2) by the rule of :func:`farmcli.data.activity.user_activity`."""
    df = user_activity(ds, tuple(cuts)).with_columns(activity_code()).sort("user_id")
    return df["user_id"].to_numpy().astype(np.int64), df["activity"].to_numpy().astype(np.int8)


def tie_order(keys: Sequence[np.ndarray]) -> np.ndarray | None:
    """Rows already sorted by (keys[0], keys[1]): the permutation that orders each run of equal (keys[0],
    keys[1]) by the remaining keys (lexicographically), or None when there are no such runs.

    Sorting by two keys and then fixing the (rare) ties is several times faster than one sort on every key.
    """
    u, t = keys[0], keys[1]
    n = len(u)
    if n < 2:
        return None
    eq = (u[1:] == u[:-1]) & (t[1:] == t[:-1])  # eq[i]: row i + 1 ties with row i
    if not eq.any():
        return None
    tied = np.zeros(n, dtype=bool)
    tied[1:] |= eq
    tied[:-1] |= eq
    rows = np.flatnonzero(tied)
    new_run = np.ones(len(rows), dtype=bool)
    new_run[1:] = ~eq[rows[1:] - 1]
    run = np.cumsum(new_run)
    order = np.lexsort([k[rows] for k in reversed(keys[2:])] + [run])  # run is the primary key
    perm = np.arange(n)
    perm[rows] = rows[order]
    return perm


def _scan(
    ds: Dataset,
    table: str,
    columns: dict[str, pl.DataType],
    test_end: int,
    part: int,
    n_parts: int,
    sort: Sequence[str],
) -> dict[str, np.ndarray]:
    """One partition of a table (ts < test_end) as numpy columns sorted by ``sort`` (every key, ties included)."""
    lf = ds.scan(table).select([pl.col(c).cast(t) for c, t in columns.items()]).filter(pl.col("ts") < test_end)
    if n_parts > 1:
        lf = lf.filter(partition_expr(n_parts) == part)
    df = _collect(lf)  # streaming: only this partition's rows are ever held
    bad = [c for c, k in zip(df.columns, df.null_count().row(0)) if k]
    if bad:
        raise UserError(
            f"{ds.path(table)}: null values in column(s) {', '.join(bad)}. "
            f"Run `farm data validate {ds.root}` and fix the data."
        )
    # sort by (user_id, ts) as a permutation, then gather column by column into numpy, dropping each source
    # column as we go (peak about twice the partition's columns; the partition count bounds it)
    perm = df.select(pl.arg_sort_by(list(sort[:2]))).to_series().to_numpy()
    cols = {}
    for c in list(df.columns):
        cols[c] = df.get_column(c).to_numpy()[perm]
        df = df.drop(c)
    del df, perm
    perm = tie_order([cols[c] for c in sort])
    if perm is not None:
        for c in cols:
            cols[c] = cols[c][perm]
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
    _check_settings(history_len, min_count, activity_cuts, partitions)
    n_parts = int(partitions) if partitions is not None else _auto_partitions(ds)
    settings = _settings(history_len, min_count, activity_cuts, n_parts)
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


def _remove_stale_temps(cache_dir: Path) -> None:
    """Remove temporary build directories whose builder (a process on this host) no longer runs."""
    if not cache_dir.is_dir():
        return
    host = socket.gethostname()
    for d in cache_dir.glob(".samples-*.tmp"):
        try:
            owner = json.loads((d / ".owner").read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (or its builder has not written the owner file yet)
        if owner.get("host") != host:
            continue
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (PermissionError, KeyError, ValueError, TypeError):
            pass


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
    """Build (or reuse) the sample store of a farm-events/1 dataset; see the module docstring.

    - ``history_len``: L, the number of history positions per domain.
    - ``min_count``: an id enters a vocabulary when it occurs in at least this many training-window rows.
    - ``activity_cuts``: quantiles of the derived activity rule (users.parquet levels take precedence; a user
      it does not name, or names with no valid level, gets the derived level: live clicks in
      [train_start, train_end), low up to the first quantile of users, mid up to the second, high above).
    - ``partitions``: number of user partitions built one after the other (memory ~ one partition's events);
      None = one per ~20M event rows. The sample order within a split is partition by partition, and inside a
      partition sorted by (user_id, ts, author_id, page, tag, play_ms, cluster, labels, p).
    - ``on_progress(step, done, total)``: called at the start and after the vocabulary step and after each
      partition (total = partitions + 1). An exception raised there aborts the build, leaving nothing behind.
    - ``vocab_from``: encode with another store's vocabularies (a trained model's) instead of this dataset's
      training window, so that a model can score data it was not trained on; ids it never saw are
      out-of-vocabulary (1). ``min_count`` then plays no part.

    Returns the opened store; ``store.reused`` tells whether an existing complete store was reused.
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
    _remove_stale_temps(cache_dir)
    try:
        with atomic_dir(final, overwrite=False) as tmp:
            write_json(tmp / ".owner", {"host": socket.gethostname(), "pid": os.getpid()})
            manifest = _build_into(tmp, ds, settings, key, on_progress, vocab_from)
            (tmp / ".owner").unlink()
    except OSError:
        # another process may have put the same store in place while we built ours: use theirs
        existing = _open_if_complete(final, key)
        if existing is None:
            raise
        return existing
    return SampleStore(final, manifest)


def _open_if_complete(path: Path, key: str) -> SampleStore | None:
    if not (path / "manifest.json").is_file():
        return None
    try:
        store = SampleStore.open(path)
    except UserError:
        return None
    if store.manifest.get("key") != key:
        return None
    store.reused = True
    return store


def _build_into(
    out: Path,
    ds: Dataset,
    settings: dict,
    key: str,
    on_progress: ProgressFn | None,
    vocab_from: SampleStore | None = None,
) -> dict:
    m = ds.manifest
    L = settings["history_len"]
    n_parts = settings["partitions"]
    total = n_parts + 1
    progress = on_progress or (lambda step, done, total: None)
    progress("vocabularies", 0, total)

    if vocab_from is None:
        vocabs = _build_vocabs(ds, m.train_end, settings["min_count"])
    else:
        vocabs = {
            k: np.array(vocab_from.vocab(k), dtype=np.int64) for k in ("author", "page", "tag", "cluster", "user")
        }
    sizes = {k: len(v) + 2 for k, v in vocabs.items()}
    dt = {k: _index_dtype(s) for k, s in sizes.items()}
    act_users, act_codes = _user_activity(ds, settings["activity_cuts"])
    live_names = ds.scan("live").collect_schema().names()
    has_truth = all(c in live_names for c in TRUTH_COLUMNS)

    w = _Writer(out)
    for k, v in vocabs.items():
        w.declare(f"vocab.{k}", np.int64)
        w.append(f"vocab.{k}", v)
    ev_dtypes = {
        "user_id": np.int64,
        "ts": np.int64,
        "author": dt["author"],
        "page": dt["page"],
        "tag": dt["tag"],
        "cluster": dt["cluster"],
        "play": np.int8,
        "label": np.int8,
    }
    for dom in ("video", "live"):
        for f in ("user_id", "ts", "author", "page", "tag", *(("cluster",) if dom == "live" else ()), "play", "label"):
            w.declare(f"{dom}.{f}", ev_dtypes[f])
    sample_dtypes = {
        "user_id": np.int64,
        "author_id": np.int64,
        **{k: dt[k] for k in SAMPLE_IDS},
        "ts": np.int64,
        "activity": np.int8,
        "v_start": np.int64,
        "v_end": np.int64,
        "l_start": np.int64,
        "l_end": np.int64,
    }
    for split in SPLITS:
        for c, d in sample_dtypes.items():
            w.declare(f"{split}.{c}", d)
        w.declare(f"{split}.labels", np.int8, (len(TASKS),))
        if has_truth:
            w.declare(f"{split}.p", np.float32, (len(TASKS),))
    progress("vocabularies", 1, total)

    live_cols = schema_of(LIVE_COLUMNS) | ({c: pl.Float32 for c in TRUTH_COLUMNS} if has_truth else {})
    live_sort = (*LIVE_SORT, *(TRUTH_COLUMNS if has_truth else ()))
    bounds = {
        "train": (m.train_start, m.train_end),
        "valid": (m.train_end, m.valid_end),
        "test": (m.valid_end, m.test_end),
    }
    act_samples = {s: [0] * len(ACTIVITY_LEVELS) for s in SPLITS}
    enc = {k: Encoder(v, dt[k]) for k, v in vocabs.items()}
    for part in range(n_parts):
        events = {}
        for dom in ("video", "live"):
            if dom == "video":
                df = _scan(ds, "video", schema_of(VIDEO_COLUMNS), m.test_end, part, n_parts, VIDEO_SORT)
                flags = VIDEO_FLAGS
            else:
                live = _scan(ds, "live", live_cols, m.test_end, part, n_parts, live_sort)
                df = _take(live, live["click"] > 0)
                flags = LIVE_FLAGS
            base = w.rows(f"{dom}.ts")
            events[dom] = (df["user_id"], df["ts"], base)
            w.append(f"{dom}.user_id", df["user_id"])
            w.append(f"{dom}.ts", df["ts"])
            for k, raw in (
                ("author", "author_id"),
                ("page", "page"),
                ("tag", "tag"),
                *((("cluster", "cluster"),) if dom == "live" else ()),
            ):
                w.append(f"{dom}.{k}", enc[k](df[raw]))
            w.append(f"{dom}.play", play_bucket(df["play_ms"]).astype(np.int8))
            w.append(f"{dom}.label", label_id([df[f] for f in flags]))
            del df
        for split in SPLITS:
            lo, hi = bounds[split]
            in_split = live["ts"] < hi
            if lo is not None:
                in_split &= live["ts"] >= lo
            s = _take(live, in_split)
            su, st = s["user_id"], s["ts"]
            cols = {"user_id": su, "author_id": s["author_id"], "ts": st}
            for k, raw in (
                ("user", "user_id"),
                ("author", "author_id"),
                ("page", "page"),
                ("tag", "tag"),
                ("cluster", "cluster"),
            ):
                cols[k] = enc[k](s[raw])
            act = np.zeros(len(su), dtype=np.int8)  # users without a level (none expected) count as low
            if len(act_users):
                i = np.minimum(np.searchsorted(act_users, su), len(act_users) - 1)
                act = np.where(act_users[i] == su, act_codes[i], 0).astype(np.int8)
            cols["activity"] = act
            for lvl, k in zip(*np.unique(act, return_counts=True)):
                act_samples[split][int(lvl)] += int(k)
            for dom, p in PREFIX.items():
                eu, et, base = events[dom]
                start, end = lex_searchsorted(eu, et, su, st)
                cols[f"{p}_start"], cols[f"{p}_end"] = start + base, end + base
            cols["labels"] = np.stack([s[t] > 0 for t in TASKS], axis=1).astype(np.int8).reshape(-1, len(TASKS))
            if has_truth:
                cols["p"] = np.stack([s[c] for c in TRUTH_COLUMNS], axis=1).astype(np.float32).reshape(-1, len(TASKS))
            for c, a in cols.items():
                w.append(f"{split}.{c}", a)
        del live, events
        progress(f"partition {part + 1}/{n_parts}", part + 2, total)
    w.close()

    user_levels = np.bincount(act_codes[act_codes >= 0], minlength=len(ACTIVITY_LEVELS))
    manifest = {
        "format": FORMAT,
        "key": key,
        "store_version": STORE_VERSION,
        "settings": settings,
        "dataset": str(ds.root.resolve()),
        "windows": {s: list(bounds[s]) for s in SPLITS},
        "history_len": L,
        "vocab_sizes": sizes,
        "n_play_buckets": N_PLAY_BUCKETS,
        "n_lag_buckets": N_LAG_BUCKETS,
        "n_label_ids": N_LABEL_IDS,
        "splits": {s: w.rows(f"{s}.ts") for s in SPLITS},
        "events": {d: w.rows(f"{d}.ts") for d in ("video", "live")},
        "arrays": w.meta,
        "has_truth": has_truth,
        "activity_counts": {
            "users": dict(zip(ACTIVITY_LEVELS, map(int, user_levels))),
            **{s: dict(zip(ACTIVITY_LEVELS, act_samples[s])) for s in SPLITS},
        },
        "complete": True,
    }
    write_json(out / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------------------------- summary


def store_summary(store: SampleStore) -> dict:
    """Rows per split, vocabulary sizes and history-length percentiles per domain (for `farm data build`)."""
    L = store.history_len
    out: dict[str, Any] = {
        "path": str(store.path),
        "history_len": L,
        "rows": {s: store.n(s) for s in SPLITS},
        "events": dict(store.manifest.get("events", {})),
        "vocab_sizes": store.vocab_sizes,
        "has_truth": store.has_truth,
        "history_length": {},
    }
    for dom, p in PREFIX.items():
        lens = []
        for s in SPLITS:
            a = store.split(s)
            lens.append(np.minimum(np.asarray(getattr(a, f"{p}_end")) - np.asarray(getattr(a, f"{p}_start")), L))
        x = np.concatenate(lens) if lens else np.zeros(0)
        if len(x) == 0:
            out["history_length"][dom] = {"mean": 0.0, "p10": 0, "p50": 0, "p90": 0, "p99": 0, "empty": 0.0}
            continue
        q = np.percentile(x, [10, 50, 90, 99], method="lower")
        out["history_length"][dom] = {
            "mean": round(float(x.mean()), 3),
            "p10": int(q[0]),
            "p50": int(q[1]),
            "p90": int(q[2]),
            "p99": int(q[3]),
            "empty": round(float((x == 0).mean()), 4),
        }
    return out


__all__ = [
    "FORMAT",
    "STORE_VERSION",
    "N_PLAY_BUCKETS",
    "N_LAG_BUCKETS",
    "N_LABEL_IDS",
    "SampleStore",
    "SplitArrays",
    "build_samples",
    "sample_store_path",
    "store_summary",
    "play_bucket",
    "lag_bucket",
    "label_id",
    "encode",
    "lex_searchsorted",
    "partition_of",
    "partition_expr",
]
