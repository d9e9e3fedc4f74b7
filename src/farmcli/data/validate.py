"""Check a dataset against DATA_FORMAT.md without loading whole tables (lazy polars scans, one pass per table)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

from farmcli.data.dataset import manifest_problems, table_files, table_path
from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    LIVE_COLUMNS,
    LIVE_FLAGS,
    LIVE_TRUTH_COLUMNS,
    REQUIRED_TABLES,
    TABLES,
    TASKS,
    Column,
)


@dataclass(frozen=True)
class Problem:
    where: str  # file or file:column
    message: str
    fix: str
    training_only: bool = False
    """An error that stops training and sample building (no training rows, nothing to learn) but not reading
    or scoring the dataset with a trained run."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message} Fix: {self.fix}"


@dataclass
class Report:
    root: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def blocking(self, training: bool = True) -> list[Problem]:
        """The errors that stop a use: every error for training, the format errors only for reading or scoring."""
        return [e for e in self.errors if training or not e.training_only]

    def to_dict(self) -> dict:
        as_dicts = lambda ps: [{"where": p.where, "message": p.message, "fix": p.fix} for p in ps]  # noqa: E731
        return {
            "dataset": str(self.root),
            "valid": self.ok,
            "rows": self.rows,
            "errors": as_dicts(self.errors),
            "warnings": as_dicts(self.warnings),
        }


_INT_RANGE: dict[PolarsDataType, tuple[int, int]] = {
    pl.Int8: (-(2**7), 2**7 - 1),
    pl.Int32: (-(2**31), 2**31 - 1),
    pl.Int64: (-(2**63), 2**63 - 1),
}
"""Values each integer type of the format holds: a wider column is read with a cast that must not overflow."""

_INT_FIX = "write it as {dtype} (e.g. polars `pl.col('{col}').cast(pl.{dtype})`)."


def _fix(actual: PolarsDataType, col: Column) -> str:
    if isinstance(actual, (pl.Datetime, pl.Date)) and col.name == "ts":
        return (
            "write Unix epoch milliseconds as Int64: polars `pl.col('ts').dt.epoch('ms')` (a plain cast would "
            "give the Datetime's own unit, often microseconds)."
        )
    return _INT_FIX.format(dtype=col.dtype, col=col.name)


def _type_ok(actual: PolarsDataType, col: Column) -> tuple[bool, bool]:
    """(acceptable, exact): another integer width is readable (a warning); another kind is an error."""
    if actual == col.dtype:
        return True, True
    if col.dtype.is_integer():
        return actual.is_integer(), False
    if col.dtype.is_float():
        return actual.is_float(), False
    if col.dtype == pl.String:
        return actual in (pl.String, pl.Categorical, pl.Enum) or isinstance(actual, (pl.Categorical, pl.Enum)), False
    return False, False


def _checks(col: Column, actual: PolarsDataType) -> list[tuple[str, pl.Expr, str, str]]:
    """Value rules of one column as (name, count-of-bad-rows expression, message, fix)."""
    c = pl.col(col.name)
    n = col.name
    out = [(f"{n}:null", c.is_null().sum(), "{k} null value(s).", "fill or drop the rows with nulls.")]
    if col.dtype.is_integer() and actual != col.dtype and col.rule != "flag":
        lo, hi = _INT_RANGE[col.dtype]
        out.append(
            (
                f"{n}:range",
                ((c > hi) | (c < lo) if actual.is_signed_integer() else c > hi).sum(),
                f"{{k}} value(s) outside the range of {col.dtype} ({lo:,} to {hi:,}), the type it is read as.",
                f"remap them into that range and write the column as {col.dtype}.",
            )
        )
    if col.rule == "id":
        out.append(
            (f"{n}:neg", (c < 0).sum(), "{k} negative id(s); ids must be >= 0.", "remap ids to non-negative integers.")
        )
    elif col.rule == "nonneg":
        out.append((f"{n}:neg", (c < 0).sum(), "{k} negative value(s); must be >= 0.", "clip or fix them."))
    elif col.rule == "flag":
        out.append(
            (
                f"{n}:flag",
                (~c.is_in([0, 1])).sum(),
                "{k} value(s) outside {{0, 1}}; flags are binary.",
                f"binarise it, e.g. (`{n}` > 0).",
            )
        )
    elif col.rule == "prob":
        out.append(
            (
                f"{n}:prob",
                (c.is_nan() | (c < 0) | (c > 1)).sum(),
                "{k} value(s) outside [0, 1] or NaN.",
                "write probabilities in [0, 1].",
            )
        )
    elif col.rule == "activity":
        out.append(
            (
                f"{n}:level",
                (~c.cast(pl.String).is_in(list(ACTIVITY_LEVELS))).sum(),
                "{k} value(s) outside {{low, mid, high}}.",
                "use one of low, mid, high.",
            )
        )
    return out


