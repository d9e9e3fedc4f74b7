"""Rich renderings of library results; the CLI prints these, the library never prints."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table

from farmcli.data.schema import ACTIVITY_LEVELS
from farmcli.metric_names import KINDS

SHORT = {
    "click": "click",
    "effective_view": "effv",
    "long_view": "longv",
    "like": "like",
    "comment": "cmt",
    "gift": "gift",
    "mean": "mean",
}
"""Task names (and the six tasks' mean) short enough for 21 numeric columns."""


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def label_rates(
    live: dict[str, tuple[float, float | None]],
    video: dict[str, float],
    live_title: str = "live label rates",
    video_title: str = "video label rates",
) -> list[Table]:
    """Two tables: live rates of impressions and of clicks (task -> (of impressions, of clicks)), video rates."""
    rates = Table(title=live_title)
    rates.add_column("task")
    rates.add_column("of impressions", justify="right")
    rates.add_column("of clicks", justify="right")
    for task, (of_impressions, of_clicks) in live.items():
        rates.add_row(task, _pct(of_impressions), _pct(of_clicks) if task != "click" else "")
    vrates = Table(title=video_title)
    for f in video:
        vrates.add_column(f, justify="right")
    vrates.add_row(*(_pct(v) for v in video.values()))
    return [rates, vrates]


def validation(report) -> Group | Table:
    t = Table(title=f"{report.root.name}: {'valid' if report.ok else 'INVALID'}")
    t.add_column("table")
    t.add_column("rows", justify="right")
    for table, n in report.rows.items():
        t.add_row(table, f"{n:,}")
    return t


def inspection(info: dict) -> Group:
    parts = []
    rows = Table(title=f"{info['name'] or info['dataset']}: rows per split")
    rows.add_column("table")
    splits = list(info["rows"]["live"])
    for s in splits:
        rows.add_column(s, justify="right")
    for table, r in info["rows"].items():
        rows.add_row(table, *(f"{r[s]:,}" for s in splits))
    parts.append(rows)

    parts += label_rates(
        {t: (r["of_impressions"], r["of_clicks"]) for t, r in info["live_label_rates"].items()},
        info["video_label_rates"],
        live_title=f"live label rates (video:live rows = {info['video_live_ratio']:.2f})",
        video_title="video label rates (of exposures)",
    )

    u = info["users"]
    users = Table(title=f"users: {u['total']:,} (activity {u['activity_from']})")
    for lvl in ACTIVITY_LEVELS:
        users.add_column(lvl, justify="right")
    users.add_row(*(f"{u[lvl]:,}" for lvl in ACTIVITY_LEVELS))
    parts.append(users)

    h = info["history"]
    hist = Table(
        title=f"history length at sample time (capped at L={h['history_len']}; {h['users_sampled']:,} users sampled)"
    )
    for c in ("level", "domain", "samples", "mean", "p10", "p50", "p90", "empty"):
        hist.add_column(c, justify="left" if c in ("level", "domain") else "right")
    for lvl, domains in h["levels"].items():
        for dom, s in domains.items():
            hist.add_row(
                lvl,
                dom,
                f"{s['samples']:,}",
                f"{s['mean']:.1f}",
                f"{s['p10']:.0f}",
                f"{s['p50']:.0f}",
                f"{s['p90']:.0f}",
                _pct(s["empty"]),
            )
    parts.append(hist)

    if info.get("oracle"):
        o = info["oracle"]
        orc = Table(title=f"oracle (p_* columns) on the {o['split']} split, {o['samples']:,} samples")
        for c in ("task", "AUC", "UAUC", "GAUC"):
            orc.add_column(c, justify="left" if c == "task" else "right")
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

    On a terminal narrower than the 18-column table, one table per metric (AUC, UAUC, GAUC) instead. A UAUC or
    GAUC from fewer than ``MIN_USERS`` users carries a dagger, explained in a line under the table(s).
    """
    from rich.text import Text

    from farmcli.data.schema import TASKS
    from farmcli.evaluation import FEW_USERS_MARK, MIN_USERS, few_users

    rows = [
        (g if src == "model" else f"oracle:{g}", per_task, src)
        for src in ("model", "oracle")
        for g, per_task in (tables.get(src) or {}).items()
    ]

    def make(title: str, kinds: tuple[str, ...]) -> Table:
        cells = [(name, [_eval_cell(per_task[task], k) for task in TASKS for k in kinds]) for name, per_task, _ in rows]
        return _by_task(title, "group", TASKS, kinds, cells, ["dim" if src == "oracle" else None for *_, src in rows])

    parts: list = (
        [make(title, KINDS)]
        if width >= 140
        else [make(f"{title} - {k.upper()}" if title else k.upper(), (k,)) for k in KINDS]
    )
    if any(few_users(per_task[task], k) for _, per_task, _ in rows for task in TASKS for k in KINDS):
        parts.append(Text(f"{FEW_USERS_MARK} from fewer than {MIN_USERS} users (see n_users in the JSON and CSV)"))
    return parts[0] if len(parts) == 1 else Group(*parts)


def _eval_cell(r: dict, k: str) -> str:
    """One value in percent with two decimals; '-' where undefined; a dagger where it rests on few users."""
    from farmcli.evaluation import FEW_USERS_MARK, few_users

    if r[k] is None:
        return "-"
    return f"{r[k]:.2f}{FEW_USERS_MARK if few_users(r, k) else ''}"


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

    if width >= 300:
        return make(KINDS)
    return Group(*(make((k,)) for k in KINDS))


def _by_task(title: str, first: str, tasks, kinds, rows: list, styles: list | None = None) -> Table:
    """A row per (name, cells) of ``rows``; a column per task and kind (the kind under the task where there are
    several)."""
    from rich import box

    t = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    t.add_column(first)
    for task in tasks:
        for k in kinds:
            t.add_column(f"{SHORT[task]}\n{k.upper()}" if len(kinds) > 1 else SHORT[task], justify="right")
    for i, (name, cells) in enumerate(rows):
        t.add_row(name, *cells, style=styles[i] if styles else None)
    return t


def gain_table(t4: dict) -> Table:
    from rich import box

    from farmcli.analysis.tables import COLUMNS, fmt

    t = Table(title="Table 4 shape: AUC gain of FARM over the base (points)", box=box.SIMPLE_HEAD)
    t.add_column("group")
    for task in COLUMNS:
        t.add_column(SHORT[task], justify="right")
    for row in t4["rows"]:
        t.add_row(row["group"], *(fmt(row["cells"].get(task), signed=True) for task in COLUMNS))
    return t
