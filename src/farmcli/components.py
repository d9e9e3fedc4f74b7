"""Lightning loggers and callbacks and torch learning-rate schedulers named in a run config, as LightningCLI
names them: a class name (``TensorBoardLogger``), a dotted ``class_path``, or ``{class_path, init_args}``.

``--trainer.logger TensorBoardLogger``, ``--trainer.callbacks LearningRateMonitor``, ``--lr_scheduler
CosineAnnealingLR --lr_scheduler.T_max 2``; several loggers or callbacks as a list. The config check resolves
each class and its argument names before any work (importing Lightning or torch only when one is set); the
trainer and the module build them.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

from farmcli.errors import UserError

KINDS = {
    "trainer.logger": ("lightning.pytorch.loggers", "Logger"),
    "trainer.callbacks": ("lightning.pytorch.callbacks", "Callback"),
    "lr_scheduler": ("torch.optim.lr_scheduler", "LRScheduler"),
    "optimizer": ("torch.optim", "Optimizer"),
}
"""Where a short class name is looked up, and the base class a class must derive from."""

INJECTED = {"lr_scheduler": ("optimizer",), "optimizer": ("params",)}
"""Arguments farm passes itself (the run's optimizer; the model's parameter groups)."""

OWN = {"lr_scheduler": ("monitor",)}
"""Arguments that are farm's, not the class's: LightningCLI's ``lr_scheduler.monitor`` for ReduceLROnPlateau."""

SPEC_KEYS = ("class_path", "init_args")


def as_spec(value: Any, where: str) -> dict[str, Any]:
    """A class name or ``{class_path, init_args}`` as ``{class_path, init_args}``."""
    if isinstance(value, str) and value:
        return {"class_path": value, "init_args": {}}
    if isinstance(value, Mapping) and isinstance(value.get("class_path"), str) and set(value) <= set(SPEC_KEYS):
        return {"class_path": value["class_path"], "init_args": dict(value.get("init_args") or {})}
    default = " (farm's default Adam takes optim.lr, optim.weight_decay)" if where == "optimizer" else ""
    raise UserError(
        f"Bad setting: {where} = {value!r}: give a class name (e.g. {_example(where)}) or "
        f"{{class_path: NAME, init_args: {{...}}}}{default}."
    )


def as_specs(value: Any, where: str) -> list[dict[str, Any]]:
    """None, false, one spec or a list of specs -> a list of ``{class_path, init_args}``."""
    if value is None or value is False or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    return [as_spec(v, where) for v in items]


def _example(where: str) -> str:
    return {
        "trainer.logger": "TensorBoardLogger",
        "trainer.callbacks": "LearningRateMonitor",
        "optimizer": "AdamW",
    }.get(where, "CosineAnnealingLR")


def resolve_class(where: str, class_path: str) -> type:
    """The class a spec names: a short name in the kind's module, or a dotted path; it must derive from the
    kind's base class."""
    module_name, base_name = KINDS[where]
    module = importlib.import_module(module_name)
    base = getattr(module, base_name)
    if "." in class_path:
        mod, _, name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"Bad setting: {where} = {class_path!r}: cannot import it ({e}).") from None
    else:
        cls = getattr(module, class_path, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        known = sorted(
            n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base) and c is not base
        )
        raise UserError(
            f"Bad setting: {where} = {class_path!r} is not a {base_name} of {module_name}.{_near(class_path, known)} "
            f"Known: {', '.join(known)}; or give a dotted class_path."
        )
    return cls


def check(where: str, value: Any) -> list[dict[str, Any]]:
    """The specs of ``value``, each class resolved and its argument names checked (a UserError otherwise)."""
    single = where in ("lr_scheduler", "optimizer")
    specs = ([] if value is None else [as_spec(value, where)]) if single else as_specs(value, where)
    for spec in specs:
        cls = resolve_class(where, spec["class_path"])
        accepted = _arguments(cls)
        if accepted is None:
            continue
        for key in sorted(set(spec["init_args"]) - set(OWN.get(where, ()))):
            if key not in accepted or key in INJECTED.get(where, ()):
                raise UserError(
                    f"Bad setting: {where}.init_args.{key}: {cls.__name__} takes no argument '{key}'."
                    f"{_near(key, accepted)} "
                    f"It takes: {', '.join(a for a in accepted if a not in INJECTED.get(where, ()))}."
                )
    for spec in specs:
        _try(where, spec)
    return specs


def _try(where: str, spec: Mapping[str, Any]) -> None:
    """Build the object once with stand-ins for what farm injects, so a bad argument value is named now and not
    after an epoch: a callback is constructed; an optimizer steps a dummy parameter; a scheduler runs three epochs
    on one (it must neither divide by zero nor make the learning rate negative or non-finite). Loggers are built
    only in the run (they make folders)."""
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
        plateau = issubclass(resolve_class(where, spec["class_path"]), torch.optim.lr_scheduler.ReduceLROnPlateau)
        scheduler = instantiate(where, spec, optimizer=optimizer)
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


def _near(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=1)
    return f" Did you mean '{near[0]}'?" if near else ""


def _arguments(cls: type) -> list[str] | None:
    """The keyword arguments ``cls`` takes; None where it takes any (``**kwargs``)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if k != "self" and p.kind is not p.VAR_POSITIONAL]


def instantiate(where: str, spec: Mapping[str, Any], **injected: Any) -> Any:
    """Build one spec's object with farm's own arguments (``injected``) under the user's ``init_args``."""
    cls = resolve_class(where, spec["class_path"])
    named = inspect.signature(cls).parameters  # injected by name only: a **kwargs may pass them on (wandb.init)
    given = {k: v for k, v in injected.items() if k in named and named[k].kind is not named[k].VAR_KEYWORD}
    init_args = {k: v for k, v in spec["init_args"].items() if k not in OWN.get(where, ())}
    try:
        return cls(**{**given, **init_args})
    except (TypeError, ValueError, ModuleNotFoundError, ImportError) as e:
        raise UserError(f"Bad setting: {where} = {spec['class_path']}: {e}") from None
