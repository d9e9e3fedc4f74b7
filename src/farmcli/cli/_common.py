"""Helpers shared by the command modules: progress bars, dotted overrides, --set, config names."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from farmcli.cli.app import console, err_console
from farmcli.errors import UserError

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def dotted_overrides(ctx: typer.Context, sets: list[str]) -> list[str]:
    """The command's dotted options (``--trainer.max_epochs 3``) and its ``--set KEY=VALUE`` items."""
    return [*ctx.args, *(f"{k}={v}" for k, v in parse_sets(sets, example="model.cl_weight=0.3").items())]


def given_path(value: str, what: str, example: str) -> Path:
    """The path an argument or option names; an empty one is refused (``Path("")`` is the current directory)."""
    if not value.strip():
        raise UserError(f"{what} is empty: give a path, e.g. {example}.")
    return Path(value)


def optional_path(value: str | None, what: str, example: str) -> Path | None:
    return None if value is None else given_path(value, what, example)


def config_path(name: str) -> Path:
    """A config file path, or the name of a built-in one (cpu, gpu, ddp)."""
    if not name.strip():
        raise UserError("--config is empty: give a config YAML file or a built-in config (cpu, gpu, ddp).")
    p = Path(name)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    builtin = Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    raise UserError(f"--config {name}: no such file, and not a built-in config (cpu, gpu, ddp).")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def step_progress(bar: Progress, by_step: bool = True):
    """A library progress callback ``(what, done, total)``: one bar per step (the text before ':'), else per what."""
    tasks: dict[str, TaskID] = {}

    def progress(what: str, done: int, total: int | None) -> None:
        key = what.split(":")[0] if by_step else what
        if key not in tasks:
            tasks[key] = bar.add_task(what, total=total)
        bar.update(tasks[key], description=what, completed=done, total=total)

    return progress


def step_bar(bar: Progress, what: str):
    """A bar shown at once; the callback ``(step, done, total)`` names the step beside ``what``."""
    task = bar.add_task(what, total=None)
    return lambda step, done, total: bar.update(task, description=f"{what}: {step}", completed=done, total=total)


def say(text: str) -> None:
    """A result line on stdout; no markup, since paths and names may hold brackets."""
    console.print(text, soft_wrap=True, markup=False)


def note(text: str) -> None:
    """A line beside a command's result saying why it looks as it does (an empty split, a killed run)."""
    err_console.print(f"note: {text}", markup=False, soft_wrap=True, highlight=False)


def announce_store(store) -> None:
    verb = "reusing" if getattr(store, "reused", False) else "built"
    err_console.print(f"{verb} the sample store {store.path}", markup=False, soft_wrap=True, highlight=False)


def parse_sets(items: list[str], example: str = "n_live_authors=500") -> dict[str, str]:
    """``--set KEY=VALUE`` items as {KEY: VALUE}; ``example`` is a KEY=VALUE of the command at hand."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set needs KEY=VALUE, got '{item}'. Example: --set {example}")
        out[key.strip()] = value.strip()
    return out
