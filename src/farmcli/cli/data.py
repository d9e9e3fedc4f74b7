"""`farm data ...`: synth, validate, inspect, build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.markup import escape

from farmcli import locks, render
from farmcli.cli._common import announce_store, given_path, optional_path, parse_sets, progress_bar, step_bar
from farmcli.cli.app import console, data_app, err_console, size_text, user_errors
from farmcli.errors import UserError


@data_app.command("synth")
@user_errors
def synth(
    out: str = typer.Option(
        ..., "--out", "-o", help="Directory to write the dataset to (must not exist unless --overwrite)."
    ),
    preset: str = typer.Option(
        "default", help="Size preset: tiny (tests), small (~3,000 users), default (20,000 users)."
    ),
    seed: Optional[int] = typer.Option(
        None,
        help="Random seed (default: the --config file's or --set's seed, else 0); the same arguments and seed give "
        "byte-identical files.",
        show_default=False,
    ),
    users: Optional[int] = typer.Option(None, "--users", min=1, help="Number of users (overrides the preset)."),
    config: Optional[str] = typer.Option(
        None, "--config", help="YAML file of simulator settings (any SimConfig field)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override one simulator setting, KEY=VALUE (repeatable)."),
    overwrite: bool = typer.Option(
        False, help="Replace a dataset farm wrote at --out (never a folder holding files farm did not write)."
    ),
) -> None:
    """Simulate a dataset with the built-in simulator (SIMULATOR.md).

    Settings apply in this order, later ones winning: the preset, the --config file, --set, then --seed and
    --users. Example: farm data synth --preset small --seed 1 --out data/small
    """
    from farmcli.data.simulator import sim_config, synthesize
    from farmcli.io import load_yaml, output_dir

    target_path = given_path(out, "--out", "--out data/small")
    config_file = optional_path(config, "--config", "--config sim.yaml")
    settings = load_yaml(config_file, what="simulator config") if config_file else {}
    _no_preset(settings, f"{config_file} sets", "preset: ")
    sets = {k: yaml.safe_load(v) for k, v in parse_sets(set_).items()}
    _no_preset(sets, "--set", "preset=")
    settings.update(sets)
    if seed is not None:
        _check_seed(seed, "--seed ")
        settings["seed"] = seed
    if users is not None:
        settings["n_users"] = users
    cfg = sim_config(preset, **settings)
    _check_seed(cfg.seed, "Bad setting: seed = ")  # from --config or --set
    target = output_dir(target_path, overwrite)  # checked before the progress bar starts
    locks.check_free(target, "the dataset", "--out")  # another synth writing it: refused before any work
    _check_space(target, cfg.n_users)
    from farmcli.interrupts import interruptible

    with interruptible(), progress_bar() as bar:  # SIGTERM stops it as Ctrl-C does: exit 130, nothing half-written
        task = bar.add_task(f"simulating {cfg.n_users:,} users", total=cfg.n_users)
        summary = synthesize(
            cfg,
            target_path,
            overwrite=overwrite,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    rows = ", ".join(f"{k} {v:,}" for k, v in summary.get("rows", {}).items())
    console.print(f"wrote {target_path} ({rows}) in {summary.get('seconds', 0):.1f} s", markup=False)


MAX_SEED = 2**32 - 1  # farm train's: Lightning and numpy take 0 .. 2**32 - 1
BYTES_PER_USER = 4_300  # dataset size per user with a preset's other settings (`default`: 20,000 users, 84 MB)


def _check_seed(value: int, where: str) -> None:
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{where}{value}: must be >= 0 and <= {MAX_SEED} (a seed's range, as in farm train).")


def _no_preset(settings: dict, where: str, spelling: str) -> None:
    if "preset" in settings:
        raise UserError(
            f"{where} {spelling}{settings['preset']}: the preset is not a simulator setting; choose it with "
            f"--preset {settings['preset']} (tiny, small, default), and keep --config and --set for the settings "
            f"the preset gives."
        )


def _check_space(target: Path, users: int) -> None:
    """Refuse a dataset that cannot fit on the disk; say how large a big one will be."""
    estimate = BYTES_PER_USER * users
    parent = next(p for p in (target, *target.parents) if p.exists())
    free = shutil.disk_usage(parent).free
    if estimate > free:
        raise UserError(
            f"--users {users:,} makes a dataset of about {size_text(estimate)}, but {parent} has "
            f"{size_text(free)} free. Choose fewer users or another --out."
        )
    if estimate > 1e9:
        err_console.print(f"about {size_text(estimate)} will be written ({size_text(free)} free).", markup=False)


@data_app.command("validate")
@user_errors
def validate(
    dataset_arg: str = typer.Argument(
        ..., metavar="DATASET", help="Dataset directory (manifest.json, live.parquet, video.parquet)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a dataset against the farm-events/1 format; exit 2 listing every problem.

    Example: farm data validate data/small
    """
    from farmcli.data.validate import validate as run_validate

    dataset = given_path(dataset_arg, "DATASET", "farm data validate data/small")
    report = run_validate(dataset)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))  # stdout holds the JSON only; the verdict goes to stderr
    else:
        for w in report.warnings:
            err_console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True, markup=True)
        for e in report.errors:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        if report.rows:
            console.print(render.validation(report))
    if not report.ok:
        err_console.print(
            f"{dataset}: {len(report.errors)} problem(s); the dataset is not valid.", soft_wrap=True, markup=False
        )
        raise typer.Exit(2)
    (err_console if as_json else console).print(
        f"{dataset}: valid farm-events/1 dataset ({len(report.warnings)} warning(s)).", soft_wrap=True, markup=False
    )


