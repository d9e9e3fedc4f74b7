"""The plugin registry (as timm's): FARM's slots are filled by components chosen by name with ``register``, ``get``
and ``list``. Built-ins (``farmcli.model``) and the ``farmcli.plugins`` entry points (a module that registers, or a
callable called once) load lazily on the first ``get`` or ``list``. The contracts are :mod:`farmcli.slots`."""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from farmcli.errors import UserError
from farmcli.slots import SLOT_NAMES as SLOTS

ENTRY_POINT_GROUP = "farmcli.plugins"
_BUILTIN_MODULES = (
    "farmcli.model.frequency",
    "farmcli.model.frequency_identity",
    "farmcli.model.align",
    "farmcli.model.fuse",
    "farmcli.model.heads",
)
MOVED = {("fuse", "cross_attention_null"): "experiments.plugins.fuse_null.NullEventCrossAttentionFuse"}
"""Components that left the library for the repository's experiments/ (research only, issue 35): (slot, name) ->
class path. A config naming one loads it from there where ``experiments`` is importable, else is told where it went."""

_components: dict[str, dict[str, Callable[..., Any]]] = {slot: {} for slot in SLOTS}
_loaded = False

T = TypeVar("T", bound=Callable[..., Any])


def _check_slot(slot: str) -> None:
    if slot not in _components:
        raise UserError(f"Unknown slot '{slot}'. Known slots: {', '.join(SLOTS)}.")


def register(slot: str, name: str) -> Callable[[T], T]:
    """Decorator: make ``obj`` the component ``name`` of ``slot`` (``@register("fuse", "cross_attention")``)."""
    _check_slot(slot)

    def decorator(obj: T) -> T:
        known = _components[slot].get(name)
        # the same definition again (a module reloaded) is harmless; two under one name would make configs ambiguous
        if known is not None and _qualname(known) != _qualname(obj):
            raise ValueError(
                f"{slot} '{name}' is already registered by {_qualname(known)}; cannot register {_qualname(obj)}."
            )
        _components[slot][name] = obj
        return obj

    return decorator


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def load_plugins(force: bool = False) -> None:
    """Import the built-in components and every ``farmcli.plugins`` entry point (once, unless ``force``)."""
    global _loaded
    if _loaded and not force:
        return
    _loaded = True  # set first: a plugin that calls get() while loading must not recurse
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:  # a broken third-party plugin must not take the built-ins down with it
            warnings.warn(
                f"farmcli plugin '{ep.name}' ({ep.value}) failed to load: {type(e).__name__}: {e}", stacklevel=2
            )


def get(slot: str, name: str) -> Callable[..., Any]:
    """The component ``name`` of ``slot``; an unknown slot or name is a UserError naming the known ones."""
    _check_slot(slot)
    load_plugins()
    if name in _components[slot]:
        return _components[slot][name]
    if (slot, name) in MOVED:
        return _moved(slot, name)
    if "." in name.strip("."):  # a class_path, as LightningCLI takes one: my_pkg.fuse.MeanFuse
        return _import(slot, name)
    known = ", ".join(sorted(_components[slot])) or "(none)"
    raise UserError(
        f"Unknown {slot} component '{name}'. Known: {known}; or give a class path (package.module.Class)."
    ) from None


def _moved(slot: str, name: str) -> Callable[..., Any]:
    """A component of ``MOVED``: its module registers it when imported (from the repository root)."""
    path = MOVED[(slot, name)]
    module = path.rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"{slot} '{name}' is a research component and left farmcli (issue 35): it is "
            f"{module.replace('.', '/')}.py in the farmcli repository, not installed with the package "
            f"(experiments/README.md). Load it from the repository root with the root on the path, under this name "
            f"(PYTHONPATH=. farm ... or python -m farmcli ...) or by its class path: --model.{slot} {path}. "
            f"({type(e).__name__}: {e})"
        ) from None
    # imported before and unregistered since: the class itself
    return _components[slot][name] if name in _components[slot] else _import(slot, path)


def _import(slot: str, path: str) -> Callable[..., Any]:
    """A component by its import path (FARM checks it against the slot's Protocol when it builds it)."""
    module, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{slot} component '{path}': cannot import it ({type(e).__name__}: {e}).") from None
    if not callable(obj):
        raise UserError(f"{slot} component '{path}' is not a class or function.")
    _check_widths(slot, path, obj)
    return obj


def _check_widths(slot: str, path: str, obj: Callable[..., Any]) -> None:
    """A callable not built with its slot's widths as keywords (os.path.join, torch.nn.Linear) is no component."""
    import inspect

    from farmcli.slots import SLOTS as CONTRACTS

    widths = CONTRACTS[slot].injected
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()) or set(widths) <= set(params):
        return
    takes = ", ".join(k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)) or "nothing"
    raise UserError(
        f"model.{slot} = {path} is not a {slot} component: FARM builds one with the widths "
        f"{', '.join(widths)} as keyword arguments, and {path} takes {takes}. A component implements the slot's "
        f"Protocol (farmcli/slots.py; docs/examples/mean_fuse.py is one)."
    )


def list_components(slot: str | None = None) -> builtins.list[str] | dict[str, builtins.list[str]]:
    """Sorted names of one slot's components, or ``{slot: names}`` for every slot."""
    load_plugins()
    if slot is None:
        return {s: sorted(_components[s]) for s in SLOTS}
    _check_slot(slot)
    return sorted(_components[slot])


list = list_components  # timm-style name; shadows the builtin only as ``registry.list``

__all__ = ["SLOTS", "ENTRY_POINT_GROUP", "register", "get", "list", "list_components", "load_plugins"]
