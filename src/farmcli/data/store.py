"""The sample store on disk, opened: memory-mapped arrays and the vectorised gathering of a batch's histories.

The store never materialises [N, L] history arrays (that is O(samples x L) on disk). It keeps, per domain,
the history events sorted by user and time as encoded columns, and per sample the offsets of its history
inside them. A batch's histories are gathered on the fly, fully vectorised:

    end   = first event of the user with ts >= sample ts      (strictly earlier events only, ties excluded)
    start = the user's first event
    pos   = end - L + arange(L)          valid = pos >= start  (oldest .. newest, padding first)

Layout of a store directory (``cache_dir/samples-<key16>``)::

    manifest.json                 format farm-samples/1, settings, sizes, {array name: dtype, shape},
                                  {array name: CRC-32 of its bytes} (checked on open, with the values)
    vocab.<author|page|tag|cluster|user>.bin    sorted raw ids; raw id vocab[i] has index i + 2
    video.<user_id|ts|author|page|tag|play|label>.bin            video history events
    live.<user_id|ts|author|page|tag|cluster|play|label>.bin     live history events (click = 1 only)
    <split>.<user_id|author_id|user|author|page|tag|cluster|ts|labels|p|activity|v_start|v_end|l_start|l_end>.bin

All arrays are raw little-endian binaries opened with ``np.memmap`` (read-only). How a store is built (and
what goes into it) is :mod:`farmcli.data.build`; the encodings are :mod:`farmcli.data.encoding`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from farmcli.batch import CANDIDATE_FIELDS, DOMAINS
from farmcli.batch import HISTORY_FIELDS as BATCH_HISTORY_FIELDS
from farmcli.data.encoding import is_torch, lag_bucket
from farmcli.data.schema import SPLITS
from farmcli.errors import UserError

FORMAT = "farm-samples/1"
STORE_VERSION = "farm-samples/1.0"
"""Part of every store key: bump it whenever the store's content for the same inputs would change."""

SPARSE_FILL = 0.5
"""A domain's history batch with fewer real positions than this share is read at its real positions only."""

PREFIX = DOMAINS
HISTORY_FIELDS = {dom: BATCH_HISTORY_FIELDS[p] for dom, p in DOMAINS.items()}
"""A domain's history fields by domain name (the batch contract, farmcli/batch.py, states them by prefix)."""
SAMPLE_IDS = CANDIDATE_FIELDS


class DamagedStore(UserError):
    """A complete store whose arrays are not those farm wrote (changed in place since the build)."""


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


