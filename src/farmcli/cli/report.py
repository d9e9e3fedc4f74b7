"""`farm report`: the paper's analysis figures and tables (Fig. 3, Fig. 4, Table 3, training curves) for a run."""

from __future__ import annotations

from typing import Optional

import typer

from farmcli.cli._common import given_path, optional_path, progress_bar, say, step_progress
from farmcli.cli.app import app, user_errors
from farmcli.errors import UserError


@app.command("report")
@user_errors
def report_cmd(
    run: str = typer.Argument(..., help="A run directory of `farm train` (its best checkpoint is used)."),
    compare: Optional[str] = typer.Option(
        None, "--compare", help="A second run overlaid in Figure 3, e.g. the no-cpa variant."
    ),
    user: Optional[int] = typer.Option(
        None,
        "--user",
        help="Raw user_id for the Figure 4 heatmap (default: the low-active user with the longest live history).",
    ),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (default: RUN/report)."),
    overwrite: bool = typer.Option(
        False, help="Replace an earlier report of farm in --out (RUN/report, the default, is replaced anyway)."
    ),
    max_users: int = typer.Option(
        10_000, "--max-users", help="At most this many test users in Figure 3 (a seeded sample)."
    ),
    batch_size: int = typer.Option(4096, "--batch-size", help="Samples per model pass."),
    accelerator: str = typer.Option("cpu", help="cpu, gpu or auto."),
) -> None:
    """Write a run's figures and tables: Fig. 3 (cos(h_video, h_live) per user), Fig. 4 (cross-attention
    heatmap of one user), Table 3 (frequency gates per activity group) and the training curves, as PNG and CSV
    files linked from a Markdown page, report.md.

    Example: farm report farm-runs/farm-small-s0-RUN --compare farm-runs/no-cpa-small-s0-RUN
    """
    from farmcli.io import output_path

    # what needs no data (nor torch) first: a mistake here answers in a second
    run_dir = given_path(run, "RUN", "farm report farm-runs/RUN")
    compare_dir = optional_path(compare, "--compare", "--compare farm-runs/OTHER-RUN")
    output_path(out, "--out", "report")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}.")
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise UserError(f"--accelerator {accelerator}: choose cpu, gpu or auto.")
    from farmcli.analysis.report import build_report
    from farmcli.interrupts import interruptible
    from farmcli.machine import device_for

    device = device_for(accelerator)
    with interruptible(), progress_bar() as bar:
        md = build_report(
            run_dir,
            compare=compare_dir,
            user=user,
            out=out,
            overwrite=overwrite,
            max_users=max_users,
            batch_size=batch_size,
            device=device,
            progress=step_progress(bar, by_step=False),  # one bar per run's step: "Fig. 3: h of RUN"
        )
    say(f"wrote {md} and its figures in {md.parent}")
