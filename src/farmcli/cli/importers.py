"""`farm data import ...`: public datasets -> farm-events/1."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from farmcli import render
from farmcli.cli._common import given_path, progress_bar, say, step_bar
from farmcli.cli.app import console, data_app, err_console, user_errors
from farmcli.errors import UserError

import_app = typer.Typer(help="Import a public dataset into the farm-events/1 format.", no_args_is_help=True)
data_app.add_typer(import_app, name="import")


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

    try:
        codes = tuple(int(v) for v in like_codes.replace(" ", "").split(",") if v != "")
    except ValueError:
        raise UserError(
            f"--like-codes expects comma-separated integers, got '{like_codes}'. Example: --like-codes 1"
        ) from None
    if not codes:
        raise UserError(f"--like-codes needs at least one integer, got '{like_codes}'. Example: --like-codes 1")
    try:
        lo, hi = (float(v) for v in activity_cuts.split(","))
    except ValueError:
        raise UserError(
            f"--activity-cuts expects two quantiles LOW,HIGH, got '{activity_cuts}'. Example: --activity-cuts 0.5,0.85"
        ) from None
    opts = KLM3Options(
        effective_view_ms=effective_view_ms,
        long_view_ms=long_view_ms,
        like_codes=codes,
        valid_days=valid_days,
        test_days=test_days,
        warmup_days=warmup_days,
        day_tz=day_tz,
        naive_tz=naive_tz,
        live_page=live_page,
        clusters=clusters,
        seed=seed,
        activity_cuts=(lo, hi),
        rows_per_partition=rows_per_partition,
    )
    with progress_bar() as bar:
        report = import_kuailive_m3(
            raw_dir, out, options=opts, overwrite=overwrite, on_progress=step_bar(bar, "importing")
        )
    rep = report.to_dict()
    if as_json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    else:
        console.print(render.kuailive_import(rep))
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    say(f"wrote {out} in {report.seconds:.1f} s; report saved to {out / 'import_report.json'}")
