"""A slot component's own hyperparameters, read and checked by jsonargparse from the component's signature.

The component's signature is the schema (a third-party component needs no change here): the widths FARM
injects (farmcli.slots) are skipped, every other typed argument is checked, an unknown name is refused
with the names it takes. A rule between parameters that no type can state (a PLE gate needs an expert, heads
divide a width) is the component's optional static ``check_params(**params)``, which its constructor calls too. Used by the run config (which also spells out the defaults into config.yaml) and by
FARM itself, so a model built from Python gets the same messages as one built from a YAML file.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import re
from argparse import ArgumentError
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from farmcli.errors import UserError
from farmcli.slots import SLOTS


@lru_cache(maxsize=64)
def _parser(slot: str, factory: Any) -> Any:
    """A jsonargparse parser of the component's signature without the injected widths; None when
    jsonargparse cannot read the signature (a builtin or C callable)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False)
    skip: set[str | int] = set(SLOTS[slot].injected)
    try:
        if inspect.isclass(factory):
            p.add_class_arguments(factory, skip=skip, fail_untyped=False)
        else:
            p.add_function_arguments(factory, skip=skip, fail_untyped=False)
    except (ValueError, TypeError):
        return None
    return p


def accepted(slot: str, factory: Any) -> list[str] | None:
    """The hyperparameter names a component takes (None: it takes any keyword)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return None
    return [k for k, p in parameters.items() if k not in SLOTS[slot].injected and p.kind is not p.VAR_POSITIONAL]


def defaults(slot: str, factory: Any) -> dict[str, Any]:
    """The component's hyperparameters that have defaults (tuples as lists, as YAML writes them)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in parameters.items()
        if k not in SLOTS[slot].injected and p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def check(slot: str, name: str, factory: Any, params: Mapping[str, Any]) -> None:
    """Refuse an unknown or injected name and a wrong type, naming ``model.SLOT.KEY``."""
    where = f"(a parameter of the {slot} component '{name}')"
    injected = sorted(set(params) & set(SLOTS[slot].injected))
    if injected:
        raise UserError(
            f"Bad setting: model.{slot}.{injected[0]}: FARM sets this width itself; it is not a parameter of the "
            f"{slot} component '{name}'."
        )
    names = accepted(slot, factory)
    if names is not None:
        for key in sorted(set(params) - set(names)):
            near = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise UserError(
                f"Bad setting: model.{slot}.{key}: the {slot} component '{name}' has no parameter '{key}'.{hint} "
                f"It takes: {', '.join(names) or '(none)'}."
            )
    parser = _parser(slot, factory)
    if parser is None:
        return
    known = {a.dest for a in parser._actions}
    try:
        given = copy.deepcopy({k: v for k, v in params.items() if k in known})  # parsing converts lists in place
        parsed = parser.parse_object(given).as_dict()
    except ArgumentError as e:
        raise UserError(f"Bad setting: model.{slot}.{explain(e, params)} {where}") from None
    bad = non_finite(parsed)
    if bad is not None:
        key, value = bad
        raise UserError(f"Bad setting: model.{slot}.{key} = {value}: must be a finite number. {where}")
    rules = getattr(factory, "check_params", None)
    if callable(rules):  # the rules between its parameters, without building it
        rules(**{k: v for k, v in params.items() if k in known})


def non_finite(x: Any, path: str = "") -> tuple[str, float] | None:
    """The first inf or nan in a nested mapping (as (dotted key, value)): no setting means either, and one in a
    weight or a width surfaces only later as a NaN loss."""
    if isinstance(x, Mapping):
        for k, v in x.items():
            found = non_finite(v, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            found = non_finite(v, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(x, float) and not math.isfinite(x):
        return path, x
    return None


_TYPE_NAMES = {"NoneType": "null", "str": "a string", "int": "an integer", "float": "a number", "bool": "true/false"}


def explain(e: Exception, d: Mapping[str, Any]) -> str:
    """jsonargparse's message as 'KEY = VALUE: expected TYPE' (naming the key, the type and the choices)."""
    text = str(e)
    key_match = re.search(r'Parser key "([^"]+)"', text)
    if not key_match:
        return _short(e)
    key = key_match.group(1)
    node: Any = d
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    shown = f"{key} = {node!r}"
    numeric = re.search(r"<class '(float|int)'>|Not of type", text)
    if (
        isinstance(node, float)
        and not math.isfinite(node)
        or isinstance(node, str)
        and _is_non_finite(node)
        and numeric
    ):
        return f"{key} = {node}: must be a finite number."
    each = "each entry " if isinstance(node, (list, tuple)) else ""
    restriction = re.search(r"does not conform to restriction (.+)$", text, re.M)
    if restriction:
        bounds = re.findall(r"v\s*(>=|<=|>|<)\s*([-+\w.]+)", restriction.group(1))
        return f"{shown}: {each}must be " + " and ".join(f"{op} {bound}" for op, bound in bounds) + "."
    if re.search(r"Not of type \w+: .*(not an integer|invalid literal for int)", text):
        return f"{shown}: expected {'integers' if each else 'an integer'}."
    if re.search(r"Not of type \w+: .*could not convert string to float", text):
        return f"{shown}: expected {'numbers' if each else 'a number'}."
    subtypes = re.search(r"Subtypes: \[(.*)\] Errors", text, re.S) or re.search(r"Subtypes: \[(.*)\]", text, re.S)
    if subtypes:
        body = subtypes.group(1)
        names = [_TYPE_NAMES.get(n, n) for n in re.findall(r"<class '(?:[\w.]*\.)?(\w+)'>", body)]
        choices = [c for group in re.findall(r"Literal\[(.*?)\]", body) for c in group.split(", ")]
        if choices:
            names.append("one of " + ", ".join(dict.fromkeys(choices)))
        if names:
            return f"{shown}: expected {' or '.join(dict.fromkeys(names))}."
    literal = re.search(r"Literal\[(.*?)\]", text)
    if literal:
        return f"{shown}: choose one of {literal.group(1)}."
    expected = re.search(r"Expected a <class '(?:[\w.]*\.)?(\w+)'>", text)
    if expected:
        return f"{shown}: expected {_TYPE_NAMES.get(expected.group(1), expected.group(1))}."
    return _short(e)


def _is_non_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _short(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return " ".join(ln.strip() for ln in lines[:6])
