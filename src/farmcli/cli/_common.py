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

from farmcli.cli.app import err_console
from farmcli.errors import UserError

EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}

UNDOTTED = ("--lr_scheduler", "--optimizer", "--seed_everything", "--ckpt_path")
"""Top-level settings that are options without a dot (``--lr_scheduler CosineAnnealingLR``, as in LightningCLI)."""


def dotted_overrides(ctx: typer.Context, sets: list[str]) -> list[str]:
    """The command's dotted options (``--trainer.max_epochs 3``) and its ``--set KEY=VALUE`` items, checked: an
    option that is not a dotted key is refused, and so is a dotted key left without its value."""
    args = list(ctx.args)
    for i, tok in enumerate(args):
        is_value = i > 0 and _takes_value(args[i - 1]) and (not tok.startswith("-") or _is_number(tok))
        if is_value:
            continue
        if tok.startswith("-") and "." not in tok.split("=", 1)[0] and tok.split("=", 1)[0] not in UNDOTTED:
            raise UserError(
                f"No such option: {tok}. Settings are given as dotted keys, e.g. --trainer.max_epochs 3 "
                f"or --model.fuse.name none; see `farm train --help` and `farm train --print-config`."
            )
        if _takes_value(tok):
            following = args[i + 1] if i + 1 < len(args) else None
            if following is None or (following.startswith("-") and not _is_number(following)):
                raise UserError(needs_value(tok))
    return [*args, *(f"{k}={v}" for k, v in parse_sets(sets, example="model.cl_weight=0.3").items())]


def _takes_value(tok: str) -> bool:
    """``--trainer.max_epochs`` (its value is the next argument), not ``--trainer.max_epochs=3``."""
    return tok.startswith("--") and "=" not in tok


def needs_value(option: str) -> str:
    return (
        f"{option} needs a value: {option} VALUE or {option}=VALUE, e.g. --trainer.max_epochs 3. "
        f"`farm train --print-config` shows every setting with its current value."
    )


def _is_number(tok: str) -> bool:
    """A negative value such as -1 after --model.cl_weight is a value, not an option."""
    try:
        float(tok)
    except ValueError:
        return False
    return True


def given_path(value: str, what: str, example: str) -> Path:
    """The path a command's argument or option names; an empty one is refused (``Path("")`` is ".", so
    `farm eval ""` would read the current directory as a run, `--out ""` write into it)."""
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


def step_progress(bar: Progress):
    """A library progress callback ``(what, done, total)`` drawing one bar per step (the text before ':')."""
    tasks: dict[str, TaskID] = {}

    def progress(what: str, done: int, total: int | None) -> None:
        key = what.split(":")[0]
        if key not in tasks:
            tasks[key] = bar.add_task(what, total=total)
        bar.update(tasks[key], description=what, completed=done, total=total)

    return progress


def note(text: str) -> None:
    """A line beside a command's result that says why it looks as it does (an empty split, a killed run)."""
    err_console.print(f"note: {text}", markup=False, soft_wrap=True, highlight=False)


def announce_store(store) -> None:
    """One line saying whether the sample store was reused or built, and where it is."""
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
