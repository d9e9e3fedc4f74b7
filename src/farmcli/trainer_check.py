"""The Trainer a run config asks for, built once before any data is read, so that a value Lightning cannot run
(an unknown accelerator or strategy, FSDP on a CPU, ``devices: -1`` on a CPU) is a user error naming the setting,
not a traceback after the sample store is built."""

from __future__ import annotations

from typing import Any

from farmcli.errors import UserError

DEVICE_KEYS = ("accelerator", "strategy", "devices", "num_nodes", "precision")


def check_trainer(trainer: dict[str, Any]) -> None:
    """Construct ``lightning.Trainer(**trainer)`` with farm's own arguments off; a failure is a UserError."""
    import lightning as L

    from farmcli.logs import quiet_lightning

    quiet_lightning()
    kwargs = {k: v for k, v in trainer.items() if k not in ("logger", "callbacks", "enable_progress_bar")}
    try:
        L.Trainer(**kwargs, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    except Exception as e:  # Lightning's MisconfigurationException, ValueError, ModuleNotFoundError (torch_xla) ...
        raise UserError(trainer_error(kwargs, e)) from None


def trainer_error(kwargs: dict[str, Any], e: Exception) -> str:
    """Lightning's words, with the settings they are about (those its message names, else the device settings)."""
    text = " ".join(str(e).split())
    if isinstance(e, ModuleNotFoundError):
        text = f"a package it needs is missing ({text})"
    aliases = {"max_time": "Timer(duration"}  # Lightning names some settings by the object it makes of them
    words = set(text.replace("`", " ").replace(",", " ").replace("=", " ").split())
    named = [k for k in kwargs if k in words]
    named += [k for k, alias in aliases.items() if alias in text and k in kwargs]
    named = named or [k for k in DEVICE_KEYS if k in kwargs and k in text] or ["accelerator"]
    given = ", ".join(f"trainer.{k}={kwargs[k]!r}" for k in named)
    missing_device = any(w in text.lower() for w in ("no supported gpu", "not available", "requires a gpu"))
    hint = " On a machine without a GPU, use --config cpu (or --trainer.accelerator cpu)." if missing_device else ""
    if missing_device and "strategy" in named:  # a GPU strategy: another accelerator does not help
        hint = f" On a machine without a GPU, leave trainer.strategy at auto (drop --trainer.strategy {kwargs['strategy']})."
    return f"Bad setting: Lightning cannot run {given}: {text}{hint}"
