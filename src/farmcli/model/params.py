"""A slot component's own hyperparameters, read and checked by jsonargparse from the component's signature.

The signature is the schema (a plugin needs no change here): FARM's injected widths (farmcli.slots) are skipped,
an unknown name is refused with the names it takes. A rule no type can state (heads divide a width) is the
component's optional static ``check_params(**params)``. Used by the run config and by FARM itself, so a model
built from Python gets the same messages as one built from YAML.
"""

from __future__ import annotations

import copy
import inspect
from argparse import ArgumentError
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from farmcli.config_messages import explain, near
from farmcli.errors import UserError
from farmcli.slots import SLOTS


@lru_cache(maxsize=64)
def _parser(slot: str, factory: Any) -> Any:
    """The component's signature as a parser, widths skipped; None where jsonargparse cannot read it (a builtin)."""
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False)
    add = p.add_class_arguments if inspect.isclass(factory) else p.add_function_arguments
    try:
        add(factory, skip=set(SLOTS[slot].injected), fail_untyped=False)
    except (ValueError, TypeError):
        return None
    return p


def check(slot: str, name: str, factory: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over the component's defaults, checked (a UserError naming ``model.SLOT.KEY``)."""
    where = f"(a parameter of the {slot} component '{name}')"
    parser = _parser(slot, factory)
    known = [] if parser is None else [a.dest for a in parser._actions if a.dest != "help"]
    takes_any = parser is None or any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    for key in sorted(set(params) - set(known)):
        if key in SLOTS[slot].injected:
            raise UserError(
                f"Bad setting: model.{slot}.{key}: FARM sets this width itself; it is not a parameter of the {slot} "
                f"component '{name}'."
            )
        if not takes_any:
            raise UserError(
                f"Bad setting: model.{slot}.{key}: the {slot} component '{name}' has no parameter '{key}'."
                f"{near(key, known)} It takes: {', '.join(known) or '(none)'}."
            )
    if parser is None:
        return dict(params)
    try:  # parsing converts lists in place
        parsed = parser.parse_object(copy.deepcopy({k: v for k, v in params.items() if k in known})).as_dict()
    except ArgumentError as e:
        raise UserError(
            f"{explain(e, {f'model.{slot}.{k}': v for k, v in params.items()}, prefix=f'model.{slot}.')} {where}"
        ) from None
    from farmcli.config_rules import non_finite

    bad = non_finite(parsed)
    if bad is not None:
        raise UserError(f"Bad setting: model.{slot}.{bad[0]} = {bad[1]}: must be a finite number. {where}")
    rules = getattr(factory, "check_params", None)
    if callable(rules):  # the rules between its parameters, without building it
        rules(**parsed)
    return {**plain(parsed), **{k: v for k, v in params.items() if k not in known}}


def plain(x: Any) -> Any:
    """jsonargparse's range-checked numbers as plain int / float and tuples as lists, as YAML writes them."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, int) and not isinstance(x, bool):
        return int(x)
    return float(x) if isinstance(x, float) else x