SAMPLE_COLUMNS = tuple(f.name for f in dataclasses.fields(SplitArrays) if f.name != "n")


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
        SampleStore.__init__(self, state["path"], state["manifest"], state["reused"])

    # -- opening
    @classmethod
    def open(cls, path: str | os.PathLike, check: bool = True) -> SampleStore:
        """Open a complete store; anything else (missing, partial, other format, truncated array) is a UserError,
        and so is (with ``check``) a store whose arrays changed since they were built (:meth:`damage`)."""
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
        store = cls(path, manifest)
        if check:
            problem = store.damage()
            if problem is not None:
                raise DamagedStore(
                    f"{problem}: the sample store {path} changed since farm built it, so it cannot be trusted. "
                    f"Delete it and rebuild (`farm data build`, `farm train` and `farm eval` rebuild a damaged "
                    f"store of theirs by themselves)."
                )
        return store

    def damage(self) -> str | None:
        """What shows that the arrays are not those farm wrote (None when nothing does): values out of their range,
        then CRC-32s that differ from the build's (older stores have none). Cheap next to a fit: about 0.04 s and
        0.1 s on the ``default`` preset's store (226 MB), page cache warm."""
        for name, (lo, hi) in self._value_ranges().items():
            a = self.array(name)
            if a.size == 0:
                continue
            amin, amax = a.min(), a.max()
            if not (amin >= lo and amax <= hi):  # NaN fails both
                return f"{self.path / name}.bin: values from {amin} to {amax}, outside [{lo}, {hi}]"
        for split in SPLITS:  # the raw arrays: a cache check, not a read of the split's samples
            for p in PREFIX.values():
                if self.n(split) and f"{split}.{p}_start" in self.manifest["arrays"]:
                    if not bool(np.all(self.array(f"{split}.{p}_start") <= self.array(f"{split}.{p}_end"))):
                        return f"{self.path / split}.{p}_start.bin: a history that ends before it starts"
        for name, want in (self.manifest.get("checksums") or {}).items():
            if name in self.manifest["arrays"] and _crc32(self.path / f"{name}.bin") != want:
                return f"{self.path / name}.bin: its CRC-32 differs from the one recorded when it was built"
        return None

    def _value_ranges(self) -> dict[str, tuple[float, float]]:
        """Array -> the closed range its values must lie in (labels 0/1, p in [0, 1], indices below their vocabulary's
        or bucket's size, history offsets inside the events)."""
        sizes, events = self.vocab_sizes, self.manifest.get("events", {})
        buckets = {
            k: int(self.manifest[m])
            for k, m in (("play", "n_play_buckets"), ("label", "n_label_ids"))
            if m in self.manifest
        }
        ranges: dict[str, tuple[float, float]] = {}
        for name in self.manifest["arrays"]:
            prefix, _, field = name.partition(".")
            if field in sizes and prefix != "vocab":
                ranges[name] = (0, sizes[field] - 1)
            elif prefix in DOMAINS and field in buckets:
                ranges[name] = (0, buckets[field] - 1)
            elif field == "labels":
                ranges[name] = (0, 1)
            elif field == "p":
                ranges[name] = (0.0, 1.0)
            elif field == "activity":
                ranges[name] = (-1, 2)
            elif field[2:] in ("start", "end") and field[0] in "vl" and field[1] == "_":
                dom = "video" if field[0] == "v" else "live"
                if dom in events:
                    ranges[name] = (0, int(events[dom]))
        return ranges

    # -- metadata
    @property
    def history_len(self) -> int:
        return int(self.manifest["history_len"])

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return dict(self.manifest["vocab_sizes"])

    @property
    def model_shapes(self) -> dict[str, int]:
        """What the model is built for (``farmcli.model.VocabSizes``): vocabulary and bucket sizes, and L."""
        buckets = {
            k: self.manifest[k] for k in ("n_play_buckets", "n_lag_buckets", "n_label_ids") if k in self.manifest
        }
        return {**self.vocab_sizes, **buckets, "history_len": self.history_len}

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
            cols: dict[str, Any] = {
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
        if is_torch(idx):
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

    def _histories(self, rows: dict[str, np.ndarray], dtype: np.dtype | None = None) -> dict[str, np.ndarray]:
        """Every domain's history fields and mask; ``dtype``: every field in it (the model's int64), cast by the pass
        that zeroes the padding; None: each field in its stored type."""
        return {k: v for dom in HISTORY_FIELDS for k, v in self._domain_history(rows, dom, dtype).items()}

    def _domain_history(self, rows: dict[str, np.ndarray], dom: str, dtype: np.dtype | None) -> dict[str, np.ndarray]:
        L, p, out = self.history_len, PREFIX[dom], {}
        start, end = rows[f"{p}_start"], rows[f"{p}_end"]
        pos = end[:, None] - L + np.arange(L, dtype=np.int64)
        valid = pos >= start[:, None]
        empty = self.manifest["arrays"][f"{dom}.ts"]["shape"][0] == 0 or not valid.any()
        # a mostly empty history (live: a tenth of the positions): read the real positions only and put them into
        # zeros (2-3x faster than reading and zeroing every position)
        real = np.flatnonzero(valid) if not empty and valid.mean() < SPARSE_FILL else None
        if real is not None:
            at, at_ts = pos.reshape(-1)[real], rows["ts"][real // L]
        else:
            at, at_ts = np.where(valid, pos, 0), rows["ts"][:, None]
        for f in HISTORY_FIELDS[dom]:
            stored = np.dtype(np.int64 if f == "lag" else self.manifest["arrays"][f"{dom}.{f}"]["dtype"])
            if empty:
                out[f"{p}_{f}"] = np.zeros(pos.shape, dtype=dtype or stored)
            elif real is not None:
                a = np.zeros(pos.size, dtype=dtype or stored)
                a[real] = self._field(dom, f, at, at_ts)
                out[f"{p}_{f}"] = a.reshape(pos.shape)
            else:
                # 0 at padding (a quarter of the time of a[~valid] = 0), cast in the same pass
                out[f"{p}_{f}"] = np.multiply(self._field(dom, f, at, at_ts), valid, dtype=dtype or stored)
        out[f"{p}_mask"] = valid
        return out

    def _field(self, dom: str, field: str, pos: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """One history field of ``dom`` at event positions ``pos``; the lag bucket against sample times ``ts``."""
        if field == "lag":
            return lag_bucket(ts - np.take(self.array(f"{dom}.ts"), pos))
        return np.take(self.array(f"{dom}.{field}"), pos)

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
        out: dict[str, Any] = {
            c: torch.from_numpy(rows[c].astype(np.int64, copy=False)) for c in (*SAMPLE_IDS, "user_id", "activity")
        }
        out["labels"] = torch.from_numpy(rows["labels"].astype(np.float32))
        if "p" in rows:
            out["p"] = torch.from_numpy(np.ascontiguousarray(rows["p"], dtype=np.float32))
        return out | {k: torch.from_numpy(v) for k, v in self._histories(rows, np.dtype(np.int64)).items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.n(s)}" for s in SPLITS)
        return f"SampleStore({self.path}, {sizes}, L={self.history_len})"


def _crc32(path: Path) -> int:
    """CRC-32 of a file's bytes (zlib's; about 2 GB/s), as :class:`farmcli.data.build` records it per array."""
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


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
        splits = [store.split(s) for s in SPLITS]
        x = np.concatenate(
            [np.minimum(np.asarray(getattr(a, f"{p}_end")) - np.asarray(getattr(a, f"{p}_start")), L) for a in splits]
        )
        if len(x) == 0:
            out["history_length"][dom] = {"mean": 0.0, "p10": 0, "p50": 0, "p90": 0, "p99": 0, "empty": 0.0}
            continue
        q = np.percentile(x, [10, 50, 90, 99], method="lower")
        out["history_length"][dom] = {
            "mean": round(float(x.mean()), 3),
            **{f"p{k}": int(v) for k, v in zip((10, 50, 90, 99), q)},
            "empty": round(float((x == 0).mean()), 4),
        }
    return out