def _funnel_checks() -> list[tuple[str, pl.Expr]]:
    click = pl.col("click")
    out = [(f"{f} without click", ((pl.col(f) == 1) & (click == 0)).sum()) for f in LIVE_FLAGS]
    out.append(
        ("long_view without effective_view", ((pl.col("long_view") == 1) & (pl.col("effective_view") == 0)).sum())
    )
    return out


def _check_table(root: Path, table: str, report: Report, required: bool) -> None:
    path = table_path(root, table)
    files = table_files(path)
    if not files:
        if required or path.exists():
            what = "has no *.parquet shards" if path.is_dir() else "is missing"
            report.errors.append(
                Problem(
                    str(path),
                    f"required table {what}.",
                    f"write {table}.parquet (a file or a folder of parquet shards), see DATA_FORMAT.md.",
                )
            )
        return
    columns = TABLES[table] + (LIVE_TRUTH_COLUMNS if table == "live" else ())
    required_names = {c.name for c in TABLES[table]}
    # Schema of every shard from its footer: cheap, and names the shard that differs.
    schemas = {}
    for f in files:
        try:
            schemas[f] = pl.read_parquet_schema(f)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's problem to fix
            report.errors.append(
                Problem(
                    str(f),
                    f"cannot be read as parquet ({type(e).__name__}: {e}).",
                    "rewrite the file with a parquet writer.",
                )
            )
    if len(schemas) != len(files):
        return
    usable: list[Column] = []
    bad_type = False
    for col in columns:
        present = [f for f, s in schemas.items() if col.name in s]
        if len(present) < len(files):
            if col.name in required_names:
                missing = [f for f in files if f not in present]
                where = str(missing[0]) if len(files) > 1 else str(path)
                more = f" (and {len(missing) - 1} more shard(s))" if len(missing) > 1 else ""
                report.errors.append(
                    Problem(
                        f"{where}:{col.name}",
                        f"required column '{col.name}' is missing{more}.",
                        f"add it as {col.dtype} (see DATA_FORMAT.md, {table}.parquet).",
                    )
                )
            elif present:
                report.errors.append(
                    Problem(
                        f"{path}:{col.name}", "present in some shards only.", "write the same columns in every shard."
                    )
                )
            continue
        kinds = {str(s[col.name]) for s in schemas.values()}
        accepted = True
        for f, s in schemas.items():
            ok, exact = _type_ok(s[col.name], col)
            if not ok:
                accepted = False
                report.errors.append(
                    Problem(
                        f"{f}:{col.name}",
                        f"has type {s[col.name]}, the format says {col.dtype}.",
                        _fix(s[col.name], col),
                    )
                )
                break
            if not exact:
                report.warnings.append(
                    Problem(
                        f"{f}:{col.name}",
                        f"has type {s[col.name]}, the format says {col.dtype}; it is read with a cast.",
                        _INT_FIX.format(dtype=col.dtype, col=col.name),
                    )
                )
                break
        if accepted and len(kinds) > 1:
            accepted = False
            report.errors.append(
                Problem(
                    f"{path}:{col.name}",
                    f"shards disagree on its type ({', '.join(sorted(kinds))}).",
                    f"write it as {col.dtype} in every shard.",
                )
            )
        if accepted:
            usable.append(col)
        else:
            bad_type = True
    lf = pl.scan_parquet(files) if not bad_type else None
    if lf is None:
        # Still count rows so an empty table is reported alongside type problems.
        lf_rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
        report.rows[table] = lf_rows
        if lf_rows == 0:
            report.errors.append(Problem(str(path), "table is empty.", f"write at least one {table} row."))
        return
    lf = lf.select([c.name for c in usable])
    first = next(iter(schemas.values()))
    checks = [chk for col in usable for chk in _checks(col, first[col.name])]
    exprs = [pl.len().alias("__rows")] + [expr.alias(name) for name, expr, _, _ in checks]
    funnel = (
        _funnel_checks() if table == "live" and all(c.name in {u.name for u in usable} for c in LIVE_COLUMNS) else []
    )
    exprs += [expr.alias(f"funnel:{name}") for name, expr in funnel]
    names = {c.name for c in usable}
    if table == "users" and "user_id" in names:
        exprs.append((pl.len() - pl.col("user_id").n_unique()).alias("__dup_users"))
    if table == "live" and {"user_id", "author_id", "ts"} <= names:
        exprs.append((pl.len() - pl.struct("user_id", "author_id", "ts").n_unique()).alias("__dup_live"))
    stats = lf.select(exprs).collect(engine="streaming").row(0, named=True)
    rows = stats["__rows"]
    report.rows[table] = rows
    if rows == 0:
        report.errors.append(Problem(str(path), "table is empty.", f"write at least one {table} row."))
        return
    for name, _, message, fix in checks:
        k = stats[name]
        if k:
            column = name.split(":")[0]
            report.errors.append(Problem(f"{path}:{column}", message.format(k=f"{k:,}"), fix))
    for name, _ in funnel:
        k = stats[f"funnel:{name}"]
        if k:
            report.warnings.append(
                Problem(
                    f"{path}",
                    f"funnel: {k:,} row(s) with {name}.",
                    "none needed (real logs break the funnel); check the export if unexpected.",
                )
            )
    if stats.get("__dup_live"):
        report.warnings.append(
            Problem(
                f"{path}",
                f"{stats['__dup_live']:,} row(s) repeat the (user_id, author_id, ts) of another row.",
                "drop duplicated impressions unless they are real (polars: `.unique(['user_id', 'author_id', 'ts'])`).",
            )
        )
    if stats.get("__dup_users"):
        report.errors.append(
            Problem(f"{path}:user_id", f"{stats['__dup_users']:,} duplicate user id(s).", "keep one row per user.")
        )


