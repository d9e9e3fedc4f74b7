"""Open a farm-events/1 directory: its manifest and lazy scans of its tables (a file or a folder of shards)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from farmcli.data.schema import FORMAT, LIVE_TRUTH_COLUMNS, MANIFEST_REQUIRED, TABLES, schema_of
from farmcli.errors import UserError


def table_path(root: str | Path, table: str) -> Path:
    return Path(root) / f"{table}.parquet"


def table_files(path: Path) -> list[Path]:
    """The parquet files behind a table: the file itself, or the sorted shards of a directory."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
    return [path] if path.is_file() else []


def scan_table(path: Path, table: str | None = None) -> pl.LazyFrame:
    """A lazy scan of a table; with ``table``, every column the format names is cast to the format's type.

    Validation accepts another integer width (e.g. an Int32 user_id) with a warning, so readers cast here,
    once, rather than each join and concat meeting two widths of one id.
    """
    files = table_files(path)
    if not files:
        raise UserError(f"{path}: no parquet data found (expected a .parquet file or a folder of *.parquet shards).")
    lf = pl.scan_parquet(files)
    if table is None:
        return lf
    want = format_schema(table)
    have = lf.collect_schema()
    casts = [pl.col(n).cast(t) for n, t in want.items() if n in have and have[n] != t]
    return lf.with_columns(casts) if casts else lf


def format_schema(table: str) -> dict:
    """Column -> type of a table as DATA_FORMAT.md states it (live with its optional p_* columns)."""
    return schema_of(TABLES[table] + (LIVE_TRUTH_COLUMNS if table == "live" else ()))


@dataclass(frozen=True)
class Manifest:
    format: str
    time_unit: str
    train_start: int | None
    train_end: int
    valid_end: int
    test_end: int
    name: str = ""
    source: str = ""
    description: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and check manifest.json; any problem is a UserError naming the file and the fix."""
        problems = manifest_problems(path)
        if problems:
            raise UserError("\n".join(problems))
        raw = json.loads(Path(path).read_text())
        return cls(
            format=raw["format"],
            time_unit=raw["time_unit"],
            train_start=raw.get("train_start"),
            train_end=raw["train_end"],
            valid_end=raw["valid_end"],
            test_end=raw["test_end"],
            name=raw.get("name", ""),
            source=raw.get("source", ""),
            description=raw.get("description", ""),
        )


def split_windows(m: Manifest) -> dict[str, tuple[int | None, int]]:
    """[start, end) of the sample ts of each split (DATA_FORMAT.md); train has no start without train_start."""
    return {
        "train": (m.train_start, m.train_end),
        "valid": (m.train_end, m.valid_end),
        "test": (m.valid_end, m.test_end),
    }


def in_window(ts: Any, start: int | None, end: int) -> Any:
    """start <= ts < end (no lower bound where start is None): a polars expression, or a numpy array's mask."""
    return ts < end if start is None else (ts >= start) & (ts < end)


def manifest_problems(path: str | Path) -> list[str]:
    """Every problem with a manifest.json, each as one line naming the file, the key and the fix."""
    path = Path(path)
    if path.is_dir():
        return [f"{path}: is a directory, not a file. Replace it with a manifest.json file (see DATA_FORMAT.md)."]
    if not path.is_file():
        return [f"{path}: missing. Every dataset needs a manifest.json (see DATA_FORMAT.md, 'manifest.json')."]
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return [f"{path}: not valid JSON ({e}). Fix the file's syntax."]
    if not isinstance(raw, dict):
        return [f"{path}: must hold a JSON object with keys {', '.join(MANIFEST_REQUIRED)}."]
    out = []
    for key in MANIFEST_REQUIRED:
        if key not in raw:
            out.append(f"{path}: key '{key}' is missing. Add it (see DATA_FORMAT.md).")
    fmt = raw.get("format")
    if fmt is not None and fmt != FORMAT:
        out.append(f"{path}: format '{fmt}' is not supported; this farm reads '{FORMAT}'.")
    if "time_unit" in raw and raw["time_unit"] != "ms":
        out.append(f"{path}: time_unit '{raw['time_unit']}' is not supported; timestamps must be epoch 'ms'.")
    bounds = ["train_start", "train_end", "valid_end", "test_end"]
    for key in bounds:
        v = raw.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            out.append(f"{path}: '{key}' must be an integer (epoch milliseconds), got {v!r}.")
    vals = [(k, raw[k]) for k in bounds if isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)]
    for (k1, v1), (k2, v2) in zip(vals, vals[1:]):
        strict = k1 == "train_start" or k2 == "train_end" or k2 == "test_end"
        if v2 < v1 or (strict and v2 == v1):
            rel = "<" if strict else "<="
            out.append(f"{path}: boundaries out of order: need {k1} {rel} {k2}, got {v1} and {v2}.")
    return out


class Dataset:
    """A farm-events/1 dataset directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(
                f"{self.root}: no such dataset directory. Create one with `farm data synth --out {self.root}`."
            )
        self.manifest = Manifest.load(self.root / "manifest.json")

    def path(self, table: str) -> Path:
        return table_path(self.root, table)

    def has(self, table: str) -> bool:
        return bool(table_files(self.path(table)))

    def scan(self, table: str) -> pl.LazyFrame:
        return scan_table(self.path(table), table)

    def files(self, table: str) -> list[Path]:
        return table_files(self.path(table))
