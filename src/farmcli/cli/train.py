"""`farm train`, `farm eval`, `farm variants`."""

from __future__ import annotations

import dataclasses
from typing import Optional

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from farmcli import render
from farmcli.cli._common import (
    EXTRA,
    announce_store,
    config_path,
    dotted_overrides,
    given_path,
    note,
    optional_path,
    progress_bar,
    say,
    step_progress,
)
from farmcli.cli.app import app, console, user_errors
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
    resume_dir: Optional[str] = typer.Option(
        None, "--resume", help="Continue an interrupted run directory from its last checkpoint."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override one setting, KEY=VALUE (repeatable), e.g. model.cl_weight=0.3."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", "--print_config", help="Print the resolved config as YAML and exit."
    ),
) -> None:
    """Train a FARM variant; writes a run directory (config, checkpoints, metrics, logs).

    Any setting can be overridden with a dotted option: --trainer.max_epochs 3, --model.fuse.name none,
    --model.video_frequency.cutoff 5, --data.batch_size 512, --trainer.precision bf16-mixed, --fit.backend
    reference. LightningCLI's keys work: --seed_everything 3, --optimizer AdamW --optimizer.lr 0.002,
    --lr_scheduler CosineAnnealingLR --lr_scheduler.T_max 10 (ReduceLROnPlateau: --lr_scheduler.monitor),
    --trainer.logger TensorBoardLogger, --trainer.callbacks+=LearningRateMonitor (appends), --ckpt_path
    RUN/checkpoints/last.ckpt (resumes RUN, as --resume RUN), --print_config.

    Examples: farm train --variant no-cpa --data small;  farm train --config gpu;  farm train --resume farm-runs/RUN
    """
    from farmcli import config as cfgmod
    from farmcli.metric_names import check_monitor
    from farmcli.runs import check_resume, check_resume_settings, new_run_dir, resume_config, run_of_checkpoint
    from farmcli.trainer_check import check_trainer

    resume = optional_path(resume_dir, "--resume", "--resume farm-runs/RUN")
    overrides = dotted_overrides(ctx, set_)
    if data is not None:
        overrides += [f"--data.source={data}"]
    if seed is not None:
        overrides += [f"--seed={seed}"]
    files = [config_path(c) for c in config]
    if not resume:
        cfg = cfgmod.resolve(files, variant=variant, overrides=overrides)
        resume = run_of_checkpoint(cfg.ckpt_path, files) if cfg.ckpt_path else None
    if resume:
        if variant or any(f.resolve() != (resume / "config.yaml").resolve() for f in files):
            raise UserError(
                "--resume (or ckpt_path) continues a run with its own config; --variant and --config cannot change it."
            )
        cfg = dataclasses.replace(resume_config(resume, overrides), ckpt_path=None)
        check_resume_settings(resume, cfg)  # --seed 5 would rewrite config.yaml, not the weights
    if print_config:
        print(cfg.to_yaml(), end="")
        return
    from farmcli.machine import check_memory

    check_monitor(cfg)  # before anything is built: Lightning would say so only after a whole epoch
    check_memory(cfg)  # data.history_len against this machine's memory (before Lightning is imported)
    check_trainer(cfg.trainer)  # what Lightning cannot run, named before the store is built
    if resume:
        check_resume(resume, cfg)  # the run is not touched unless it can be resumed with this data
    else:
        new_run_dir(cfg)
    from farmcli.allocator import keep_freed_memory
    from farmcli.sources import sample_store
    from farmcli.training import train

    keep_freed_memory()  # a training process: glibc keeps freed memory for the next step (farmcli/allocator.py)
    with progress_bar() as bar:
        store = sample_store(cfg.data, step_progress(bar))
    announce_store(store)
    result = train(cfg, resume=resume, store=store)
    if not result.test:  # a DDP rank other than 0: rank 0 prints
        return
    title = f"{cfg.variant} on {cfg.data.source}: test split (percent)"
    console.print(render.eval_table(result.test, title=title, width=console.width))
    if not result.test.get("samples"):  # a table of dashes: say why beside it
        from farmcli.evaluation import empty_split_note

        note(empty_split_note(store.manifest, "test"))
    say(f"run directory: {result.run}")