def validate(root: str | Path) -> Report:
    """Every problem of a dataset directory; errors make it unusable, warnings do not."""
    root = Path(root)
    report = Report(root)
    if not root.is_dir():
        report.errors.append(
            Problem(
                str(root),
                "no such dataset directory.",
                f"pass a folder holding manifest.json, live.parquet and video.parquet "
                f"(or create one: `farm data synth --out {root}`).",
            )
        )
        return report
    for line in manifest_problems(root / "manifest.json"):
        where, _, rest = line.partition(": ")
        report.errors.append(Problem(where, rest, "see DATA_FORMAT.md, 'manifest.json'."))
    for table in TABLES:
        _check_table(root, table, report, required=table in REQUIRED_TABLES)
    if report.ok:
        _check_windows(root, report)
    return report


DAY_MS = 86_400_000
UNIT_PROBE_MS = 366 * DAY_MS
"""Timestamps are checked for a wrong unit against [train_end - this, test_end): a year before the windows."""


def _when(ms: int) -> str:
    """Epoch ms as a UTC date for messages (the number itself where no date has it)."""
    from datetime import datetime, timezone

    try:
        return f"{ms} ({datetime.fromtimestamp(ms / 1000, tz=timezone.utc):%Y-%m-%d %H:%M} UTC)"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _windows(m: dict) -> dict[str, tuple[int | None, int]]:
    start = m.get("train_start")
    return {
        "train": (start, m["train_end"]),
        "valid": (m["train_end"], m["valid_end"]),
        "test": (m["valid_end"], m["test_end"]),
    }


def _time_stats(files: list[Path], m: dict, labels: bool) -> dict:
    """One streaming pass: rows, ts range, rows per window, rows past test_end, rows that a unit change
    (x1000, /1000) would bring near the windows and, with ``labels``, positives per task per window."""
    ts = pl.col("ts")
    exprs = [pl.len().alias("rows"), ts.min().alias("ts_min"), ts.max().alias("ts_max")]
    conds = {}
    for split, (lo, hi) in _windows(m).items():
        conds[split] = (ts < hi) if lo is None else (ts >= lo) & (ts < hi)
        exprs.append(conds[split].sum().alias(split))
    exprs.append((ts >= m["test_end"]).sum().alias("after"))
    lo, hi = m["train_end"] - UNIT_PROBE_MS, m["test_end"]
    t = ts.cast(pl.Float64)
    for name, scaled in (("raw", t), ("seconds", t * 1000), ("microseconds", t / 1000)):
        exprs.append(((scaled >= lo) & (scaled < hi)).sum().alias(f"unit:{name}"))
    if labels:
        exprs += [
            (conds[split] & (pl.col(task) == 1)).sum().alias(f"{split}:{task}")
            for split in ("train", "test")
            for task in TASKS
        ]
    return pl.scan_parquet(files).select(exprs).collect(engine="streaming").row(0, named=True)


def _check_units(where: str, stats: dict, m: dict, report: Report) -> bool:
    """Timestamps in seconds (or microseconds) where the manifest says ms: an error; True when found."""
    if stats["unit:raw"]:
        return False
    for unit, fix in (("seconds", "pl.col('ts') * 1000"), ("microseconds", "pl.col('ts') // 1000")):
        if stats[f"unit:{unit}"]:
            report.errors.append(
                Problem(
                    f"{where}:ts",
                    f"the timestamps look like {unit}, not milliseconds: they run from {_when(stats['ts_min'])} "
                    f"to {_when(stats['ts_max'])} read as ms, while the manifest's windows end at test_end "
                    f"{_when(m['test_end'])}; read as {unit}, they fall inside them.",
                    f"write epoch milliseconds, as the manifest's time_unit 'ms' says (polars: `{fix}`).",
                )
            )
            return True
    return False


