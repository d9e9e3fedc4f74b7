"""The rules of a run config that no type can state, checked after jsonargparse has typed it; each message names
the key, the problem and the fix."""

from __future__ import annotations

import difflib
import math
import os
import random
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from farmcli.errors import UserError
from farmcli.model.config import SLOT_FIELDS, ModelConfig


def non_finite(x: Any, path: str = "") -> tuple[str, float] | None:
    """The first inf or nan in a nested mapping, as (dotted key, value): in a weight it surfaces as a NaN loss."""
    if isinstance(x, Mapping):
        found = (non_finite(v, f"{path}.{k}" if path else str(k)) for k, v in x.items())
    elif isinstance(x, (list, tuple)):
        found = (non_finite(v, f"{path}[{i}]") for i, v in enumerate(x))
    else:
        return (path, x) if isinstance(x, float) and not math.isfinite(x) else None
    return next((f for f in found if f is not None), None)


OURS = {
    "default_root_dir": "farm writes each run to fit.runs_dir/fit.name (e.g. --fit.runs_dir runs --fit.name my-run)",
    "enable_checkpointing": "every run keeps RUN/checkpoints/best.ckpt and last.ckpt (farm eval, --resume need them)",
    "use_distributed_sampler": "farm's data module gives each rank its own slice of the sample store",
    "plugins": "precision is --trainer.precision; the strategy --trainer.strategy",
}
"""Trainer arguments that farm sets itself, with what a LightningCLI user writes here instead."""


def check_not_ours(given: Mapping[str, Any]) -> None:
    """A Trainer argument farm sets itself names farm's setting instead."""
    for key in (k.removeprefix("trainer.") for k in given if k.startswith("trainer.")):
        if key in OURS:
            raise UserError(f"Bad setting: trainer.{key} is farm's to set: {OURS[key]}.")


def cached_trainer_settings() -> Any:
    """farmcli.trainer_settings' signature where it was made from the installed Lightning, else None."""
    from farmcli import trainer_settings

    try:
        installed = version("lightning")
    except PackageNotFoundError:
        return None
    return trainer_settings.trainer if installed == trainer_settings.LIGHTNING_VERSION else None


def seed(value: Any) -> int:
    """LightningCLI's ``seed_everything``: a seed, or ``true`` for a random one (recorded in config.yaml)."""
    if value is False:
        raise UserError(
            "Bad setting: seed_everything = false: farm seeds every run, so that config.yaml repeats it. Give a "
            "seed (e.g. --seed_everything 3) or true for a random one."
        )
    if value is True:
        return random.SystemRandom().randrange(2**32)
    return value


def check_settings(raw: Mapping[str, Any]) -> None:
    """The rules that a setting's type cannot say: finite numbers, the epoch and device counts, a run name."""
    bad = non_finite(raw)
    if bad is not None:
        key, value = bad
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "model" and parts[1] in SLOT_FIELDS and parts[2] == "params":
            key = ".".join([*parts[:2], *parts[3:]])  # model.head.params.dropout as the user writes it
        raise UserError(f"Bad setting: {key} = {value}: must be a finite number (inf and nan are not settings).")
    epochs = raw["trainer"].get("max_epochs")
    if epochs is not None and (epochs == 0 or epochs < -1):
        raise UserError(f"Bad setting: trainer.max_epochs must be >= 1 (or -1: no limit), got {epochs}.")
    devices = raw["trainer"].get("devices")
    if isinstance(devices, str):  # --trainer.devices 2 or '0,1' (the type has str first: the text as given)
        ids = devices.strip().strip("'\"")
        devices = raw["trainer"]["devices"] = int(ids) if ids.lstrip("-").isdigit() else ids
    if not _devices_ok(devices):
        raise UserError(
            f"Bad setting: trainer.devices = {devices!r}: give a number of devices (>= 1), a list of device ids "
            f'such as [0, 1], or -1 or "auto" for every device of trainer.accelerator.'
        )
    check_trainer_ranges(raw["trainer"])
    for key in ("data.source", "data.cache_dir", "fit.monitor", "fit.runs_dir", "variant"):
        group, _, field_ = key.rpartition(".")
        text = (raw[group] if group else raw).get(field_)
        if isinstance(text, str) and not text.strip():
            raise UserError(
                f"Bad setting: {key} is an empty string: give a value (`farm train --print-config` shows the default), "
                f"or leave the setting out."
            )
    workers, cores = raw["data"]["num_workers"], os.cpu_count() or 1
    if workers > 4 * cores:
        raise UserError(
            f"Bad setting: data.num_workers = {workers}: this machine has {cores} CPU cores, and each worker is a "
            f"process with its own memory. Use at most {4 * cores} (0 gathers batches in the training process)."
        )
    name = raw["fit"].get("name")
    if name is not None and (name in ("", ".", "..") or any(sep in name for sep in ("/", "\\", os.sep))):
        raise UserError(
            f"Bad setting: fit.name = {name!r}: a run name is one folder name inside fit.runs_dir (no '/', not "
            f"'.' or '..'), e.g. --fit.name my-run; to write runs elsewhere, set --fit.runs_dir."
        )


