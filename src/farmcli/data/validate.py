"""Check a dataset against DATA_FORMAT.md without loading whole tables (lazy polars scans, one pass per table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

from farmcli.data.dataset import (
    Manifest,
    in_window,
    manifest_problems,
    nested_problem,
    not_a_dataset_dir,
    not_file_or_folder,
    odd_problem,
    path_kind,
    scan_files,
    split_windows,
    table_files,
    table_path,
    unread_entries,
)
from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    LIVE_COLUMNS,
    LIVE_FLAGS,
    LIVE_TRUTH_COLUMNS,
    REQUIRED_TABLES,
    SPLITS,
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

    def add(self, where: str, message: str, fix: str, *, warning: bool = False, training_only: bool = False) -> None:
        (self.warnings if warning else self.errors).append(Problem(where, message, fix, training_only))

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


_DOMAIN: dict[str, tuple[Callable[[pl.Expr], pl.Expr], str, str]] = {
    "id": (lambda c: c < 0, "{k} negative id(s); ids must be >= 0.", "remap ids to non-negative integers."),
    "nonneg": (lambda c: c < 0, "{k} negative value(s); must be >= 0.", "clip or fix them."),
    "flag": (
        lambda c: ~c.is_in([0, 1]),
        "{k} value(s) outside {{0, 1}}; flags are binary.",
        "binarise it, e.g. (`{}` > 0).",
    ),
    "prob": (
        lambda c: c.is_nan() | (c < 0) | (c > 1),
        "{k} value(s) outside [0, 1] or NaN.",
        "write probabilities in [0, 1].",
    ),
    "activity": (
        lambda c: ~c.cast(pl.String).is_in(list(ACTIVITY_LEVELS)),
        "{k} value(s) outside {{low, mid, high}}.",
        "use one of low, mid, high.",
    ),
}
"""Column.rule -> (its rows that break it, message, fix ("{}": the column's name))."""


@dataclass(frozen=True)
class _Rule:
    """A rule on a table's values; ``count`` counts the rows that break it (every rule in one streaming pass)."""

    count: pl.Expr
    message: str  # "{k}": that count
    fix: str
    column: str = ""  # the column it names, or "" for the table
    warning: bool = False


def _table_files(path: Path, table: str, required: bool, report: Report) -> list[Path]:
    """The table's parquet files; none is an error where it is required or is a folder without shards, and so is
    anything there that cannot be read whole: not a file or a folder, shards in subfolders, a shard that is not a
    file. An empty list where there is such an error."""
    files = table_files(path)
    fix = f"write {table}.parquet (a file or a folder of parquet shards), see DATA_FORMAT.md."
    if not_file_or_folder(path):  # a FIFO, a device, a link to /dev/null, a broken link: never opened
        said = f"exists but is {path_kind(path)}, not a parquet file or a folder of parquet shards."
        report.add(str(path), said, f"replace it: {fix}")
        return []
    nested, odd = unread_entries(path)
    if nested:
        report.add(str(path), *nested_problem(path, nested))
    if odd:
        report.add(str(path), *odd_problem(odd))
    if nested or odd:
        return []
    if not files and (required or path.exists()):
        what = "has no *.parquet shards" if path.is_dir() else "is missing"
        report.add(str(path), f"{'required table' if required else 'table'} {what}.", fix)
    return files


def _shard_schemas(files: list[Path], report: Report) -> dict[Path, dict[str, pl.DataType]] | None:
    """Each shard's schema from its footer (cheap, and names the shard that differs); None if one is unreadable."""
    schemas = {}
    for f in files:
        try:
            schemas[f] = pl.read_parquet_schema(f)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's problem to fix
            report.add(
                str(f),
                f"cannot be read as parquet ({type(e).__name__}: {e}).",
                "rewrite the file with a parquet writer.",
            )
    return schemas if len(schemas) == len(files) else None


def _column_present(path: Path, table: str, col: Column, schemas: dict, report: Report) -> bool:
    """In every shard: a required column missing, or an optional one in some shards only, is an error."""
    missing = [f for f, s in schemas.items() if col.name not in s]
    if not missing:
        return True
    if col.name in {c.name for c in TABLES[table]}:
        where = str(missing[0]) if len(schemas) > 1 else str(path)
        more = f" (and {len(missing) - 1} more shard(s))" if len(missing) > 1 else ""
        fix = f"add it as {col.dtype} (see DATA_FORMAT.md, {table}.parquet)."
        report.add(f"{where}:{col.name}", f"required column '{col.name}' is missing{more}.", fix)
    elif len(missing) < len(schemas):
        report.add(f"{path}:{col.name}", "present in some shards only.", "write the same columns in every shard.")
    return False


def _column_type(path: Path, col: Column, schemas: dict, report: Report) -> bool:
    """The format's type in every shard: another integer width is a warning (read with a cast); another kind, or
    shards that disagree, an error."""
    for f, s in schemas.items():
        ok, exact = _type_ok(s[col.name], col)
        said = f"has type {s[col.name]}, the format says {col.dtype}"
        if not ok:
            report.add(f"{f}:{col.name}", f"{said}.", _fix(s[col.name], col))
            return False
        if not exact:
            fix = _INT_FIX.format(dtype=col.dtype, col=col.name)
            report.add(f"{f}:{col.name}", f"{said}; it is read with a cast.", fix, warning=True)
            break
    kinds = sorted({str(s[col.name]) for s in schemas.values()})
    if len(kinds) > 1:
        said = f"shards disagree on its type ({', '.join(kinds)})."
        report.add(f"{path}:{col.name}", said, f"write it as {col.dtype} in every shard.")
    return len(kinds) == 1


def _usable_columns(path: Path, table: str, schemas: dict, report: Report) -> list[Column] | None:
    """The format's columns present in every shard, or None where one of them has a type that cannot be read."""
    usable, bad_type = [], False
    for col in TABLES[table] + (LIVE_TRUTH_COLUMNS if table == "live" else ()):
        if _column_present(path, table, col, schemas, report):
            if _column_type(path, col, schemas, report):
                usable.append(col)
            else:
                bad_type = True
    return None if bad_type else usable


def _has_rows(path: Path, table: str, rows: int, report: Report) -> bool:
    """The table's row count, recorded; an empty table is an error."""
    report.rows[table] = rows
    if rows == 0:
        report.add(str(path), "table is empty.", f"write at least one {table} row.")
    return rows > 0


def _value_rules(col: Column, actual: PolarsDataType) -> list[_Rule]:
    """The rules on one column's values, in the order they are reported: no nulls; within the range of the type it
    is read as (another integer width than the format's); the column's rule of DATA_FORMAT.md (_DOMAIN)."""
    c = pl.col(col.name)
    rules = [_Rule(c.is_null().sum(), "{k} null value(s).", "fill or drop the rows with nulls.", col.name)]
    if col.dtype.is_integer() and actual != col.dtype and col.rule != "flag":
        lo, hi = _INT_RANGE[col.dtype]
        rules.append(
            _Rule(
                ((c > hi) | (c < lo) if actual.is_signed_integer() else c > hi).sum(),
                f"{{k}} value(s) outside the range of {col.dtype} ({lo:,} to {hi:,}), the type it is read as.",
                f"remap them into that range and write the column as {col.dtype}.",
                col.name,
            )
        )
    if col.rule in _DOMAIN:
        bad, message, fix = _DOMAIN[col.rule]
        rules.append(_Rule(bad(c).sum(), message, fix.format(col.name), col.name))
    return rules


def _funnel_rules(table: str, names: set[str]) -> list[_Rule]:
    """A label without the click (or the effective view) it implies: a warning, as real logs break the funnel."""
    if table != "live" or not all(c.name in names for c in LIVE_COLUMNS):
        return []
    fix = "none needed (real logs break the funnel); check the export if unexpected."
    pairs = [(f, "click") for f in LIVE_FLAGS] + [("long_view", "effective_view")]
    bad = lambda f, g: ((pl.col(f) == 1) & (pl.col(g) == 0)).sum()  # noqa: E731
    return [_Rule(bad(f, g), f"funnel: {{k}} row(s) with {f} without {g}.", fix, warning=True) for f, g in pairs]


def _duplicate_rules(table: str, names: set[str]) -> list[_Rule]:
    """A repeated impression (a warning: it may be real) or a repeated user (an error)."""
    if table == "live" and {"user_id", "author_id", "ts"} <= names:
        repeated = pl.len() - pl.struct("user_id", "author_id", "ts").n_unique()
        said = "{k} row(s) repeat the (user_id, author_id, ts) of another row."
        fix = "drop duplicated impressions unless they are real (polars: `.unique(['user_id', 'author_id', 'ts'])`)."
        return [_Rule(repeated, said, fix, warning=True)]
    if table == "users" and "user_id" in names:
        repeated = pl.len() - pl.col("user_id").n_unique()
        return [_Rule(repeated, "{k} duplicate user id(s).", "keep one row per user.", "user_id")]
    return []


def _check_values(
    path: Path, table: str, files: list[Path], usable: list[Column], schema: dict, report: Report
) -> None:
    """Every value rule of the usable columns, counted in one streaming pass; each rule broken, reported."""
    names = [c.name for c in usable]
    rules = [r for col in usable for r in _value_rules(col, schema[col.name])]
    rules += _funnel_rules(table, set(names)) + _duplicate_rules(table, set(names))
    counts = scan_files(files, names).select(pl.len(), *(r.count.alias(f"r{i}") for i, r in enumerate(rules)))
    rows, *broken = counts.collect(engine="streaming").row(0)
    if not _has_rows(path, table, rows, report):
        return
    for rule, k in zip(rules, broken):
        if k:
            where = f"{path}:{rule.column}" if rule.column else str(path)
            report.add(where, rule.message.format(k=f"{k:,}"), rule.fix, warning=rule.warning)


def _check_table(root: Path, table: str, report: Report, required: bool) -> None:
    """One table: its files, each column's presence and type, then its values."""
    path = table_path(root, table)
    files = _table_files(path, table, required, report)
    schemas = _shard_schemas(files, report) if files else None
    if schemas is None:
        return
    usable = _usable_columns(path, table, schemas, report)
    if usable is None:  # still count the rows, so that an empty table is reported beside the type problems
        _has_rows(path, table, sum(scan_files([f]).select(pl.len()).collect().item() for f in files), report)
    else:
        _check_values(path, table, files, usable, schemas[files[0]], report)


def validate(root: str | Path) -> Report:
    """Every problem of a dataset directory; errors make it unusable, warnings do not."""
    root = Path(root)
    report = Report(root)
    if not root.is_dir():
        report.add(str(root), *not_a_dataset_dir(root))
        return report
    for line in manifest_problems(root / "manifest.json"):
        where, _, rest = line.partition(": ")
        report.add(where, rest, "see DATA_FORMAT.md, 'manifest.json'.")
    for table in TABLES:
        _check_table(root, table, report, required=table in REQUIRED_TABLES)
    if report.ok:
        _check_windows(root, report)
    return report


DAY_MS = 86_400_000
UNIT_PROBE_MS = 366 * DAY_MS
"""Timestamps are checked for a wrong unit against [train_end - this, test_end): a year before the windows."""
SECONDS_BELOW = 10**11
"""Epoch ms below this are before 1973-03-03: manifest boundaries all below it are most likely seconds."""
MICROSECONDS_FROM = 10**14
"""Epoch ms from this on are after the year 5138: manifest boundaries all above it are most likely microseconds."""
BOUNDARIES = ("train_start", "train_end", "valid_end", "test_end")


def _when(ms: int) -> str:
    """Epoch ms as a UTC date for messages (the number itself where no date has it)."""
    try:
        return f"{ms} ({datetime.fromtimestamp(ms / 1000, tz=timezone.utc):%Y-%m-%d %H:%M} UTC)"
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _time_stats(files: list[Path], m: Manifest, labels: bool) -> dict:
    """One streaming pass: rows, ts range, rows per window, rows before train_start and past test_end, rows that a
    unit change of the ts (x1000, /1000) or of the manifest's boundaries would bring near the windows and, with
    ``labels``, positives per task per window."""
    ts = pl.col("ts")
    exprs = [pl.len().alias("rows"), ts.min().alias("ts_min"), ts.max().alias("ts_max")]
    conds = {split: in_window(ts, *window) for split, window in split_windows(m).items()}
    exprs += [cond.sum().alias(split) for split, cond in conds.items()]
    exprs.append((ts >= m.test_end).sum().alias("after"))
    exprs.append((ts < m.train_start).sum().alias("before") if m.train_start is not None else pl.lit(0).alias("before"))
    lo, hi = m.train_end - UNIT_PROBE_MS, m.test_end
    t = ts.cast(pl.Float64)
    for name, scaled in (("raw", t), ("seconds", t * 1000), ("microseconds", t / 1000)):
        exprs.append(((scaled >= lo) & (scaled < hi)).sum().alias(f"unit:{name}"))
    for name, k in (("seconds", 1000.0), ("microseconds", 1e-3)):  # the boundaries in that unit, the ts in ms
        exprs.append(((t >= m.train_end * k - UNIT_PROBE_MS) & (t < m.test_end * k)).sum().alias(f"manifest:{name}"))
    if labels:
        exprs += [
            (conds[split] & (pl.col(task) == 1)).sum().alias(f"{split}:{task}") for split in SPLITS for task in TASKS
        ]
    columns = ["ts", *TASKS] if labels else ["ts"]
    return scan_files(files, columns).select(exprs).collect(engine="streaming").row(0, named=True)


def _check_manifest_unit(root: Path, live: dict, m: Manifest, report: Report) -> bool:
    """Boundaries in seconds (or microseconds) where the ts are in ms: an error naming the manifest; True when found.
    Of the ts column and the boundaries, the one whose values are no plausible epoch ms is in another unit
    (:func:`_check_units` takes the other case)."""
    if live["unit:raw"]:
        return False
    bounds = {k: getattr(m, k) for k in BOUNDARIES if getattr(m, k) is not None}
    for unit, looks, how in (
        ("seconds", max(bounds.values()) < SECONDS_BELOW, "multiply each by 1000"),
        ("microseconds", min(bounds.values()) >= MICROSECONDS_FROM, "divide each by 1000"),
    ):
        if looks and live[f"manifest:{unit}"]:
            listed = ", ".join(f"{k} {v}" for k, v in bounds.items())
            report.add(
                str(root / "manifest.json"),
                f"the split boundaries look like {unit}, not milliseconds ({listed}): read as ms, test_end is "
                f"{_when(m.test_end)}, while live.parquet's ts column (in ms) runs from {_when(live['ts_min'])} "
                f"to {_when(live['ts_max'])}, about 1000x {'larger' if unit == 'seconds' else 'smaller'}. "
                f"Read as {unit}, the boundaries cover the ts column; the ts column is not the problem.",
                f"write {', '.join(bounds)} in epoch milliseconds, as time_unit 'ms' says ({how}).",
            )
            return True
    return False


def _check_units(where: str, stats: dict, m: Manifest, report: Report) -> bool:
    """Timestamps in seconds (or microseconds) where the manifest says ms: an error; True when found."""
    if stats["unit:raw"]:
        return False
    for unit, fix in (("seconds", "pl.col('ts') * 1000"), ("microseconds", "pl.col('ts') // 1000")):
        if stats[f"unit:{unit}"]:
            report.add(
                f"{where}:ts",
                f"the timestamps look like {unit}, not milliseconds: they run from {_when(stats['ts_min'])} "
                f"to {_when(stats['ts_max'])} read as ms, while the manifest's windows end at test_end "
                f"{_when(m.test_end)}; read as {unit}, they fall inside them.",
                f"write epoch milliseconds, as the manifest's time_unit 'ms' says (polars: `{fix}`).",
            )
            return True
    return False


def _window_said(lo: int | None, hi: int) -> str:
    return f"[{_when(lo) if lo is not None else '-inf'}, {_when(hi)})"


def _check_any_window(where: str, live: dict, m: Manifest, report: Report) -> bool:
    """No live row in any split window: nothing can be trained, evaluated or scored (an error); True when so."""
    if any(live[split] for split in SPLITS):
        return False
    if live["after"] == live["rows"]:
        lead = f"every live row ({live['rows']:,}) is at or after test_end {_when(m.test_end)}"
    else:
        parts = [
            f"{live['before']:,} before train_start" if live["before"] else "",
            f"{live['after']:,} at or after test_end" if live["after"] else "",
        ]
        lead = f"of the {live['rows']:,} live rows, {' and '.join(p for p in parts if p)}"
    windows = "; ".join(f"{split} {_window_said(*w)}" for split, w in split_windows(m).items())
    report.add(
        where,
        f"no live row falls in any split window: {lead}, so none is a sample: nothing can be trained, "
        f"evaluated or scored. The ts column runs from {_when(live['ts_min'])} to {_when(live['ts_max'])}; the "
        f"windows are {windows}.",
        "move the manifest's boundaries to cover the ts column (Unix ms), or check the ts column.",
    )
    return True


def _check_windows(root: Path, report: Report) -> None:
    """Files can be valid yet unusable: timestamps in another unit, no row in a window, nothing to learn.
    Errors where nothing can be trained (or nothing read at all), warnings where a part is missing."""
    m = Manifest.load(root / "manifest.json")
    live_path, video_path = str(table_path(root, "live")), str(table_path(root, "video"))
    live = _time_stats(table_files(table_path(root, "live")), m, labels=True)
    video = _time_stats(table_files(table_path(root, "video")), m, labels=False)
    if _check_manifest_unit(root, live, m, report):
        return
    if _check_units(live_path, live, m, report) | _check_units(video_path, video, m, report):
        return
    if _check_any_window(live_path, live, m, report):
        return
    span = f"the ts column runs from {_when(live['ts_min'])} to {_when(live['ts_max'])}"
    for split, (lo, hi) in split_windows(m).items():
        if live[split] or (split == "valid" and lo == hi):
            continue
        where = f"no live impression in the {split} window {_window_said(lo, hi)}"
        if split == "train":
            fix = "move the manifest's train_start / train_end to cover the ts column (Unix ms), or add rows."
            report.add(live_path, f"{where}, so there is nothing to train on ({span}).", fix, training_only=True)
        else:
            fix = "check the manifest's boundaries against the ts column (Unix ms)."
            report.add(live_path, f"{where}.", fix, warning=True)
    if live["after"]:
        report.add(
            live_path,
            f"{live['after']:,} live row(s) at or after test_end ({m.test_end}); they are never used.",
            "move test_end, or drop those rows, if that is not intended.",
            warning=True,
        )
    if video["after"] == video["rows"]:
        report.add(
            video_path,
            f"every video row ({video['rows']:,}) is at or after test_end {_when(m.test_end)}: none is "
            f"ever used, so every video history is empty.",
            "check video.parquet's ts column against the manifest's boundaries (Unix ms).",
            warning=True,
        )
    _check_labels(live_path, live, report)


def _check_labels(where: str, live: dict, report: Report) -> None:
    """Nothing to learn in the training window is an error; a task with one class only, a warning (in the validation
    window too, where an AUC monitor then has nothing to follow: `farm train` refuses it)."""
    for split in SPLITS:
        n = live[split]
        # tasks whose label has one value in every row of the split -> that value
        single = {t: int(live[f"{split}:{t}"] == n) for t in TASKS if live[f"{split}:{t}"] in (0, n)} if n else {}
        if not single:
            continue
        listed = ", ".join(f"{t} all {v}" for t, v in single.items())
        every = len(single) == len(TASKS)
        it, its = ("it", "its") if len(single) == 1 else ("them", "their")
        if split == "train":
            fix = "check live.parquet's label columns (0/1 per impression) and the manifest's train window."
            if every:
                said = f"every label is one class in the training window ({n:,} rows: {listed}), so there is nothing to learn."
                report.add(where, said, fix, training_only=True)
            elif single.get("click") == 0:
                said = (
                    f"no click in the training window ({n:,} impressions): click, the label every other one builds "
                    f"on, has nothing to learn from."
                )
                report.add(where, said, fix, training_only=True)
            else:
                said = f"one class only in the training window for {listed}: the model learns nothing for {it}."
                report.add(where, said, fix, warning=True)
        elif split == "valid" and every:
            report.add(
                where,
                f"every label is one class in the validation window ({n:,} rows: {listed}): every validation AUC is "
                f"undefined, so early stopping on an AUC (fit.monitor, by default val/auc_mean) has nothing to "
                f"follow, and `farm train` and `farm tune` refuse such a monitor.",
                "check the label columns and the manifest's train_end / valid_end, or monitor a loss "
                "(--fit.monitor val/loss).",
                warning=True,
            )
        elif split == "valid":
            report.add(
                where,
                f"one class only in the validation window for {listed}: {its} validation AUC is undefined ('-'), so "
                f"`farm train` refuses a fit.monitor on {it} (e.g. val/auc_{next(iter(single))}).",
                "check the label columns and the manifest's train_end / valid_end.",
                warning=True,
            )
        else:
            report.add(
                where,
                f"one class only in the test window for {listed}: {its} test AUC is undefined ('-').",
                "check the label columns and the manifest's valid_end / test_end.",
                warning=True,
            )
