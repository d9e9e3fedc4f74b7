"""The `farm-events/1` dataset format (DATA_FORMAT.md) as data: one source of truth for every reader and writer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from farmcli.batch import ACTIVITY_LEVELS as ACTIVITY_LEVELS  # re-exported: the batch contract states them
from farmcli.batch import TASKS as TASKS

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

FORMAT = "farm-events/1"


VIDEO_FLAGS = ("long_view", "like", "comment", "follow", "share")
"""Video behaviour flags, in the bit order of a video history item's label id."""

LIVE_FLAGS = ("effective_view", "long_view", "like", "comment", "gift")
"""Live behaviour flags, in the bit order of a live history item's label id."""

SPLITS = ("train", "valid", "test")
TRUTH_COLUMNS = tuple(f"p_{t}" for t in TASKS)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: PolarsDataType
    rule: str  # "id" (>= 0), "nonneg", "flag" (0/1), "prob" ([0,1]), "any", "activity"


def _cols(*spec: tuple[str, PolarsDataType, str]) -> tuple[Column, ...]:
    return tuple(Column(n, d, r) for n, d, r in spec)


_IDS_AND_TIME = (("user_id", pl.Int64, "id"), ("author_id", pl.Int64, "id"), ("ts", pl.Int64, "any"))
_PAGE_TAG = (("page", pl.Int32, "id"), ("tag", pl.Int32, "id"))
_PLAY = ("play_ms", pl.Int64, "nonneg")
LIVE_COLUMNS = _cols(
    *_IDS_AND_TIME, *_PAGE_TAG, ("cluster", pl.Int32, "id"), _PLAY, *((t, pl.Int8, "flag") for t in TASKS)
)
LIVE_TRUTH_COLUMNS = _cols(*((c, pl.Float32, "prob") for c in TRUTH_COLUMNS))
VIDEO_COLUMNS = _cols(*_IDS_AND_TIME, *_PAGE_TAG, _PLAY, *((f, pl.Int8, "flag") for f in VIDEO_FLAGS))
USERS_COLUMNS = _cols(("user_id", pl.Int64, "id"), ("activity", pl.String, "activity"))

TABLES = {"live": LIVE_COLUMNS, "video": VIDEO_COLUMNS, "users": USERS_COLUMNS}
REQUIRED_TABLES = ("live", "video")

MANIFEST_REQUIRED = ("format", "time_unit", "train_end", "valid_end", "test_end")


def schema_of(columns: tuple[Column, ...]) -> dict[str, PolarsDataType]:
    return {c.name: c.dtype for c in columns}