def _check_windows(root: Path, report: Report) -> None:
    """Files can be valid yet unusable: timestamps in another unit, no row in a window, nothing to learn.

    Errors where nothing can be trained (or nothing read at all), warnings where a part is missing.
    """
    import json

    m = json.loads((root / "manifest.json").read_text())
    live_path, video_path = str(table_path(root, "live")), str(table_path(root, "video"))
    live = _time_stats(table_files(table_path(root, "live")), m, labels=True)
    video = _time_stats(table_files(table_path(root, "video")), m, labels=False)
    if _check_units(live_path, live, m, report) | _check_units(video_path, video, m, report):
        return
    span = f"the ts column runs from {_when(live['ts_min'])} to {_when(live['ts_max'])}"
    if live["after"] == live["rows"]:
        report.errors.append(
            Problem(
                live_path,
                f"every live row ({live['rows']:,}) is at or after test_end {_when(m['test_end'])}, so none is a "
                f"sample: nothing can be trained, evaluated or scored ({span}).",
                "move the manifest's boundaries to cover the ts column (Unix ms), or check the ts column.",
            )
        )
        return
    for split, (lo, hi) in _windows(m).items():
        if live[split] or (split == "valid" and lo == hi):
            continue
        where = f"no live impression in the {split} window [{_when(lo) if lo is not None else '-inf'}, {_when(hi)})"
        if split == "train":
            report.errors.append(
                Problem(
                    live_path,
                    f"{where}, so there is nothing to train on ({span}).",
                    "move the manifest's train_start / train_end to cover the ts column (Unix ms), or add rows.",
                    training_only=True,
                )
            )
        else:
            report.warnings.append(
                Problem(live_path, f"{where}.", "check the manifest's boundaries against the ts column (Unix ms).")
            )
    if live["after"]:
        report.warnings.append(
            Problem(
                live_path,
                f"{live['after']:,} live row(s) at or after test_end ({m['test_end']}); they are never used.",
                "move test_end, or drop those rows, if that is not intended.",
            )
        )
    if video["after"] == video["rows"]:
        report.warnings.append(
            Problem(
                video_path,
                f"every video row ({video['rows']:,}) is at or after test_end {_when(m['test_end'])}: none is "
                f"ever used, so every video history is empty.",
                "check video.parquet's ts column against the manifest's boundaries (Unix ms).",
            )
        )
    _check_labels(live_path, live, report)


def _one_class(stats: dict, split: str) -> dict[str, int]:
    """Tasks whose label has one value in every row of ``split`` -> that value."""
    n = stats[split]
    return {t: int(stats[f"{split}:{t}"] == n) for t in TASKS if stats[f"{split}:{t}"] in (0, n)}


def _check_labels(where: str, live: dict, report: Report) -> None:
    """Nothing to learn in the training window is an error; a task with one class only, a warning."""
    fix = "check live.parquet's label columns (0/1 per impression) and the manifest's train window."
    if live["train"]:
        single = _one_class(live, "train")
        listed = ", ".join(f"{t} all {v}" for t, v in single.items())
        if len(single) == len(TASKS):
            report.errors.append(
                Problem(
                    where,
                    f"every label is one class in the training window ({live['train']:,} rows: {listed}), so "
                    f"there is nothing to learn.",
                    fix,
                    training_only=True,
                )
            )
        elif single.get("click") == 0:
            report.errors.append(
                Problem(
                    where,
                    f"no click in the training window ({live['train']:,} impressions): click, the label every "
                    f"other one builds on, has nothing to learn from.",
                    fix,
                    training_only=True,
                )
            )
        elif single:
            report.warnings.append(
                Problem(
                    where,
                    f"one class only in the training window for {listed}: the model learns nothing for "
                    f"{'it' if len(single) == 1 else 'them'}.",
                    fix,
                )
            )
    if live["test"]:
        single = _one_class(live, "test")
        if single:
            listed = ", ".join(f"{t} all {v}" for t, v in single.items())
            report.warnings.append(
                Problem(
                    where,
                    f"one class only in the test window for {listed}: {'its' if len(single) == 1 else 'their'} "
                    f"test AUC is undefined ('-').",
                    "check the label columns and the manifest's valid_end / test_end.",
                )
            )