@data_app.command("inspect")
@user_errors
def inspect(
    dataset_arg: str = typer.Argument(..., metavar="DATASET", help="Dataset directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    history_len: int = typer.Option(50, min=1, help="History length L used for the history-length percentiles."),
) -> None:
    """Rows per split, label rates, video:live ratio, activity levels, history lengths, oracle AUC.

    Example: farm data inspect data/small --json
    """
    from farmcli.data.inspect import inspect_dataset

    dataset = given_path(dataset_arg, "DATASET", "farm data inspect data/small")
    _check_dataset(dataset, history_len, training=False)  # inspect shows why a dataset cannot train (rows per split)
    info = inspect_dataset(dataset, history_len=history_len)
    if as_json:
        print(json.dumps(info, indent=2, default=_json_default))
    else:
        console.print(render.inspection(info))


def _json_default(x):
    return None if x != x else str(x)  # NaN -> null


def _check_dataset(dataset: Path, history_len: int, training: bool = True) -> None:
    """Refuse a --history-len too long, then what `farm data validate` calls an error (without ``training``: format
    errors only)."""
    from farmcli.config import MAX_HISTORY_LEN
    from farmcli.data.validate import validate as run_validate

    if history_len > MAX_HISTORY_LEN:
        raise UserError(f"--history-len must be in 1..{MAX_HISTORY_LEN:,}, got {history_len:,}.")
    errors = run_validate(dataset).blocking(training)
    if errors:
        lines = "\n".join(f"  {e}" for e in errors)
        raise UserError(
            f"{dataset} is not a valid farm-events/1 dataset:\n{lines}\n"
            f"Run `farm data validate {dataset}` for the full report."
        )


@data_app.command("build")
@user_errors
def build(
    dataset_arg: str = typer.Argument(..., metavar="DATASET", help="Dataset directory."),
    cache_dir_arg: Optional[str] = typer.Option(
        None, "--cache-dir", help="Where sample stores live (default: $FARM_HOME/samples)."
    ),
    history_len: int = typer.Option(50, min=1, help="History length L (both domains)."),
    min_count: int = typer.Option(
        1, min=1, help="Ids seen fewer times in the training window map to out-of-vocabulary."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the store summary as JSON."),
) -> None:
    """Build (or reuse) the sample store: point-in-time histories, vocabularies and buckets, cached by content hash.

    Example: farm data build data/small --history-len 50
    """
    from farmcli.data.build import build_samples
    from farmcli.data.store import store_summary
    from farmcli.paths import sample_cache

    dataset = given_path(dataset_arg, "DATASET", "farm data build data/small")
    cache_dir = optional_path(cache_dir_arg, "--cache-dir", "--cache-dir ~/.cache/farmcli/samples")
    _check_dataset(dataset, history_len)
    with progress_bar() as bar:
        progress = step_bar(bar, "building samples")
        store = build_samples(
            dataset, cache_dir or sample_cache(), history_len=history_len, min_count=min_count, on_progress=progress
        )
    announce_store(store)
    summary = store_summary(store)
    if as_json:
        print(json.dumps(summary, indent=2, default=_json_default))
    else:
        console.print(render.store(summary))