@app.command("eval")
@user_errors
def eval_cmd(
    target: str = typer.Argument(..., help="A run directory (uses its best checkpoint) or a .ckpt file inside one."),
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

    Writes RUN/eval-SPLIT.json and .csv (with --bf16, RUN/eval-SPLIT-bf16.json and .csv beside them). A UAUC or
    GAUC from fewer than 30 users is marked with a dagger. Example: farm eval farm-runs/RUN --groups low,mid,high
    """
    from farmcli.config import resolve
    from farmcli.evaluation import as_percent, empty_split_note, eval_name, evaluate_run, run_store
    from farmcli.interrupts import interruptible
    from farmcli.runs import status_note

    group_list = tuple(g.strip() for g in groups.split(",") if g.strip() and g.strip() != "full")
    with interruptible(), progress_bar() as bar:
        tables, run, ckpt = evaluate_run(
            given_path(target, "RUN", "farm eval farm-runs/RUN"),
            split=split,
            groups=group_list,
            save_predictions=save_predictions,
            accelerator=accelerator,
            bf16=bf16,
            overwrite=overwrite,
            progress=step_progress(bar),
        )
    title = f"{run.name}: {split} split ({'bf16, ' if bf16 else ''}percent)"
    console.print(render.eval_table(as_percent(tables), title=title, width=console.width))
    if not tables.get("samples"):  # a table of dashes: say why beside it
        note(empty_split_note(run_store(run, resolve([run / "config.yaml"])).manifest, split))
    if status := status_note(run):
        note(status)
    console.print(
        f"wrote {run / f'{eval_name(split, bf16)}.json'} and .csv"
        + (f"; predictions in {save_predictions}" if save_predictions else ""),
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


@app.command("variants")
@user_errors
def variants_cmd() -> None:
    """List the built-in model variants and what each one changes against farm.

    Each entry: name, label (its name in the tables), its row in farm ablate's Table 1,
    the settings it sets otherwise than farm, and its description. Fits 80 columns.

    Example: farm variants
    """
    from farmcli.model.config import SlotConfig
    from farmcli.slots import SLOT_NAMES
    from farmcli.variants import all_variants

    def flat(layer: dict, prefix: str = "") -> dict[str, str]:
        """A variant's settings as KEY=VALUE, without ``model.``; a slot is its component's name, then SLOT.PARAM."""
        out: dict[str, str] = {}
        for key, value in layer.items():
            name = f"{prefix}{key}".removeprefix("model.")
            if prefix == "model." and key in SLOT_NAMES:
                slot = SlotConfig.parse(value)
                out[name] = slot.name
                out.update(flat(slot.params, f"{name}."))
            elif isinstance(value, dict):
                out.update(flat(value, f"{name}."))
            else:
                out[name] = str(value)
        return out

    variants = all_variants()
    farm = next((flat(v.layer) for v in variants if v.name == "farm"), {})

    def changes(layer: dict) -> str:
        """Only what differs from farm (whose own entry lists all, the reference), so an entry stays short."""
        mine = flat(layer)
        if mine == farm:
            return "(the reference) " + ", ".join(f"{k}={x}" for k, x in mine.items())
        return ", ".join(f"{k}={x}" for k, x in mine.items() if farm.get(k) != x) or "(farm's settings)"

    label_width = max(len(v.label) for v in variants)

    def entry(label: str, row: str, what: str, description: Text | None = None) -> Group | Table:
        line = Table.grid(padding=(0, 2))
        line.add_column(width=label_width, no_wrap=True)
        line.add_column(width=3, justify="right", no_wrap=True)
        line.add_column(overflow="fold")
        line.add_row(Text(label), Text(row), Text(what))  # Text: a setting's "[1, 2]" is no markup
        return Group(line, description) if description is not None else line

    t = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 1, 0))  # a blank line after each entry
    t.add_column(no_wrap=True)
    t.add_column()
    t.add_row(Text("name", style="bold"), entry("label", "row", "differs from farm"), style="bold")
    for v in variants:
        order = str(v.ablation_order) if v.ablation_order is not None else ""
        t.add_row(Text(v.name, style="bold"), entry(v.label, order, changes(v.layer), Text(v.description)))
    console.print("Variants: farm train --variant NAME (or a variant YAML file of your own).")
    console.print("row: its row in farm ablate's Table 1 (blank: not in the default ablation).\n")
    console.print(t, width=min(console.width, 100))  # prose wider than 100 columns reads badly