TRAINER_RANGES: dict[str, tuple[float, str]] = {
    "check_val_every_n_epoch": (1, "validation runs every N epochs"),
    "accumulate_grad_batches": (1, "gradients of N batches make one step"),
    "log_every_n_steps": (1, "values are logged every N steps"),
    "num_nodes": (1, "the number of machines"),
    "gradient_clip_val": (0, "the largest gradient norm (0: no clipping)"),
    "num_sanity_val_steps": (-1, "validation batches before training (-1: all)"),
    "reload_dataloaders_every_n_epochs": (0, "0: never"),
    "overfit_batches": (0, "0: off"),
    "fast_dev_run": (0, "N batches of each loop as a quick check; 0: off"),
    "limit_train_batches": (0, "a fraction of the batches in [0, 1], or a count"),
    "limit_val_batches": (0, "a fraction of the batches in [0, 1], or a count"),
    "limit_test_batches": (0, "a fraction of the batches in [0, 1], or a count"),
}
"""Lower bounds of Trainer arguments whose type admits what Lightning cannot run (or divides by, after an epoch)."""


def check_trainer_names(trainer: Mapping[str, Any]) -> None:
    """An unknown accelerator or strategy, named from the registries trainer_settings.py recorded (no Lightning)."""
    from farmcli import trainer_settings as ts

    if cached_trainer_settings() is None:
        return
    for key, names in (("accelerator", ts.ACCELERATORS), ("strategy", ts.STRATEGIES)):
        value = trainer.get(key)
        if isinstance(value, str) and value not in names:
            near = difflib.get_close_matches(value, names, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise UserError(
                f"Bad setting: trainer.{key} = {value!r} is not a Lightning {key}.{hint} Known: {', '.join(names)}."
            )


def check_trainer_ranges(trainer: Mapping[str, Any]) -> None:
    """Trainer values that fail inside Lightning, or only after a whole epoch, named here before anything runs."""
    check_trainer_names(trainer)
    for key, (low, meaning) in TRAINER_RANGES.items():
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            raise UserError(f"Bad setting: trainer.{key} = {value}: must be >= {low:g} ({meaning}).")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "overfit_batches"):
        value = trainer.get(key)
        if isinstance(value, float) and value > 1:
            raise UserError(
                f"Bad setting: trainer.{key} = {value}: a fraction of the batches is at most 1.0; a count of batches "
                f"is a whole number (e.g. {math.ceil(value)})."
            )
    _check_documented(trainer)
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and interval > 1:
        raise UserError(
            f"Bad setting: trainer.val_check_interval = {interval}: a fraction of an epoch is at most 1.0; a number "
            f"of batches is a whole number (e.g. {math.ceil(interval)})."
        )
    if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval <= 0:
        raise UserError(
            f"Bad setting: trainer.val_check_interval = {interval}: a fraction of an epoch in (0, 1] or a number of "
            f"batches >= 1."
        )
    for key in ("max_steps", "limit_train_batches"):
        if trainer.get(key) == 0:
            raise UserError(
                f"Bad setting: trainer.{key} = 0 leaves nothing to train. Leave it out (or -1 / 1.0: no limit)."
            )
    if trainer.get("limit_val_batches") == 0:
        raise UserError(
            "Bad setting: trainer.limit_val_batches = 0: farm keeps and evaluates the best epoch on the validation "
            "split, so it needs validation batches. Leave it out, or give a fraction such as 0.25."
        )
    least, most = trainer.get("min_epochs"), trainer.get("max_epochs")
    if isinstance(least, int) and isinstance(most, int) and most != -1 and least > most:
        raise UserError(
            f"Bad setting: trainer.min_epochs = {least} is above trainer.max_epochs = {most}: raise max_epochs or "
            f"lower min_epochs."
        )
    if trainer.get("barebones"):
        raise UserError(
            "Bad setting: trainer.barebones = true turns off the logging, checkpoints and progress a farm run needs "
            "(its best checkpoint is what farm evaluates). Leave it out."
        )


