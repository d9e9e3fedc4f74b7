"""The encodings of the sample store: vocabulary indices, play-time, lag and label-id buckets, and the
vectorised history lookup (0 is padding in every field).

- ids (author, page, tag, cluster, user): vocabulary index ``i + 2`` for raw id ``vocab[i]``, 1 for an id the
  vocabulary does not hold (out-of-vocabulary), see :class:`Encoder`.
- play time: :func:`play_bucket`, 1..31. Lag (sample ts - event ts): :func:`lag_bucket`, 1..23.
- label id of a history event: :func:`label_id`, 1 + bits, bit i = i-th flag of VIDEO_FLAGS / LIVE_FLAGS (1..32).

Every function works on whole arrays (no Python loop over rows); the bucket rules are exact integer
arithmetic, so a serving system can reproduce them from the thresholds (``farm export`` writes them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

N_PLAY_BUCKETS = 32  # P: play buckets 1..P-1, 0 = padding
N_LAG_BUCKETS = 24  # G: lag buckets 1..G-1, 0 = padding
N_LABEL_IDS = 33  # 0 = padding, 1 + 5 bits


def is_torch(x: Any) -> bool:
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
    if is_torch(x):
        import torch

        b = torch.as_tensor(thresholds, device=x.device)
        return 1 + torch.searchsorted(b, x.to(torch.int64).clamp(min=0), right=True)
    return 1 + np.searchsorted(thresholds, np.maximum(np.asarray(x, dtype=np.int64), 0), side="right")


def play_bucket(play_ms: Any) -> Any:
    """Play-time bucket ``1 + min(P - 2, floor(2 * log2(1 + play_ms / 1000)))``, P = 32, so 1..31 (0: padding),
    exact on integer ms (:data:`PLAY_THRESHOLDS`: no float rounding at the edges); negative counts as 0."""
    return _bucketize(play_ms, PLAY_THRESHOLDS)


def lag_bucket(lag_ms: Any) -> Any:
    """Lag bucket ``1 + min(G - 2, floor(log2(1 + lag_ms / 1000)))``, G = 24, so 1..23 (0: padding), of sample ts -
    event ts (> 0: histories hold strictly earlier events), exact on integer ms (:data:`LAG_THRESHOLDS`)."""
    return _bucketize(lag_ms, LAG_THRESHOLDS)


def label_id(flags: Sequence[np.ndarray]) -> np.ndarray:
    """1 + bits, bit i set when ``flags[i]`` > 0 (VIDEO_FLAGS or LIVE_FLAGS order): 1..32, int8."""
    out = np.ones(len(flags[0]) if len(flags) else 0, dtype=np.int8)
    for i, f in enumerate(flags):
        out += (np.asarray(f) > 0).astype(np.int8) << i
    return out


class Encoder:
    """Raw ids -> vocabulary indices: ``vocab[i]`` (sorted, unique) -> i + 2, anything else -> 1 (out-of-vocabulary).
    Dense, non-negative vocabularies (max id < 2**24, or < 8 x their size) use a lookup table, others a searchsorted."""

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


def index_dtype(size: int) -> np.dtype:
    return np.dtype(
        np.int16 if size <= np.iinfo(np.int16).max else np.int32 if size <= np.iinfo(np.int32).max else np.int64
    )


def lex_searchsorted(
    ev_u: np.ndarray, ev_t: np.ndarray, q_u: np.ndarray, q_t: np.ndarray, *, force_rank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of each query (user q_u, time q_t) in events sorted by (user, ts): events[start:end] are the
    user's events strictly before q_t. One searchsorted on a composite key (user rank * span + ts offset), with ts
    replaced by its rank among the event times where that key could overflow int64."""
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


def tie_order(keys: Sequence[np.ndarray]) -> np.ndarray | None:
    """Rows sorted by (keys[0], keys[1]): the permutation that orders each run of ties by the remaining keys, or None
    without ties (sorting by two keys, then fixing the rare ties, is several times faster than sorting by all)."""
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
