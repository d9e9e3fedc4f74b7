"""`farm train`, `farm eval`, `farm variants`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from farmcli import render
from farmcli.cli._common import EXTRA, announce_store, config_path, dotted_overrides, progress_bar, step_progress
from farmcli.cli.app import app, console, err_console, user_errors
from farmcli.errors import UserError


@app.command("train", context_settings=EXTRA)
@user_errors
def train_cmd(
    ctx: typer.Context,
    variant: Optional[str] = typer.Option(
        None, "--variant", "-v", help="Variant name (see `farm variants`) or a variant YAML file."
    ),
    data: Optional[str] = typer.Option(
        None, "--data", "-d", help="Dataset directory or simulator preset (tiny, small, default). Default: default."
    ),
    config: list[str] = typer.Option(
        [], "--config", "-c", help="Config YAML (repeatable; later files win), or a built-in: cpu, gpu, ddp."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (default 0)."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue an interrupted run directory from its last checkpoint."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one setting, KEY=VALUE (repeatable), e.g. model.cl_weight=0.3."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit."),
) -> None:
    """Train a FARM variant; writes a run directory (config, checkpoints, metrics, logs).

    Any setting can be overridden with a dotted option: --trainer.max_epochs 3, --model.fuse.name none,
    --model.video_frequency.cutoff 5, --data.batch_size 512, --trainer.precision bf16-mixed, --model.backend
    reference. Loggers, callbacks and a learning-rate scheduler as in LightningCLI: --trainer.logger
    TensorBoardLogger, --trainer.callbacks LearningRateMonitor, --lr_scheduler CosineAnnealingLR
    --lr_scheduler.T_max 10.

    Examples: farm train --variant no-cpa --data small;  farm train --config gpu;  farm train --resume farm-runs/RUN
    """
    from farmcli import config as cfgmod
    from farmcli.allocator import keep_freed_memory
    from farmcli.train import check_monitor, check_resume, new_run_dir, resume_config, train

    overrides = dotted_overrides(ctx, set_)
    if data is not None:
        overrides += [f"data.source={data}"]
    if seed is not None:
        overrides += [f"seed={seed}"]
    if resume:
        if variant or config:
            raise UserError("--resume continues a run with its own config; --variant and --config cannot change it.")
        cfg = resume_config(resume, overrides)
    else:
        cfg = cfgmod.resolve([config_path(c) for c in config], variant=variant, overrides=overrides)
    if print_config:
        print(cfg.to_yaml(), end="")
        return
    check_monitor(cfg)  # before anything is built: Lightning would say so only after a whole epoch
    if resume:
        check_resume(resume, cfg)  # the run is not touched unless it can be resumed with this data
    else:
        new_run_dir(cfg)
    keep_freed_memory()  # a training process: glibc keeps freed memory for the next step (farmcli/allocator.py)
    with progress_bar() as bar:
        from farmcli.sources import sample_store

        store = sample_store(cfg.data, step_progress(bar))
    announce_store(store)
    run = train(cfg, resume=resume, store=store)
    if run is None or not (run / "eval-test.json").exists():
        return
    import json

    tables = json.loads((run / "eval-test.json").read_text())
    console.print(
        render.eval_table(
            tables, title=f"{cfg.variant} on {cfg.data.source}: test split (percent)", width=console.width
        )
    )
    _note_empty_split(tables, store, "test")
    console.print(f"run directory: {run}", soft_wrap=True, markup=False)


def _note_empty_split(tables: dict, store, split: str) -> None:
    """A split with no samples prints a table of dashes: say why beside it."""
    if tables.get("samples"):
        return
    from datetime import datetime, timezone

    start, end = (store.manifest.get("windows") or {}).get(split, (None, None))

    def day(ms) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M") if ms is not None else "?"

    bounds = "valid_end .. test_end" if split == "test" else "train_end .. valid_end"
    err_console.print(
        f"note: no {split} samples, so every metric is '-': the {split} window [{day(start)}, {day(end)}) UTC "
        f"of {store.manifest.get('dataset', store.path)} holds no live impressions. Check its manifest.json "
        f"({bounds}) and the live table's ts.",
        markup=False,
        soft_wrap=True,
        highlight=False,
    )


@app.command("eval")
@user_errors
def eval_cmd(
    target: Path = typer.Argument(..., help="A run directory (uses its best checkpoint) or a .ckpt file inside one."),
    groups: str = typer.Option("low,mid,high", help="Comma-separated activity groups to report beside full."),
    split: str = typer.Option("test", help="test or valid."),
    save_predictions: Optional[str] = typer.Option(
        None, help="Write user_id, the six labels and the six scores as parquet."
    ),
    overwrite: bool = typer.Option(False, help="Replace an earlier predictions file of farm at --save-predictions."),
    accelerator: str = typer.Option("auto", help="auto, cpu or gpu."),
    bf16: bool = typer.Option(
        False, help="bf16 autocast for scoring (the reference model; fast on a GPU, slow on a CPU without native bf16)."
    ),
) -> None:
    """Evaluate a run: AUC / UAUC / GAUC per task and activity group, plus the oracle row on simulated data.

    Writes RUN/eval-SPLIT.json and .csv. Example: farm eval farm-runs/RUN --groups low,mid,high --split test
    """
    from farmcli.evaluate import as_percent, evaluate_run
    from farmcli.interrupts import interruptible
    from farmcli.runs import status_note

    group_list = tuple(g.strip() for g in groups.split(",") if g.strip() and g.strip() != "full")
    with interruptible():
        tables, run, ckpt = evaluate_run(
            target,
            split=split,
            groups=group_list,
            save_predictions=save_predictions,
            accelerator=accelerator,
            bf16=bf16,
            overwrite=overwrite,
        )
    console.print(
        render.eval_table(as_percent(tables), title=f"{run.name}: {split} split (percent)", width=console.width)
    )
    if not tables.get("samples"):
        from farmcli.config import resolve
        from farmcli.evaluate import run_store

        _note_empty_split(tables, run_store(run, resolve([run / "config.yaml"])), split)
    note = status_note(run)
    if note:
        err_console.print(f"note: {note}", markup=False, soft_wrap=True, highlight=False)
    console.print(
        f"wrote {run / f'eval-{split}.json'} and .csv"
        + (f"; predictions in {save_predictions}" if save_predictions else ""),
        soft_wrap=True,
        markup=False,
    )


@app.command("variants")
@user_errors
def variants_cmd() -> None:
    """List the built-in model variants and what each one changes.

    Example: farm variants
    """
    from rich.table import Table

    from farmcli.variants import all_variants, slot_names

    t = Table(title="variants (farm train --variant NAME)")
    for c in ("name", "label", "farm ablate", "slots", "description"):
        t.add_column(c, overflow="fold", min_width=len("video_frequency=none") if c == "slots" else None)
    for v in all_variants():
        slots = "\n".join(f"{k}={x}" for k, x in slot_names(v.name).items())
        order = f"row {v.ablation_order}" if v.ablation_order is not None else ""
        t.add_row(v.name, v.label, order, slots, v.description)
    console.print(t)


__all__ = ["train_cmd", "eval_cmd", "variants_cmd", "err_console"]