PROFILERS = ("simple", "advanced", "pytorch", "xla")
"""The names Lightning's ``profiler`` takes (or a Profiler object)."""


def _check_documented(trainer: Mapping[str, Any]) -> None:
    """Values Lightning documents the form of, named without importing it (which takes seconds)."""
    profiler = trainer.get("profiler")
    if isinstance(profiler, str) and profiler not in PROFILERS:
        raise UserError(
            f"Bad setting: trainer.profiler = {profiler!r}: Lightning's profilers are {', '.join(PROFILERS)} "
            f"(or leave it out: none)."
        )
    duration = trainer.get("max_time")
    if isinstance(duration, str) and not re.fullmatch(r"\s*\d+:\d+:\d+:\d+\s*", duration):
        raise UserError(
            f"Bad setting: trainer.max_time = {duration!r}: a duration DD:HH:MM:SS, e.g. 00:12:00:00 for 12 hours "
            f"(or a mapping such as {{hours: 12}})."
        )


def _devices_ok(devices: Any) -> bool:
    """What Lightning takes as ``devices``: a count >= 1, -1 (all), "auto", or device ids (a list or "0,1")."""
    if isinstance(devices, list):
        return bool(devices) and all(isinstance(i, int) and i >= 0 for i in devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return True
        if "," in text:
            ids = [t.strip() for t in text.split(",") if t.strip()]
            return bool(ids) and all(t.isdigit() for t in ids)
        try:
            devices = int(text)
        except ValueError:
            return True  # not a count: Lightning names what it expects
    return not isinstance(devices, int) or devices >= 1 or devices == -1


def check_cutoffs(model: ModelConfig, history_len: int) -> None:
    """The dft and dft_identity modules keep the ``cutoff`` lowest of the L // 2 + 1 DFT bins of a length-L history."""
    bins = history_len // 2 + 1
    for slot in ("video_frequency", "live_frequency"):
        spec = getattr(model, slot)
        cutoff = spec.params.get("cutoff")
        if spec.name not in ("dft", "dft_identity") or not isinstance(cutoff, int):
            continue
        if cutoff < 1:
            raise UserError(
                f"Bad setting: model.{slot}.cutoff = {cutoff}: the frequency cut-off c must be >= 1 (the paper "
                f"tries 1, 3, 5, 7 and 9)."
            )
        if cutoff > bins:
            raise UserError(
                f"Bad setting: model.{slot}.cutoff = {cutoff} with data.history_len = {history_len}: a history "
                f"of length L has L // 2 + 1 = {bins} frequency bins, so the cut-off must be <= {bins}. Lower "
                f"model.{slot}.cutoff or raise data.history_len."
            )


def check_attention_heads(model: ModelConfig) -> None:
    """The target attentions (eq. 11) and the preference encoder (eq. 12) split each history's width into heads."""
    from farmcli.model.layers import check_heads

    for key in ("target_heads", "preference_heads"):
        for width in ("d1", "d2"):
            check_heads(getattr(model.embed, width), getattr(model, key), f"model.{key}", f"model.embed.{width}")
