"""Raw tables of a public dataset: find them (csv or parquet), check their columns, normalise their values.

Everything returns lazy polars expressions, so a table of any size streams. CSV columns are read as strings (no
type inference that a later row could contradict) and parsed by the layout of a sample of their first values;
parquet columns keep their type. Timestamps (:func:`ts_expr`) become epoch ms from a datetime or date type (naive
values read in ``naive_tz``), a number (by magnitude: >= 1e17 ns, >= 1e14 us, >= 1e11 ms, else seconds: 1e11 ms is
1973 and 1e11 s the year 5138, so no plausible date is misread) or text (date-times or epoch digits); a value
that does not fit its column's layout becomes null (and the caller drops the row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

from farmcli.errors import UserError

SAMPLE_ROWS = 2000

# (format, zone): zone None = naive (read in naive_tz), "UTC" = a literal Z suffix, "offset" = %z in the text.
DATETIME_FORMATS: tuple[tuple[str, str | None], ...] = (
    ("%Y-%m-%d %H:%M:%S%.f", None),
    ("%Y-%m-%dT%H:%M:%S%.f", None),
    ("%Y/%m/%d %H:%M:%S%.f", None),
    ("%Y-%m-%d %H:%M", None),
    ("%Y-%m-%d", None),
    ("%Y%m%d%H%M%S", None),
    ("%Y-%m-%dT%H:%M:%S%.fZ", "UTC"),
    ("%Y-%m-%d %H:%M:%S%.f%#z", "offset"),
    ("%Y-%m-%dT%H:%M:%S%.f%#z", "offset"),
)


def _clean_names(cols: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip() for c in cols]


@dataclass
class RawTable:
    """One raw table as found on disk: a csv file, a parquet file, or a folder of parquet shards."""

    name: str
    path: Path
    fmt: str  # "csv" | "parquet"
    files: list[Path]
    schema: dict[str, PolarsDataType] = field(default_factory=dict)
    _sample: pl.DataFrame | None = None

    def scan(self) -> pl.LazyFrame:
        if self.fmt == "csv":
            return pl.scan_csv(self.files[0], infer_schema=False, with_column_names=_clean_names, raise_if_empty=False)
        return pl.scan_parquet(self.files)

    def sample(self, cols: list[str]) -> pl.DataFrame:
        """The first rows of ``cols`` (cached), used to choose how a string column is parsed."""
        have = set(self._sample.columns) if self._sample is not None else set()
        if not set(cols) <= have:
            want = sorted(have | set(cols))
            try:
                self._sample = self.scan().select(want).head(SAMPLE_ROWS).collect()
            except pl.exceptions.PolarsError as e:
                raise UserError(f"{self.path}: cannot be read ({type(e).__name__}: {e}).") from None
        assert self._sample is not None
        return self._sample

    def int_col(self, col: str) -> pl.Expr:
        """Column ``col`` as Int64 (:func:`int_expr`; a text column read by the layout of its first rows)."""
        dtype = self.schema[col]
        return int_expr(col, dtype, self.sample([col])[col] if _is_text(dtype) else None)

    def rows_estimate(self) -> int:
        """Row count: exact from parquet footers, estimated from the file size and first lines for csv."""
        if self.fmt == "parquet":
            return int(pl.scan_parquet(self.files).select(pl.len()).collect().item())
        size = self.files[0].stat().st_size
        with open(self.files[0], "rb") as f:
            head = f.read(1 << 20)
        lines = max(head.count(b"\n") - 1, 1)
        per_line = max(len(head) / (lines + 1), 1.0)
        return int(size / per_line)


def locate(raw_dir: Path, name: str) -> RawTable | None:
    """The table ``name`` in ``raw_dir``: name.parquet (file or folder of shards), name.csv, or folder name/."""
    for path in (raw_dir / f"{name}.parquet", raw_dir / f"{name}.csv", raw_dir / name):
        if path.is_file():
            fmt = "csv" if path.suffix == ".csv" else "parquet"
            return RawTable(name, path, fmt, [path])
        if path.is_dir():
            shards = sorted(p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
            if shards:
                return RawTable(name, path, "parquet", shards)
    return None


def read_schema(table: RawTable) -> dict[str, PolarsDataType]:
    try:
        table.schema = dict(table.scan().collect_schema())
    except (pl.exceptions.PolarsError, OSError) as e:
        raise UserError(f"{table.path}: cannot be read as {table.fmt} ({type(e).__name__}: {e}).") from None
    return table.schema


def missing_columns(table: RawTable, required: tuple[str, ...]) -> list[str]:
    return [c for c in required if c not in table.schema]


def _is_text(dtype: PolarsDataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _string_number_kind(sample: pl.Series) -> str:
    s = sample.cast(pl.String).str.strip_chars().drop_nulls()
    s = s.filter(s != "")
    if s.len() == 0:
        return "mixed"
    if s.cast(pl.Int64, strict=False).null_count() == 0:
        return "int"
    if s.cast(pl.Float64, strict=False).null_count() == 0:
        return "float"
    if s.str.to_lowercase().is_in(["true", "false"]).all():
        return "bool"
    return "mixed"


def int_expr(name: str, dtype: PolarsDataType, sample: pl.Series | None = None) -> pl.Expr:
    """Column ``name`` as Int64: integers as they are, floats rounded, booleans 0/1, numeric text parsed; values that
    cannot be read (text that is no number, NaN) become null."""
    c = pl.col(name)
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.Int64)
    if dtype == pl.Boolean:
        return c.cast(pl.Int64)
    if dtype.is_integer():
        return c.cast(pl.Int64, strict=False)
    rounded = lambda x: pl.when(x.is_finite()).then(x.round()).otherwise(None).cast(pl.Int64, strict=False)  # noqa: E731
    if dtype.is_float():
        return rounded(c)
    if _is_text(dtype):
        s = c.cast(pl.String).str.strip_chars()
        lower = s.str.to_lowercase()
        by_kind = {
            "int": s.cast(pl.Int64, strict=False),
            "float": rounded(s.cast(pl.Float64, strict=False)),
            "bool": pl.when(lower == "true").then(pl.lit(1, pl.Int64)).when(lower == "false").then(pl.lit(0, pl.Int64)),
        }
        kind = _string_number_kind(sample) if sample is not None else "mixed"
        return by_kind[kind] if kind in by_kind else pl.coalesce(*by_kind.values())
    return c.cast(pl.Int64, strict=False)


def str_expr(name: str, dtype: PolarsDataType) -> pl.Expr:
    """Column ``name`` as a stripped string; empty text is null."""
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.String)
    s = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(s == "").then(None).otherwise(s)


def epoch_number_to_ms(x: pl.Expr) -> pl.Expr:
    """An Int64 epoch number of unknown unit to milliseconds, by magnitude (see the module docstring)."""
    a = x.abs()
    return (
        pl.when(a >= 10**17)
        .then(x // 1_000_000)
        .when(a >= 10**14)
        .then(x // 1_000)
        .when(a >= 10**11)
        .then(x)
        .otherwise(x * 1_000)
    )


def _datetime_to_ms(e: pl.Expr, dtype: PolarsDataType, naive_tz: str) -> pl.Expr:
    if (isinstance(dtype, pl.Datetime) and dtype.time_zone is not None) or naive_tz in ("UTC", "Etc/UTC"):
        return e.dt.epoch("ms")
    return e.dt.replace_time_zone(naive_tz, ambiguous="earliest", non_existent="null").dt.epoch("ms")


def _parse_text_ts(s: pl.Expr, fmt: str, zone: str | None, naive_tz: str) -> pl.Expr:
    dt = s.str.to_datetime(fmt, strict=False, time_unit="ms")
    if zone == "offset":
        return dt.dt.epoch("ms")
    return _datetime_to_ms(dt, pl.Datetime("ms"), "UTC" if zone == "UTC" else naive_tz)


def _text_layout(sample: pl.Series, naive_tz: str) -> tuple[str, str | None] | None:
    """The layout that parses most of the sample: a (format, zone) pair, ("number", None), or None."""
    s = sample.cast(pl.String).str.strip_chars().drop_nulls()
    s = s.filter(s != "")
    if s.len() == 0:
        return DATETIME_FORMATS[0]
    best, best_n = None, 0
    frame = s.to_frame("v")
    for fmt, zone in DATETIME_FORMATS:
        n = frame.select(_parse_text_ts(pl.col("v"), fmt, zone, naive_tz).is_not_null().sum()).item()
        if n > best_n:
            best, best_n = (fmt, zone), n
    n_num = frame.select(pl.col("v").cast(pl.Float64, strict=False).is_finite().sum()).item()
    if n_num > best_n:
        best, best_n = ("number", None), n_num
    return best


def ts_expr(table: RawTable, name: str, naive_tz: str = "UTC") -> pl.Expr:
    """Column ``name`` of ``table`` as Int64 epoch milliseconds (null where it cannot be read)."""
    dtype = table.schema[name]
    c = pl.col(name)
    if dtype == pl.Null:
        return pl.lit(None, dtype=pl.Int64)
    if isinstance(dtype, pl.Datetime):
        return _datetime_to_ms(c, dtype, naive_tz)
    if dtype == pl.Date:
        return _datetime_to_ms(c.cast(pl.Datetime("ms")), pl.Datetime("ms"), naive_tz)
    if dtype.is_integer() or dtype == pl.Boolean:
        return epoch_number_to_ms(c.cast(pl.Int64, strict=False))
    if dtype.is_float():
        return epoch_number_to_ms(int_expr(name, dtype))
    if _is_text(dtype):
        sample = table.sample([name])[name]
        layout = _text_layout(sample, naive_tz)
        if layout is None:
            example = next((v for v in sample.cast(pl.String).drop_nulls().to_list() if v.strip()), "")
            raise UserError(
                f"{table.path}: column '{name}' holds values like '{example}' that are neither "
                "date-times (e.g. 2025-05-05 08:00:00.123) nor epoch seconds/milliseconds. "
                "Fix the export, or convert the column to epoch milliseconds."
            )
        s = c.cast(pl.String).str.strip_chars()
        if layout[0] == "number":
            return epoch_number_to_ms(int_expr(name, pl.String, sample))
        return _parse_text_ts(s, layout[0], layout[1], naive_tz)
    raise UserError(
        f"{table.path}: column '{name}' has type {dtype}; expected a timestamp, a date-time string "
        "or epoch milliseconds."
    )


def local_date(ts_ms: pl.Expr, tz: str) -> pl.Expr:
    """The calendar date in ``tz`` of an epoch-milliseconds expression."""
    return pl.from_epoch(ts_ms, time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone(tz).dt.date()


def embedding_components(table: RawTable, name: str) -> list[pl.Expr]:
    """The components of a list/array float column as Float32 expressions ``e0..e{d-1}``: d is the array width, or
    a list's most common length in the sample (rows of another length get nulls, which the caller drops)."""
    dtype = table.schema[name]
    c = pl.col(name)
    if isinstance(dtype, pl.Array):
        return [c.arr.get(i, null_on_oob=True).cast(pl.Float32).alias(f"e{i}") for i in range(dtype.size)]
    if isinstance(dtype, pl.List):
        lengths = table.sample([name])[name].list.len().drop_nulls()
        d = int(lengths.mode().sort()[-1]) if lengths.len() else 0
        return [c.list.get(i, null_on_oob=True).cast(pl.Float32).alias(f"e{i}") for i in range(d)]
    raise UserError(f"{table.path}: column '{name}' has type {dtype}; expected a list or array of floats.")
