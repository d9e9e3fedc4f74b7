"""The CPU backend's speed-ups, each a switch (all on in use): ``benchmarks/bench_train.py --compare NAME`` times
one off against on, tests/model/cpu/ tests both paths equal. A setting of the process, read at every forward."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuOptions:
    buckets: bool = True
    """Live rows grouped by span (ragged.py), each group on its own trailing positions; off: full length L."""
    sort_rows: bool = True
    """The batch put in live-span order once, on its ids, so that groups are slices (farm.py)."""
    trim_live: bool = True
    """V_live embedded and eq. 9-11 run on each group's trailing positions only."""
    live_rows_only: bool = True
    """Eq. 12-17 skip rows without a live event (where align and fuse read nothing of them)."""
    row_gather: bool = True
    """Embedding backward by ``index_add_`` (embed.py); off: torch's ``embedding_dense_backward``."""
    product_tables: bool = True
    """Adjacent small history fields looked up as one product table (embed.py)."""
    stacked_head: bool = True
    """The PLE head's experts, gates and towers as a few large products (heads.py)."""
    fold_keys: bool = True
    """Attention with few queries folds W_k and W_v into the queries instead of projecting every key (attention.py)."""
    key_backward: bool = True
    """The folded attention's backward as one product for the keys' gradient (attention.py)."""
    lanes: bool = True
    """Products padded with zeros to whole AVX2 vector lanes (attention heads 23 -> 24, the PLE's first layers)."""


SWITCHES = tuple(f.name for f in dataclasses.fields(CpuOptions))

_current: ContextVar[CpuOptions] = ContextVar("farm_cpu_options", default=CpuOptions())  # noqa: B039 (frozen)


def current() -> CpuOptions:
    return _current.get()


@contextmanager
def options(**changes: bool) -> Iterator[CpuOptions]:
    """Inside this block the CPU backend runs with ``changes`` (e.g. ``sort_rows=False``)."""
    token = _current.set(dataclasses.replace(_current.get(), **changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
