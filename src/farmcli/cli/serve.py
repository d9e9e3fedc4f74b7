"""`farm predict` and `farm export`: from a trained run to scores and to a serving graph."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from farmcli.cli._common import given_path, note, progress_bar, say, step_progress
from farmcli.cli.app import app, console, user_errors


@app.command("predict")
@user_errors
def predict_cmd(
    target: str = typer.Argument(..., help="A run directory (uses its best checkpoint) or a .ckpt file inside one."),
    out: str = typer.Option(..., "--out", "-o", help="Parquet file to write."),
    data: Optional[str] = typer.Option(
        None, "--data", "-d", help="A farm-events/1 directory or preset to score (default: the run's own data)."
    ),
    split: str = typer.Option("test", help="test, valid, train or all (the three windows, in that order)."),
    batch_size: Optional[int] = typer.Option(
        None, help="Rows per scoring batch (default: the run's training batch size, so memory stays below training's)."
    ),
    accelerator: str = typer.Option("auto", help="auto, cpu or gpu."),
    bf16: bool = typer.Option(
        False, help="bf16 autocast for scoring (the reference model; fast on a GPU, slow on a CPU without native bf16)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an earlier predictions file of farm at --out."),
) -> None:
    """Score every live impression of a split with a trained run: user_id, author_id, ts, split, p_click ... p_gift.

    Any dataset in the farm-events/1 format can be scored: its ids are encoded with the run's vocabularies
    (ids the run never saw are out-of-vocabulary, as in training). Rows are streamed to parquet in batches.

    Example: farm predict farm-runs/RUN --data tiny --split test --out scores.parquet
    """
    from farmcli.interrupts import interruptible
    from farmcli.prediction import predict_run

    run = given_path(target, "RUN", "farm predict farm-runs/RUN --out scores.parquet")
    with interruptible(), progress_bar() as bar:  # SIGTERM stops it as Ctrl-C does: exit 130, nothing half-written
        result = predict_run(
            run,
            out,
            data=data,
            split=split,
            batch_size=batch_size,
            accelerator=accelerator,
            bf16=bf16,
            overwrite=overwrite,
            progress=step_progress(bar),
        )
    rows = ", ".join(f"{s} {n:,}" for s, n in result.rows.items())
    say(f"wrote {result.out} ({rows} rows) with {result.checkpoint}")
    for text in result.notes:
        note(text)


@app.command("export")
@user_errors
def export_cmd(
    target: str = typer.Argument(..., help="A run directory (uses its best checkpoint) or a .ckpt file inside one."),
    out: str = typer.Option(..., "--out", "-o", help="Graph file to write, e.g. farm.onnx."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (needs farmcli\\[export]) or torchscript."),
    overwrite: bool = typer.Option(False, help="Replace an earlier export of farm at --out."),
) -> None:
    """Export the inference graph: six probabilities from candidate ids and the two padded histories.

    Writes OUT, OUT.json (input names, shapes, dtypes, the bucket rules) and OUT.vocab/ (one file of raw ids
    per vocabulary). The batch size is dynamic.

    Example: farm export farm-runs/RUN --format onnx --out farm.onnx
    """
    from farmcli.evaluation import locate
    from farmcli.io import output_path

    run = given_path(target, "RUN", "farm export farm-runs/RUN --out farm.onnx")
    output_path(out, "--out", "farm.onnx")
    locate(run)  # a path that is no run is named before torch (and onnx) are imported
    from farmcli.exporter import export_run
    from farmcli.interrupts import interruptible

    with interruptible(), console.status(f"exporting {escape(format)} ..."):
        spec = export_run(run, out, fmt=format, overwrite=overwrite)
    say(f"wrote {out} ({spec['variant']}, {len(spec['inputs'])} inputs, batch dynamic), {out}.json and {out}.vocab/")
