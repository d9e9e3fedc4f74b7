"""`farm ablate`: the paper's Table 1 and Table 4 for your data, with the spread over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.rule import Rule

from farmcli import render
from farmcli.cli._common import EXTRA, config_path, dotted_overrides, optional_path, say
from farmcli.cli.app import app, console, user_errors
from farmcli.errors import UserError


@app.command("ablate", context_settings=EXTRA)
@user_errors
def ablate_cmd(
    ctx: typer.Context,
    variants: Optional[str] = typer.Option(
        None,
        help="Comma-separated variants: built-in names or variant YAML files (a file's runs and Table 1 row take "
        "its name, e.g. vars/my.yaml -> my). Default: the built-in variants with an ablation_order: the paper's "
        "Table 1 rows (see `farm variants`).",
    ),
    seeds: str = typer.Option(
        "3",
        help="Seeds per variant: a count (3 = seeds 0, 1, 2) or a comma-separated list (0,1,2 or 5,7; one given "
        "seed: 7,). A list adds seeds to an earlier ablation of --out; the tables cover the seeds given.",
    ),
    data: str = typer.Option("default", "--data", "-d", help="Dataset directory or simulator preset."),
    groups: str = typer.Option("low,mid,high", help="Activity groups for Table 4 (beside full)."),
    out_arg: Optional[str] = typer.Option(
        None,
        "--out",
        help="Output directory (default: farm-ablations/DATA): new, empty, or an earlier farm ablate's, which "
        "re-running resumes.",
    ),
    config: list[str] = typer.Option([], "--config", "-c", help="Config YAML applied to every run (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="Override one setting for every run, KEY=VALUE (repeatable)."),
    tables_only: bool = typer.Option(
        False,
        "--tables-only",
        help="Train nothing: write the tables of the runs finished so far (also while another farm ablate "
        "trains the same --out).",
    ),
    jobs: int = typer.Option(
        1,
        "--jobs",
        "-j",
        help="Runs trained at once, each in its own process with an equal share of the CPU threads. Several "
        "small runs side by side use many cores better than one (2 cores, --jobs 2: +15% samples/s for FARM).",
    ),
) -> None:
    """Train every variant x seed on one shared sample store; write Table 1 and Table 4 (Markdown, CSV, JSON),
    with the six tasks' mean, and Table 1 of each activity group (table1-low.md, ...).

    Killed halfway and run again, it skips finished runs and continues the rest. Dotted settings apply to
    every run (e.g. --trainer.max_epochs 5). Example: farm ablate --data small --seeds 3

    Two more seeds later, into the same --out: --seeds 5 (tables of seeds 0-4) or --seeds 3,4 (of 3 and 4).
    """
    from farmcli.analysis.ablate import parse_seeds, run_ablation
    from farmcli.variants import ablation_variants

    variant_list = ablation_variants() if variants is None else [v.strip() for v in variants.split(",") if v.strip()]
    group_list = [g.strip() for g in groups.split(",") if g.strip() and g.strip() != "full"]
    bad = [g for g in group_list if g not in ("low", "mid", "high")]
    if bad or not variant_list or jobs < 1:
        raise UserError(
            f"--groups takes low, mid, high (got {', '.join(bad)})"
            if bad
            else "--variants needs at least one variant"
            if not variant_list
            else f"--jobs must be >= 1 (got {jobs})"
        )
    seed_list = parse_seeds(seeds)
    if not data.strip():
        raise UserError("--data is empty: give a dataset directory or a simulator preset (tiny, small, default).")
    out = optional_path(out_arg, "--out", "--out farm-ablations/small") or Path("farm-ablations") / (
        Path(data).name if Path(data).is_dir() else data
    )
    overrides = dotted_overrides(ctx, set_)
    _check_run_names(overrides, out)

    def on_run(i: int, total: int, state, phase: str) -> None:
        run = f"run {i + 1}/{total}: {state.variant}, seed {state.seed}"
        if phase == "start":
            console.print(Rule(f"{run} ({'continuing' if state.state == 'resumed' else 'training'})"))
        elif state.state == "done":
            console.print(f"{run}: finished earlier, skipped")
        elif state.state in ("trained", "resumed"):
            console.print(f"{run}: finished ({state.path})", markup=False)
        elif state.state == "failed":
            console.print(f"[red]{run} failed:[/] {state.error}")

    result = run_ablation(
        variant_list,
        seed_list,
        data,
        group_list,
        out,
        [config_path(c) for c in config],
        overrides,
        on_run=on_run,
        tables_only=tables_only,
        jobs=jobs,
    )
    if result.table1:
        console.print(render.ablation_table(result.table1, width=console.width))
    if result.table4:
        console.print(render.gain_table(result.table4))
    for f in result.files:
        say(f"wrote {f}")
    if result.other_seeds:
        say(
            f"{result.out / 'runs'} also holds finished runs of seed(s) {', '.join(map(str, result.other_seeds))} "
            f"from an earlier farm ablate: kept, and not in these tables (add them to --seeds to include them)."
        )
    if result.pending:
        say(
            f"{len(result.pending)} of {len(result.runs)} runs not finished: the tables cover the finished ones. "
            f"Run the same command without --tables-only to train the rest."
        )
    if result.failed:
        raise UserError(
            f"{len(result.failed)} run(s) failed: "
            + "; ".join(f"{r.variant} seed {r.seed}: {r.error.splitlines()[0]}" for r in result.failed)
        )


def _check_run_names(overrides: list[str], out: Path) -> None:
    """--fit.name and --fit.runs_dir would be ignored (runs go to OUT/runs/VARIANT-sSEED, found again there)."""
    from farmcli.config import pairs_of

    keys = {key for key, _ in pairs_of(overrides)}
    if given := " and ".join(f"--fit.{k}" for k in ("name", "runs_dir") if f"fit.{k}" in keys):
        raise UserError(
            f"{given}: farm ablate names and places its runs itself: each one "
            f"goes to {out / 'runs'}/VARIANT-sSEED (e.g. {out / 'runs' / 'farm-s0'}), where running the same "
            f"command again finds and continues it. Drop {given}; choose "
            f"where the ablation and its runs go with --out DIR."
        )
