"""Rich renderings of library results; the CLI prints these, the library never prints."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from farmcli.data.schema import ACTIVITY_LEVELS, TASKS
from farmcli.metric_names import KINDS

# task names (and the six tasks' mean) short enough for 21 numeric columns
SHORT = dict(
    click="click", effective_view="effv", long_view="longv", like="like", comment="cmt", gift="gift", mean="mean"
)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def _table(title: str, columns: Iterable[str], text: int = 1) -> Table:
    """A table whose first ``text`` columns are names, the others numbers (right-aligned)."""
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i < text else "right")
    return t


def label_rates(
    live: dict[str, tuple[float, float | None]],
    video: dict[str, float],
    live_title: str = "live label rates",
    video_title: str = "video label rates",
) -> list[Table]:
    """Two tables: live rates of impressions and of clicks (task -> (of impressions, of clicks)), video rates."""
    rates = _table(live_title, ("task", "of impressions", "of clicks"))
    for task, (of_impressions, of_clicks) in live.items():
        rates.add_row(task, _pct(of_impressions), _pct(of_clicks) if task != "click" else "")
    vrates = _table(video_title, video, text=0)
    vrates.add_row(*(_pct(v) for v in video.values()))
    return [rates, vrates]


def validation(report) -> Group | Table:
    t = _table(f"{report.root.name}: {'valid' if report.ok else 'INVALID'}", ("table", "rows"))
    for table, n in report.rows.items():
        t.add_row(table, f"{n:,}")
    return t


def inspection(info: dict) -> Group:
    splits = list(info["rows"]["live"])
    rows = _table(f"{info['name'] or info['dataset']}: rows per split", ("table", *splits))
    for table, r in info["rows"].items():
        rows.add_row(table, *(f"{r[s]:,}" for s in splits))
    parts = [rows]
    parts += label_rates(
        {t: (r["of_impressions"], r["of_clicks"]) for t, r in info["live_label_rates"].items()},
        info["video_label_rates"],
        live_title=f"live label rates (video:live rows = {info['video_live_ratio']:.2f})",
        video_title="video label rates (of exposures)",
    )

    u = info["users"]
    users = _table(f"users: {u['total']:,} (activity {u['activity_from']})", ACTIVITY_LEVELS, text=0)
    users.add_row(*(f"{u[lvl]:,}" for lvl in ACTIVITY_LEVELS))
    parts.append(users)

    h = info["history"]
    hist = _table(
        f"history length at sample time (capped at L={h['history_len']}; {h['users_sampled']:,} users sampled)",
        ("level", "domain", "samples", "mean", "p10", "p50", "p90", "empty"),
        text=2,
    )
    for lvl, domains in h["levels"].items():
        for dom, s in domains.items():
            quantiles = (f"{s[p]:.0f}" for p in ("p10", "p50", "p90"))
            hist.add_row(lvl, dom, f"{s['samples']:,}", f"{s['mean']:.1f}", *quantiles, _pct(s["empty"]))
    parts.append(hist)

    if info.get("oracle"):
        o = info["oracle"]
        orc = _table(
            f"oracle (p_* columns) on the {o['split']} split, {o['samples']:,} samples", ("task", "AUC", "UAUC", "GAUC")
        )
        for task, r in o["tasks"].items():
            orc.add_row(task, _pct(r["auc"]), _pct(r["uauc"]), _pct(r["gauc"]))
        parts.append(orc)
    return Group(*parts)


def store(summary: dict) -> Table:
    """A two-column view of a nested summary dict (sample store facts)."""
    t = Table(title=f"sample store {summary.get('path', '')}")
    t.add_column("key")
    t.add_column("value", overflow="fold")

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            t.add_row(prefix, f"{value:,}" if isinstance(value, int) else str(value))

    add("", {k: v for k, v in summary.items() if k != "path"})
    return t


def eval_table(tables: dict, title: str = "", width: int = 200):
    """Rows = groups (model, then oracle); columns = six tasks x AUC / UAUC / GAUC; values already in percent.

    Narrower than 140 columns: one table per metric. A UAUC or GAUC from fewer than ``MIN_USERS`` users carries a
    dagger, explained under the table(s).
    """
    from farmcli.evaluation import FEW_USERS_MARK, MIN_USERS, few_users

    rows = [
        (g if src == "model" else f"oracle:{g}", per_task, src)
        for src in ("model", "oracle")
        for g, per_task in (tables.get(src) or {}).items()
    ]

    def cell(r: dict, k: str) -> str:
        return "-" if r[k] is None else f"{r[k]:.2f}{FEW_USERS_MARK if few_users(r, k) else ''}"

    def make(title: str, kinds: tuple[str, ...]) -> Table:
        cells = [(name, [cell(per_task[task], k) for task in TASKS for k in kinds]) for name, per_task, _ in rows]
        return _by_task(title, "group", TASKS, kinds, cells, ["dim" if src == "oracle" else None for *_, src in rows])

    parts: list = (
        [make(title, KINDS)]
        if width >= 140
        else [make(f"{title} - {k.upper()}" if title else k.upper(), (k,)) for k in KINDS]
    )
    if any(few_users(per_task[task], k) for _, per_task, _ in rows for task in TASKS for k in KINDS):
        parts.append(Text(f"{FEW_USERS_MARK} from fewer than {MIN_USERS} users (see n_users in the JSON and CSV)"))
    return parts[0] if len(parts) == 1 else Group(*parts)


def ablation_table(t1: dict, width: int = 200):
    """Table 1 shape: one row per variant (+ Improve, Oracle); narrow terminals get one table per metric."""
    from farmcli.analysis.tables import COLUMNS, fmt

    def make(kinds: tuple[str, ...]) -> Table:
        title = f"Table 1 shape ({', '.join(k.upper() for k in kinds)}, percent, mean ± std over seeds)"
        cells = [
            (r["row"], [fmt(r["cells"].get(f"{task}/{k}"), r["row"] == "Improve") for task in COLUMNS for k in kinds])
            for r in t1["rows"]
        ]
        return _by_task(title, "", COLUMNS, kinds, cells)

    return make(KINDS) if width >= 300 else Group(*(make((k,)) for k in KINDS))


def _by_task(title: str, first: str, tasks, kinds, rows: list, styles: list | None = None) -> Table:
    """A row per (name, cells); a column per task and kind (the kind under the task where there are several)."""
    t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    t.add_column(first)
    for task in tasks:
        for k in kinds:
            t.add_column(f"{SHORT[task]}\n{k.upper()}" if len(kinds) > 1 else SHORT[task], justify="right")
    for i, (name, cells) in enumerate(rows):
        t.add_row(name, *cells, style=styles[i] if styles else None)
    return t


def gain_table(t4: dict) -> Table:
    from farmcli.analysis.tables import COLUMNS, fmt

    t = Table(title="Table 4 shape: AUC gain of FARM over the base (points)", box=box.SIMPLE_HEAD)
    t.add_column("group")
    for task in COLUMNS:
        t.add_column(SHORT[task], justify="right")
    for row in t4["rows"]:
        t.add_row(row["group"], *(fmt(row["cells"].get(task), signed=True) for task in COLUMNS))
    return t


def kuailive_import(rep: dict) -> Group:
    """The tables of a KuaiLive-M3 import report (ImportReport.to_dict())."""
    rows = _table(f"KuaiLive-M3 import -> {rep['out']}", ("raw table", "file", "rows read", "rows dropped"), text=2)
    for name, n in rep["rows_read"].items():
        dropped = rep["rows_dropped"].get(name, {})
        rows.add_row(name, escape(Path(rep["files"][name]).name), f"{n:,}", f"{sum(dropped.values()):,}")
    why = _table("rows dropped, and why", ("raw table", "reason", "rows"), text=2)
    for name, dropped in rep["rows_dropped"].items():
        for reason, n in dropped.items():
            if n:
                why.add_row(name, escape(reason), f"{n:,}")
    parts = [rows, why] if why.row_count else [rows]

    sp = rep["splits"]
    windows = ("warmup", "train", "valid", "test")
    out = _table("written", ("table", "rows", *windows))
    for table, n in rep["rows_written"].items():
        per = sp.get(f"{table}_rows", {})
        out.add_row(f"{table}.parquet", f"{n:,}", *(f"{per[k]:,}" if k in per else "" for k in windows))
    days = _table(
        f"days ({sp['day_tz']}): {sp['first_day']} to {sp['last_day']}",
        ("day", "split", "live rows", "live clicks", "video rows"),
        text=2,
    )
    for d in rep["days"]:
        days.add_row(d["day"], d["split"], f"{d['live_rows']:,}", f"{d['live_clicks']:,}", f"{d['video_rows']:,}")
    parts += [out, days]

    lr = rep["label_rates"]
    parts += label_rates(
        {t: (r, lr["live_of_clicks"].get(t)) for t, r in lr["live_of_impressions"].items()},
        lr["video"],
        video_title="video label rates (of plays)",
    )

    cov = rep["coverage"]
    covt = _table(
        "derived fields: share of rows with a known value",
        ("live tag", "live cluster", "live page (clicks)", "video tag", "video page"),
        text=0,
    )
    known = ("live_tag", "live_cluster", "live_clicked_page", "video_tag", "video_page")
    covt.add_row(*(_pct(cov[f"{k}_known"]) for k in known))

    notes = Table(title="notes", show_header=False)
    notes.add_column("")
    for line in rep["not_available"]:
        notes.add_row(escape(f"not available: {line}"))
    for name, d in rep["adjusted"].items():
        for what, n in d.items():
            if n:
                notes.add_row(escape(f"adjusted: {name}: {what}: {n:,}"))
    if rep["missing_optional"]:
        notes.add_row(escape(f"optional files not found: {', '.join(rep['missing_optional'])}"))
    likes = rep["value_counts"].get("photo_play.like_status_type", {})
    notes.add_row(escape(f"like_status_type counts: {likes} (like = {rep['options']['like_codes']})"))
    return Group(*parts, covt, notes)
