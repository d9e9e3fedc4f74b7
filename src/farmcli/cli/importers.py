"""`farm data import ...`: public datasets -> farm-events/1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Group
from rich.markup import escape
from rich.table import Table

from farmcli import render
from farmcli.cli._common import given_path, progress_bar
from farmcli.cli.app import console, data_app, err_console, user_errors
from farmcli.errors import UserError

import_app = typer.Typer(help="Import a public dataset into the farm-events/1 format.", no_args_is_help=True)
data_app.add_typer(import_app, name="import")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise UserError(f"{flag} expects comma-separated integers, got '{text}'. Example: {flag} 1") from None
    if not values:
        raise UserError(f"{flag} needs at least one integer, got '{text}'. Example: {flag} 1")
    return values


def _cuts(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--activity-cuts expects two quantiles LOW,HIGH, got '{text}'. Example: --activity-cuts 0.5,0.85"
        ) from None
    return lo, hi


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def render_import(rep: dict) -> Group:
    """Rich tables of an import report (ImportReport.to_dict())."""
    parts = []
    rows = Table(title=f"KuaiLive-M3 import -> {rep['out']}")
    for c in ("raw table", "file", "rows read", "rows dropped"):
        rows.add_column(c, justify="right" if c.startswith("rows") else "left")
    for name, n in rep["rows_read"].items():
        dropped = rep["rows_dropped"].get(name, {})
        rows.add_row(name, escape(Path(rep["files"][name]).name), f"{n:,}", f"{sum(dropped.values()):,}")
    parts.append(rows)

    why = Table(title="rows dropped, and why")
    for c in ("raw table", "reason", "rows"):
        why.add_column(c, justify="right" if c == "rows" else "left")
    for name, dropped in rep["rows_dropped"].items():
        for reason, n in dropped.items():
            if n:
                why.add_row(name, escape(reason), f"{n:,}")
    if why.row_count:
        parts.append(why)

    out = Table(title="written")
    out.add_column("table")
    out.add_column("rows", justify="right")
    sp = rep["splits"]
    for k in ("warmup", "train", "valid", "test"):
        out.add_column(k, justify="right")
    for table, n in rep["rows_written"].items():
        per = sp.get(f"{table}_rows", {})
        out.add_row(
            f"{table}.parquet",
            f"{n:,}",
            *(f"{per[k]:,}" if k in per else "" for k in ("warmup", "train", "valid", "test")),
        )
    parts.append(out)

    days = Table(title=f"days ({sp['day_tz']}): {sp['first_day']} to {sp['last_day']}")
    for c in ("day", "split", "live rows", "live clicks", "video rows"):
        days.add_column(c, justify="left" if c in ("day", "split") else "right")
    for d in rep["days"]:
        days.add_row(d["day"], d["split"], f"{d['live_rows']:,}", f"{d['live_clicks']:,}", f"{d['video_rows']:,}")
    parts.append(days)

    lr = rep["label_rates"]
    parts += render.label_rates(
        {t: (r, lr["live_of_clicks"].get(t)) for t, r in lr["live_of_impressions"].items()},
        lr["video"],
        video_title="video label rates (of plays)",
    )

    cov = rep["coverage"]
    covt = Table(title="derived fields: share of rows with a known value")
    for c in ("live tag", "live cluster", "live page (clicks)", "video tag", "video page"):
        covt.add_column(c, justify="right")
    covt.add_row(
        _pct(cov["live_tag_known"]),
        _pct(cov["live_cluster_known"]),
        _pct(cov["live_clicked_page_known"]),
        _pct(cov["video_tag_known"]),
        _pct(cov["video_page_known"]),
    )
    parts.append(covt)

    adj = [f"{name}: {what}: {n:,}" for name, d in rep["adjusted"].items() for what, n in d.items() if n]
    notes = Table(title="notes", show_header=False)
    notes.add_column("")
    for line in rep["not_available"]:
        notes.add_row(escape(f"not available: {line}"))
    for line in adj:
        notes.add_row(escape(f"adjusted: {line}"))
    if rep["missing_optional"]:
        notes.add_row(escape(f"optional files not found: {', '.join(rep['missing_optional'])}"))
    likes = rep["value_counts"].get("photo_play.like_status_type", {})
    notes.add_row(escape(f"like_status_type counts: {likes} (like = {rep['options']['like_codes']})"))
    parts.append(notes)
    return Group(*parts)


@import_app.command("kuailive-m3")
@user_errors
def kuailive_m3(
    raw_arg: str = typer.Argument(
        ...,
        metavar="RAW_DIR",
        help="Folder of the KuaiLive-M3 download (live_interaction.csv, live_show.parquet, photo_play.parquet, ...).",
    ),
    out_arg: str = typer.Option(
        ..., "--out", "-o", help="Dataset directory to write (must not exist unless --overwrite)."
    ),
    effective_view_ms: int = typer.Option(3000, help="effective_view = live play time >= this many ms."),
    long_view_ms: int = typer.Option(60000, help="long_view = live play time >= this many ms."),
    like_codes: str = typer.Option(
        "1",
        help="like_status_type values that mean a like (comma-separated; the codes "
        "are undocumented upstream, 1 = new like is assumed).",
    ),
    valid_days: int = typer.Option(1, help="Days before the test days that form the validation split (0 = none)."),
    test_days: int = typer.Option(1, help="Last days of the live logs that form the test split."),
    warmup_days: int = typer.Option(0, help="First days kept as history only (never samples)."),
    day_tz: str = typer.Option("Asia/Shanghai", help="Time zone of the day boundaries of the splits."),
    naive_tz: str = typer.Option(
        "UTC", help="Time zone of date-times that carry none (the official preprocessing reads them as UTC)."
    ),
    live_page: str = typer.Option(
        "none",
        help="'none' (default): page 0 on every live row. 'source': live page = "
        "live_source_category; impressions have none, so it leaks the click "
        "label (the report warns).",
    ),
    clusters: int = typer.Option(64, help="k of the k-means over authors' live-room embeddings."),
    seed: int = typer.Option(0, help="Seed of the k-means."),
    activity_cuts: str = typer.Option(
        "0.5,0.85", help="Quantiles of live clicks in training that end the low and mid activity levels."
    ),
    rows_per_partition: int = typer.Option(10_000_000, help="Rows joined and sorted at a time (lower = less memory)."),
    overwrite: bool = typer.Option(False, help="Replace an existing dataset at --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the import report as JSON."),
) -> None:
    """Import the public KuaiLive-M3 dataset (Hugging Face imgkkk2004/KuaiLive-M3) as a farm-events/1 dataset.

    Writes live.parquet (sessions = clicks, impressions without a session = non-clicks), video.parquet
    (photo plays), users.parquet, manifest.json (day splits), pages.json, tags.json and import_report.json.
    See docs/IMPORT_KUAILIVE_M3.md for every derived field.

    Example: farm data import kuailive-m3 ~/data/KuaiLive-M3 --out data/klm3
    """
    raw_dir = given_path(raw_arg, "RAW_DIR", "farm data import kuailive-m3 ~/data/KuaiLive-M3 --out data/klm3")
    out = given_path(out_arg, "--out", "--out data/klm3")
    from farmcli.data.importers import KLM3Options, import_kuailive_m3

    opts = KLM3Options(
        effective_view_ms=effective_view_ms,
        long_view_ms=long_view_ms,
        like_codes=_ints(like_codes, "--like-codes"),
        valid_days=valid_days,
        test_days=test_days,
        warmup_days=warmup_days,
        day_tz=day_tz,
        naive_tz=naive_tz,
        live_page=live_page,
        clusters=clusters,
        seed=seed,
        activity_cuts=_cuts(activity_cuts),
        rows_per_partition=rows_per_partition,
    )
    with progress_bar() as bar:
        task = bar.add_task("importing", total=None)
        report = import_kuailive_m3(
            raw_dir,
            out,
            options=opts,
            overwrite=overwrite,
            on_progress=lambda step, done, total: bar.update(
                task, description=f"importing: {step}", completed=done, total=total
            ),
        )
    rep = report.to_dict()
    if as_json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    else:
        console.print(render_import(rep))
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    console.print(
        f"wrote {out} in {report.seconds:.1f} s; report saved to {out / 'import_report.json'}",
        soft_wrap=True,
        markup=False,
    )
