"""The memory features of SIMULATOR.md as sorted-key structures, so lookups are vectorised searchsorted calls.

Times are ms relative to the simulation start. A decayed count at time t is
sum_e 2^(-(t - t_e)/h) = 2^(-t/h) * sum_e 2^(t_e/h), so a prefix sum of 2^(t_e/h) over events sorted by
(group, time) answers "decayed count of strictly earlier events" exactly for any batch of queries.
"""

from __future__ import annotations

import numpy as np

from farmcli.errors import UserError


def time_bits(span_ms: int) -> int:
    return max(1, int(span_ms).bit_length())


def pack(group: np.ndarray, t: np.ndarray, tbits: int) -> np.ndarray:
    return (group.astype(np.int64) << tbits) | t.astype(np.int64)


def check_packable(n_groups: int, tbits: int, what: str) -> None:
    if int(n_groups).bit_length() + tbits > 62:
        raise UserError(f"simulator: too many {what} for one block; lower block_users (or the number of days).")


class DecayedCount:
    """Exact decayed count of earlier events per group (m_tag: group = user x tag)."""

    def __init__(self, group: np.ndarray, t: np.ndarray, tbits: int, half_life_ms: float):
        key = pack(group, t, tbits)
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.tbits = tbits
        self.h = half_life_ms
        self.cs = np.concatenate([[0.0], np.cumsum(np.exp2(t[order] / half_life_ms))])

    def __call__(self, group: np.ndarray, t: np.ndarray) -> np.ndarray:
        base = group.astype(np.int64) << self.tbits
        lo = np.searchsorted(self.key, base, side="left")
        hi = np.searchsorted(self.key, base | t, side="left")  # strictly earlier: ties excluded
        return (self.cs[hi] - self.cs[lo]) * np.exp2(-t / self.h)


class LastEventAge:
    """Age of the latest strictly earlier event of a group (m_avid: group = user x author)."""

    def __init__(self, group: np.ndarray, t: np.ndarray, tbits: int):
        self.key = np.sort(pack(group, t, tbits))
        self.tbits = tbits

    def __call__(self, group: np.ndarray, t: np.ndarray) -> np.ndarray:
        q = pack(group, t, self.tbits)
        i = np.searchsorted(self.key, q, side="left") - 1
        prev = self.key[np.maximum(i, 0)] if len(self.key) else np.zeros_like(q)
        same = (i >= 0) & ((prev >> self.tbits) == (q >> self.tbits))
        mask = (1 << self.tbits) - 1
        return np.where(same, t - (prev & mask), np.inf)


class LiveMemory:
    """(user, live author) state from the user's clicked live impressions, refreshed once per chunk.

    Only clicks matter (like/comment/gift imply click), so the state stays small: one sorted row per
    distinct (user, author) pair ever clicked. Keys are user * n_live + author, which also makes a user's
    clicked authors one contiguous range (the re-exposure candidates).
    """

    def __init__(self, n_live: int, half_life_ms: float):
        self.n_live = n_live
        self.h = half_life_ms
        self.key = np.empty(0, np.int64)
        self.live_sum = np.empty(0)  # sum of 2^(t/h) over clicks (m_live)
        self.last = np.empty((3, 0))  # last like / comment / gift time, -inf if never (v_like, v_comment, v_gift)

    def clicked_range(self, user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = user.astype(np.int64) * self.n_live
        lo = np.searchsorted(self.key, base, side="left")
        hi = np.searchsorted(self.key, base + self.n_live, side="left")
        return lo, hi - lo

    def features(self, user: np.ndarray, author: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """m_live and v = (v_like, v_comment, v_gift) for each query."""
        if len(self.key) == 0:
            return np.zeros(len(t)), np.zeros((3, len(t)))
        q = user.astype(np.int64) * self.n_live + author
        i = np.minimum(np.searchsorted(self.key, q), len(self.key) - 1)
        found = self.key[i] == q
        m_live = np.where(found, self.live_sum[i] * np.exp2(-t / self.h), 0.0)
        v = np.where(found, np.exp2(-(t - self.last[:, i]) / self.h), 0.0)
        return m_live, v

    def update(self, user: np.ndarray, author: np.ndarray, t: np.ndarray, acts: np.ndarray) -> None:
        """Add clicked impressions; ``acts`` is (3, n) bool: like, comment, gift."""
        if len(t) == 0:
            return
        q = user.astype(np.int64) * self.n_live + author
        uq, inv = np.unique(q, return_inverse=True)
        add = np.bincount(inv, weights=np.exp2(t / self.h), minlength=len(uq))
        last = np.full((3, len(uq)), -np.inf)
        for j in range(3):
            np.maximum.at(last[j], inv, np.where(acts[j], t, -np.inf))
        pos = np.searchsorted(self.key, uq)
        old = pos < len(self.key)
        old[old] = self.key[pos[old]] == uq[old]
        self.live_sum[pos[old]] += add[old]
        self.last[:, pos[old]] = np.maximum(self.last[:, pos[old]], last[:, old])
        new = ~old
        if new.any():
            p = pos[new]
            self.key = np.insert(self.key, p, uq[new])
            self.live_sum = np.insert(self.live_sum, p, add[new])
            self.last = np.insert(self.last, p, last[:, new], axis=1)
