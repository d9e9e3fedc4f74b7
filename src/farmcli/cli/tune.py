"""`farm tune`: choose hyperparameters on the validation split, as the paper does (Sec. 4.1.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.rule import Rule

from farmcli.cli._common import EXTRA, config_path, dotted_overrides, optional_path, progress_bar, say, step_progress
from farmcli.cli.app import app, console, user_errors
from farmcli.errors import UserError


@app.command("tune", context_settings=EXTRA)
@user_errors
def tune_cmd(
    ctx: typer.Context,
    space: list[str] = typer.Option(
        [],
        "--space",
        help="A setting and its values (repeatable), any dotted setting of `farm train`: a list KEY=V1,V2,..., "
        "or for --sampler tpe a range KEY=LO:HI (uniform) or KEY=LO:HI:log (log-uniform), integers when both "
        "bounds are (model.head.levels=1:3), else floats (optim.lr=1e-4:1e-2:log).",
    ),
    variant: str = typer.Option("farm", "--variant", "-v", help="Variant to tune (name or YAML file)."),
    data: str = typer.Option("small", "--data", "-d", help="Dataset directory or simulator preset."),
    sampler: str = typer.Option(
        "grid",
        help="grid (every combination of listed values, the paper's search) or tpe (Optuna's TPE, with --trials; "
        "takes ranges).",
    ),
    trials: Optional[int] = typer.Option(None, help="Trials for tpe; for grid, run only the first N combinations."),
    seeds: int = typer.Option(1, help="Training seeds per trial (0..N-1); the score is their mean."),
    prune: bool = typer.Option(
        True,
        help="Stop a trial early when its validation curve is below the median of earlier trials (Optuna's MedianPruner).",
    ),
    out_arg: Optional[str] = typer.Option(
        None,
        "--out",
        help="Output directory (default: farm-tune/VARIANT-DATA). Re-running the same command resumes it.",
    ),
    config: list[str] = typer.Option([], "--config", "-c", help="Config YAML applied to every trial (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Fix one setting for every trial, KEY=VALUE (repeatable)."),
) -> None:
    """Search hyperparameters on the validation split only; write the trials table and the best settings.

    Every trial trains with early stopping and is scored by the mean over the six tasks of the validation AUC
    at its best epoch; the test split is never read. Trials share a sample store, one per value of a store
    setting they tune (data.history_len, data.min_count). The grid runs every combination of listed values;
    tpe samples --trials N from lists and ranges (LO:HI, LO:HI:log). Killed and run again with the same
    command, it keeps the finished trials and continues. Writes OUT/trials.md, .csv, .json and OUT/best.yaml,
    the best trial's whole run config: `farm train --config OUT/best.yaml` trains that trial again.

    Examples: farm tune --data tiny --space model.cl_weight=0.1,0.5 --trainer.max_epochs 1 --out farm-tune/example;
    farm tune --data tiny --sampler tpe --trials 8 --space optim.lr=1e-4:1e-2:log --space model.head.levels=1:3
    """
    from farmcli.allocator import keep_freed_memory
    from farmcli.tune.space import label, parse_space
    from farmcli.tune.stores import Stores
    from farmcli.tune.study import TuneSettings, check, prepare_stores, run_tune

    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}.")
    if not data.strip():
        raise UserError("--data is empty: give a dataset directory or a simulator preset (tiny, small, default).")
    out = optional_path(out_arg, "--out", "--out farm-tune/my-study") or Path("farm-tune") / (
        f"{Path(variant).stem}-{Path(data).name if Path(data).is_dir() else data}"
    )
    settings = TuneSettings(
        variant=variant,
        data=data,
        space=parse_space(space),
        config_files=[str(config_path(c)) for c in config],
        overrides=dotted_overrides(ctx, set_),
        seeds=list(range(seeds)),
        sampler=sampler,
        trials=trials,
        prune=prune,
    )

    def on_event(kind: str, info: dict) -> None:
        if kind == "start":  # numbered from 1, as the tables; a killed trial runs again under a new number
            where = f"{info['index'] + 1} of {info['total']}"
            console.print(Rule(f"trial {info['number']} ({where}): {label(info['params'])}"))
            return
        row, best = info["row"], info["best"]
        score = "-" if row.score is None else f"{row.score:.2f}"
        best_text = f"; best so far {best.score:.2f} (trial {best.number})" if best else ""
        console.print(f"trial {row.number} {row.state.lower()}: val mean AUC {score}{best_text}", soft_wrap=True)

    combos = check(settings, out)  # every trial's config and the output directory, before any data work
    keep_freed_memory()  # trials train in this process (farmcli/allocator.py)
    with progress_bar() as bar:  # the stores known up front, built and checked before the study starts
        stores = prepare_stores(settings, combos, Stores(), step_progress(bar))
    result = run_tune(settings, out, on_event=on_event, stores=stores)
    if result.best is None:
        raise UserError(f"No trial completed; see {out / 'trials.md'}.")
    console.print(
        f"best: trial {result.best.number} ({label(result.best.params)}), val mean AUC {result.best.score:.2f}",
        soft_wrap=True,
    )
    for f in result.files:
        say(f"wrote {f}")
