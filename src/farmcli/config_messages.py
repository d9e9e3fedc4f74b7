"""jsonargparse's parse errors as farm's messages: the key, the value given, what it must be, and the fix."""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

FIX = (
    "Settings are data.*, model.*, optim.*, fit.*, trainer.*, optimizer, lr_scheduler, seed and variant; "
    "`farm train --print-config` shows them all."
)


def given_values(layers: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Every value the layers and the command line give, by dotted key (the last wins): what a message shows."""
    out: dict[str, Any] = {}

    def walk(node: Any, path: str, item: bool = False) -> None:
        if not item:
            out[path] = node
        if isinstance(node, list):  # a list of classes (trainer.callbacks): each one's arguments under the list's key
            for x in node:
                walk(x, path, item=True)
        elif isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
            for k, v in (node["init_args"] if isinstance(node.get("init_args"), Mapping) else {}).items():
                walk(v, f"{path}.{k}")  # as jsonargparse names a class's argument

    for layer in layers:
        walk(layer, "")
    out.update({key: as_value(raw) for key, raw in pairs})
    out.pop("", None)
    return out


def as_value(raw: str) -> Any:
    """A command-line value as YAML reads it (``[64, 32]`` a list); "" and text YAML cannot read stay text."""
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def explain(e: Exception, given: Mapping[str, Any], known: Sequence[str] = (), prefix: str = "") -> str:
    """A parse error as 'Bad setting: KEY = VALUE: what it must be'; ``prefix`` places a component's keys."""
    text = str(e)
    unknown = re.search(r"unrecognized arguments: --?([^\s=]+)", text) or re.search(
        r'Key "([^"]+)" is not expected', text
    )
    if unknown:
        key = unknown.group(1).rstrip("+")
        return f"Bad setting: there is no setting {prefix}{key}.{near(key, known)}"
    keys = re.findall(r'Parser key "([^"]+)"', text)
    if not keys:
        return f"Bad setting: {_short(text)}"
    key = f"{prefix}{keys[0]}"
    cls = re.search(r"Problem with given class_path '([\w.]+)'", text)
    if cls and key in KINDS and cls.group(1).rpartition(".")[2] == KINDS[key][1]:  # init_args without a class
        default = " (farm's default Adam takes optim.lr, optim.weight_decay)" if key == "optimizer" else ""
        return (
            f"Bad setting: {key} = {given.get(key)!r}: give a class name (e.g. {KINDS[key][2]}) or "
            f"{{class_path: NAME, init_args: {{...}}}}{default}."
        )
    if cls:  # a class setting's argument: its name or its value
        option = re.search(r"Option '(\w+)' is not accepted", text)
        if option:
            module, _, name = cls.group(1).rpartition(".")
            signature = inspect.signature(getattr(importlib.import_module(module), name)).parameters
            takes = [k for k in signature if k not in ("self", "params", "optimizer", "args", "kwargs")]
            return (
                f"Bad setting: {key}.{option.group(1)}: {cls.group(1)} takes no argument '{option.group(1)}'."
                f"{near(option.group(1), takes)} It takes: {', '.join(takes)}."
            )
        if len(keys) > 1:
            sub = f"{key}.{keys[1]}"
            return f"Bad setting: {_typed(text.split(cls.group(0), 1)[1], sub, given.get(sub))} ({cls.group(1)})"
    path = re.search(r"dot import path string: ([\w.]+)|Import path ([\w.]+) does not correspond", text)
    if key in KINDS and path:
        return _not_a_class(key, given.get(key), text)
    return f"Bad setting: {_typed(text, key, given.get(key))}"


KINDS = {
    "trainer.logger": ("lightning.pytorch.loggers", "Logger", "TensorBoardLogger"),
    "trainer.callbacks": ("lightning.pytorch.callbacks", "Callback", "LearningRateMonitor"),
    "lr_scheduler": ("torch.optim.lr_scheduler", "LRScheduler", "CosineAnnealingLR"),
    "optimizer": ("torch.optim", "Optimizer", "AdamW"),
}
"""Each class setting's module (where a short name is found), base class and an example of one."""


def _not_a_class(key: str, value: Any, text: str) -> str:
    module_name, base_name, _ = KINDS[key]
    module = importlib.import_module(module_name)
    base = getattr(module, base_name)
    names = sorted(n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, base) and c is not base)
    name = value if isinstance(value, str) else str(value)
    return (
        f"Bad setting: {key} = {name!r} is not a {base_name} of {module_name}.{near(name, names)} Known: "
        f"{', '.join(names)}; or give a dotted class_path."
    )


def near(name: str, names: Sequence[str]) -> str:
    found = difflib.get_close_matches(name, list(names), n=1)
    return f" Did you mean '{found[0]}'?" if found else ""


_TYPE_NAMES = {"NoneType": "null", "str": "a string", "int": "an integer", "float": "a number", "bool": "true/false"}


def _typed(text: str, key: str, node: Any) -> str:
    """jsonargparse's message about one key as 'KEY = VALUE: expected TYPE' (naming the type and the choices)."""
    shown = f"{key} = {node!r}"
    numeric = re.search(r"<class '(float|int)'>|Not of type", text)
    if isinstance(node, (float, str)) and not math.isfinite(_as_float(node)) and (isinstance(node, float) or numeric):
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
        if choices:  # the choices say which strings
            names = [n for n in names if n not in ("a string", "list")] + [
                "one of " + ", ".join(dict.fromkeys(choices))
            ]
        if names:
            return f"{shown}: expected {' or '.join(dict.fromkeys(names))}."
    literal = re.search(r"Literal\[(.*?)\]", text)
    if literal:
        return f"{shown}: choose one of {literal.group(1)}."
    expected = re.search(r"Expected a <class '(?:[\w.]*\.)?(\w+)'>", text)
    if expected:
        return f"{shown}: expected {_TYPE_NAMES.get(expected.group(1), expected.group(1))}."
    return f"{shown}: {_short(text)}"


def _as_float(value: float | str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0  # text that is no number is not "not finite"


def _short(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(ln.strip() for ln in lines[:6])
