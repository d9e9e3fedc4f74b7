"""The class settings (loggers, callbacks, optimizer, scheduler) after jsonargparse has typed them.

A run config keeps only the arguments a user changed, so that what farm injects still applies (a logger's folder,
a ModelCheckpoint's dirpath, ``optim.lr``); each object is built once with stand-ins so a bad value is named now.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from farmcli.config_messages import KINDS
from farmcli.errors import UserError
from farmcli.model.params import plain


def as_list(value: Any) -> list[dict[str, Any]]:
    """A class setting's specs (one logger is a mapping, callbacks a list; None or false: none)."""
    return [] if value in (None, False) else value if isinstance(value, list) else [value]


def check(where: str, value: Any) -> Any:
    """``value`` with only its changed arguments (a list for callbacks), each object tried once."""
    if value in (None, False, []):
        return None
    specs = [_changed(where, v) for v in as_list(value)]
    for spec in specs:
        _try(where, spec)
    return specs if where == "trainer.callbacks" else specs[0]


def _changed(where: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    defaults = _defaults(resolve_class(where, spec["class_path"]))
    init_args = {k: v for k, v in (spec.get("init_args") or {}).items() if k not in defaults or defaults[k] != v}
    return {"class_path": spec["class_path"], "init_args": init_args}


@lru_cache(maxsize=32)
def _defaults(cls: type) -> dict[str, Any]:
    """The class's default arguments as jsonargparse reads them (through ``**kwargs`` to where they go)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False)
    try:
        p.add_class_arguments(cls, fail_untyped=False)
    except (ValueError, TypeError):  # a signature jsonargparse cannot read: nothing known, nothing injected
        return {}
    return plain(p.get_defaults().as_dict())


def resolve_class(where: str, class_path: str) -> type:
    """The class a spec names (a dotted path; a short name in the kind's module, as older run configs hold)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or KINDS[where][0]), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"Bad setting: {where} = {class_path!r}: cannot import it ({e}).") from None


def _try(where: str, spec: Mapping[str, Any]) -> None:
    """Build the object with stand-ins (a scheduler runs three epochs); loggers only in the run (they make folders)."""
    if where == "trainer.logger":
        return
    try:
        if where == "trainer.callbacks":
            instantiate(where, spec)
            return
        import torch

        param = torch.nn.Parameter(torch.zeros(1))
        if where == "optimizer":
            instantiate(where, spec, params=[param], lr=1e-3)
            return
        optimizer = torch.optim.SGD([param], lr=1e-3)
        scheduler = instantiate(where, spec, optimizer=optimizer, monitor="val/loss")
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        for _ in range(3):
            optimizer.step()
            scheduler.step(0.5) if plateau else scheduler.step()
            lr = optimizer.param_groups[0]["lr"]
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
                raise ValueError(f"it makes the learning rate {lr} (from 1e-3) within three epochs")
    except UserError:
        raise
    except Exception as e:  # the class's own check, whatever its type (Lightning's MisconfigurationException)
        args = ", ".join(f"{k}={v!r}" for k, v in spec["init_args"].items()) or "its defaults"
        zeros = [k for k, v in spec["init_args"].items() if v == 0 and not isinstance(v, bool)]
        fix = (
            f" It divides by {' or '.join(zeros)}: give 1 or more."
            if isinstance(e, ZeroDivisionError) and zeros
            else ""
        )
        raise UserError(
            f"Bad setting: {where} = {spec['class_path']} with {args}: {type(e).__name__}: {str(e).rstrip('.')}.{fix}"
        ) from None


def instantiate(where: str, spec: Mapping[str, Any], **injected: Any) -> Any:
    """The user's ``init_args`` over farm's ``injected`` arguments, passed only to a class that names them."""
    cls = resolve_class(where, spec["class_path"])
    named = _defaults(cls)  # jsonargparse's reading: through **kwargs to where they go (ReduceLROnPlateau's mode)
    given = {k: v for k, v in injected.items() if k in named}
    try:
        return cls(**{**given, **(spec.get("init_args") or {})})
    except (TypeError, ValueError, ModuleNotFoundError, ImportError) as e:
        raise UserError(f"Bad setting: {where} = {spec['class_path']}: {e}") from None
