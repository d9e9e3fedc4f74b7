"""Staging: a normalised copy of a raw table split into user-id buckets, so later steps hold one bucket at a time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

KEY = "bucket"


def bucket_expr(breaks: list[int]) -> pl.Expr:
    """Bucket of a row: how many break points its user_id reaches (0..len(breaks)); null ids go to bucket 0.

    Buckets are user-id ranges in increasing order, so the buckets' rows concatenated in bucket order and
    sorted within each bucket are sorted as a whole.
    """
    if not breaks:
        return pl.lit(0, dtype=pl.Int32).alias(KEY)
    return pl.sum_horizontal([(pl.col("user_id") >= b).cast(pl.Int32) for b in breaks]).cast(pl.Int32).alias(KEY)


def sink_buckets(lf: pl.LazyFrame, base: Path, n_buckets: int) -> dict[str, PolarsDataType]:
    """Stream ``lf`` (which has a ``bucket`` column) into ``base/bucket=<b>/*.parquet``; return the row schema."""
    schema: dict[str, PolarsDataType] = {k: v for k, v in lf.collect_schema().items() if k != KEY}
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    if n_buckets == 1:
        (base / f"{KEY}=0").mkdir()
        lf.drop(KEY).sink_parquet(base / f"{KEY}=0" / "part-0.parquet", compression="lz4")
        return schema
    partition_by = getattr(pl, "PartitionBy", None)
    if partition_by is not None:
        try:
            lf.sink_parquet(partition_by(base, key=KEY, include_key=False), compression="lz4", mkdir=True)
            return schema
        except TypeError:  # an older polars with another PartitionBy signature: fall back below
            shutil.rmtree(base)
            base.mkdir(parents=True)
    for b in range(n_buckets):  # one filtered pass per bucket: slower, but any polars >= 1.0 has it
        (base / f"{KEY}={b}").mkdir()
        lf.filter(pl.col(KEY) == b).drop(KEY).sink_parquet(base / f"{KEY}={b}" / "part-0.parquet", compression="lz4")
    return schema


def scan_bucket(base: Path, b: int | None, schema: dict[str, PolarsDataType]) -> pl.LazyFrame:
    """The staged rows of bucket ``b`` (None: of every bucket), or an empty frame of ``schema`` where there are none."""
    files = sorted(base.glob(f"{KEY}={'*' if b is None else b}/*.parquet"))
    return pl.scan_parquet(files, hive_partitioning=False) if files else pl.LazyFrame(schema=schema)
