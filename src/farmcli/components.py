"""The class settings of a run config (loggers, callbacks, the optimizer, the scheduler), after jsonargparse has
resolved their classes and checked their arguments' names and types (farmcli/config.py): what farm adds.

A run config keeps the arguments a user changed, not every default of the class, so that what farm injects
where the user said nothing still applies (a logger's folder and name, a ModelCheckpoint's dirpath, the
optimizer's ``optim.lr``, ReduceLROnPlateau's mode from its monitor's direction). Each object is built once with
stand-ins at config time, so a bad argument value is named now and not after an epoch.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from farmcli.errors import UserError

KINDS = {
    "trainer.logger": "lightning.pytorch.loggers",
    "trainer.callbacks": "lightning.pytorch.callbacks",
    "lr_scheduler": "torch.optim.lr_scheduler",
    "optimizer": "torch.optim",
}
"""Where a short class name of a run config written before jsonargparse resolved them is found."""


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
    p.add_class_arguments(cls, fail_untyped=False)
    return _plain(p.get_defaults().as_dict())


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    """A class's keyword arguments, with those its ``**kwargs`` passes to a parent's ``__init__`` (Lightning's
    ReduceLROnPlateau takes torch's ``mode`` so), as jsonargparse reads them."""
    out: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters
        out.update(
            {k: p for k, p in params.items() if k not in out and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        )
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break
    out.pop("self", None)
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else x


def resolve_class(where: str, class_path: str) -> type:
    """The class a spec names (a dotted path; a short name in the kind's module, as older run configs hold)."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or KINDS[where]), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"Bad setting: {where} = {class_path!r}: cannot import it ({e}).") from None


def _try(where: str, spec: Mapping[str, Any]) -> None:
    """Build the object with stand-ins for what farm injects: a callback is constructed; an optimizer steps a
    dummy parameter; a scheduler runs three epochs on one (it must neither divide by zero nor make the learning
    rate negative or non-finite). Loggers are built only in the run (they make folders)."""
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
        raise UserError(f"Bad setting: {where} = {spec['class_path']} with {args}: {type(e).__name__}: {e}") from None


def instantiate(where: str, spec: Mapping[str, Any], **injected: Any) -> Any:
    """Build one spec's object: the user's ``init_args`` over farm's own arguments (``injected``, passed only to
    a class that names them: a ``**kwargs`` may pass them on, as wandb.init does)."""
    cls = resolve_class(where, spec["class_path"])
    named = _parameters(cls)
    given = {k: v for k, v in injected.items() if k in named}
    try:
        return cls(**{**given, **(spec.get("init_args") or {})})
    except (TypeError, ValueError, ModuleNotFoundError, ImportError) as e:
        raise UserError(f"Bad setting: {where} = {spec['class_path']}: {e}") from None
