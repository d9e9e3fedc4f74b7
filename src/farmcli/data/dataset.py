"""Open a farm-events/1 directory: its manifest and lazy scans of its tables (a file or a folder of shards)."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from farmcli.data.schema import FORMAT, LIVE_TRUTH_COLUMNS, MANIFEST_REQUIRED, TABLES, schema_of
from farmcli.errors import UserError


def table_path(root: str | Path, table: str) -> Path:
    return Path(root) / f"{table}.parquet"


def table_files(path: Path) -> list[Path]:
    """The parquet files behind a table: the file itself, or the sorted regular ``*.parquet`` files directly inside
    its folder (DATA_FORMAT.md); :func:`unread_entries` names what else there looks like data and is not read."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
    return [path] if path.is_file() else []


def path_kind(path: Path) -> str:
    """What is at ``path``, in words ('a FIFO (named pipe)', 'a character device (a link to /dev/null)', 'nothing')."""
    try:
        mode = path.stat().st_mode  # follows a link
    except OSError:
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "nothing"
    kind = next((k for test, k in _KINDS if test(mode)), "a special file")
    return f"{kind} (a link to {os.readlink(path)})" if path.is_symlink() else kind


def not_file_or_folder(path: Path) -> bool:
    """Something is at ``path`` (a FIFO, a device, a socket, a broken link) that is neither a file nor a folder,
    links followed."""
    return (path.exists() or path.is_symlink()) and not path.is_file() and not path.is_dir()


_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def unread_entries(path: Path) -> tuple[list[Path], list[Path]]:
    """What a table folder holds that looks like data and would not be read, as (parquet files in subfolders,
    ``*.parquet`` entries directly inside that are neither a file nor a folder). Hidden files and other files
    (``_SUCCESS``, ``*.crc``) are no one's data and are not listed."""
    if not path.is_dir():
        return [], []
    nested = sorted(
        p
        for p in path.rglob("*.parquet")
        if p.parent != path and not p.is_dir() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    odd = sorted(p for p in path.glob("*.parquet") if not p.name.startswith(".") and not p.is_file() and not p.is_dir())
    return nested, odd


def nested_problem(path: Path, nested: list[Path]) -> tuple[str, str]:
    """(message, fix) for parquet files in subfolders of a table folder: farm-events/1 does not read them."""
    table = path.name
    shown = ", ".join(p.relative_to(path).as_posix() for p in nested[:3])
    more = f" and {len(nested) - 3} more" if len(nested) > 3 else ""
    top = len(table_files(path))
    message = (
        f"holds parquet files in subfolders ({shown}{more}), which farm does not read: farm-events/1 reads only "
        f"the shards directly inside {table}/ (DATA_FORMAT.md, '{table}/part-*.parquet'), so "
        + (f"only its {top} top-level shard(s) would be read." if top else "none of its rows would be read.")
        + " Partition folders (Hive-style key=value/) are not part of the format."
    )
    first = nested[0].relative_to(path)
    flat = "-".join(first.parts)
    fix = (
        f"move every shard up into {table}/ under a distinct name (e.g. `mv {path / first} {path / flat}`), "
        f"putting any value the folder names encode into a column, or write the table without partitioning."
    )
    return message, fix


def odd_problem(odd: list[Path]) -> tuple[str, str]:
    """(message, fix) for ``*.parquet`` entries of a table folder that are neither a file nor a folder."""
    shown = "; ".join(f"{p.name} is {path_kind(p)}" for p in odd[:3])
    more = f" (and {len(odd) - 3} more)" if len(odd) > 3 else ""
    message = f"holds shards that are not regular files ({shown}{more}): they cannot be read as parquet."
    return message, "replace each with the parquet file it stands for, or remove it."


def check_table_folder(path: Path) -> None:
    """Refuse a table folder whose data would be read only in part (see :func:`unread_entries`)."""
    nested, odd = unread_entries(path)
    for found, problem in ((nested, nested_problem), (odd, lambda _, o: odd_problem(o))):
        if found:
            message, fix = problem(path, found)
            raise UserError(f"{path}: {message} Fix: {fix}")


def scan_files(files: list[Path], columns: list[str] | None = None) -> pl.LazyFrame:
    """A lazy scan of a table's shards: ``columns`` (default: those of the first shard) with the types of the first
    shard; any other column of any shard is ignored (DATA_FORMAT.md: readers ignore extra columns), so one shard
    with a column the others lack does not stop the scan."""
    first = pl.read_parquet_schema(files[0])
    names = list(first) if columns is None else [c for c in columns if c in first]
    return pl.scan_parquet(files, schema={c: first[c] for c in names}, extra_columns="ignore")


def scan_table(path: Path, table: str | None = None) -> pl.LazyFrame:
    """A lazy scan of a table; with ``table``, only the format's columns, each cast to the format's type (validation
    accepts another integer width with a warning: cast here once, no join or concat meets two widths of one id)."""
    files = table_files(path)
    if not files:
        said = f" ({path.name} is {path_kind(path)})" if not_file_or_folder(path) else ""
        raise UserError(
            f"{path}: no parquet data found{said} (expected a .parquet file or a folder of *.parquet shards)."
        )
    if table is None:
        return scan_files(files)
    want = format_schema(table)
    lf = scan_files(files, list(want))
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
        raw = json.loads(Path(path).read_text())  # every required key is there: checked just above
        no_default = dataclasses.MISSING
        return cls(
            **{f.name: raw.get(f.name, None if f.default is no_default else f.default) for f in dataclasses.fields(cls)}
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
        kind = path_kind(path)
        if kind != "nothing":  # a FIFO, a device, a broken link: never opened (reading a FIFO would block)
            return [
                f"{path}: exists but is {kind}, not a regular file, so it cannot be read. Replace it with a "
                f"manifest.json file (see DATA_FORMAT.md, 'manifest.json')."
            ]
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
        if v is None and key in raw and key in MANIFEST_REQUIRED:
            out.append(
                f"{path}: '{key}' is null; it must be an integer (epoch milliseconds). Write the boundary's time "
                f'in Unix ms, e.g. "{key}": 1700000000000 (only train_start may be left out or null).'
            )
        elif v is not None and (isinstance(v, bool) or not isinstance(v, int)):
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
            message, fix = not_a_dataset_dir(self.root)
            raise UserError(f"{self.root}: {message} {fix[0].upper()}{fix[1:]}")
        self.manifest = Manifest.load(self.root / "manifest.json")
        for table in TABLES:
            check_table_folder(self.path(table))

    def path(self, table: str) -> Path:
        return table_path(self.root, table)

    def has(self, table: str) -> bool:
        return bool(table_files(self.path(table)))

    def scan(self, table: str) -> pl.LazyFrame:
        return scan_table(self.path(table), table)

    def files(self, table: str) -> list[Path]:
        return table_files(self.path(table))


def not_a_dataset_dir(root: Path) -> tuple[str, str]:
    """(message, fix) for a dataset path that is not a directory: nothing there, a file, or something else."""
    kind = path_kind(root)
    holds = "a folder holding manifest.json, live.parquet and video.parquet"
    if kind == "nothing":
        return "no such dataset directory.", f"pass {holds} (or create one: `farm data synth --out {root}`)."
    if root.is_file():
        inside = root.parent if root.name == "manifest.json" or root.suffix == ".parquet" else None
        hint = f" (this file's folder, {inside}, may be the dataset)" if inside is not None else ""
        return "is a file, not a dataset directory.", f"pass {holds}{hint}; a dataset is a folder, not one file."
    return f"is {kind}, not a dataset directory.", f"pass {holds}."
