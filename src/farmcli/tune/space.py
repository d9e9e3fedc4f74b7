"""Search spaces as the user types them: ``--space model.cl_weight=0.1,0.3,0.5`` (any dotted setting)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from farmcli.errors import UserError


@dataclass(frozen=True)
class Dimension:
    key: str
    """A dotted setting, exactly as ``farm train`` takes it (e.g. ``model.live_frequency.cutoff``)."""
    values: tuple[Any, ...]


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so a list value (``[128,64],[256,128,64]``) stays whole."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_dimension(text: str) -> Dimension:
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("--")
    example = "e.g. --space model.cl_weight=0.1,0.3,0.5"
    if not sep or not key or not values.strip():
        raise UserError(f"--space expects KEY=V1,V2,..., got '{text}'; {example}.")
    raw = _split_top_level(values)
    if any(not r for r in raw):
        raise UserError(f"--space {text}: an empty value in the list; {example}.")
    try:
        parsed = tuple(yaml.safe_load(r) for r in raw)
    except yaml.YAMLError as e:
        raise UserError(f"--space {text}: a value is not readable ({e}); {example}.") from None
    if len(set(map(repr, parsed))) != len(parsed):
        raise UserError(f"--space {text}: a value is listed twice.")
    return Dimension(key, parsed)


def parse_space(items: Sequence[str]) -> list[Dimension]:
    dims = [parse_dimension(s) for s in items]
    keys = [d.key for d in dims]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--space names {', '.join(twice)} more than once; give all its values in one --space.")
    return dims


def grid(space: Sequence[Dimension]) -> Iterator[dict[str, Any]]:
    """Every combination, in the order the values were given (the paper's grid search)."""
    for combo in itertools.product(*(d.values for d in space)):
        yield {d.key: v for d, v in zip(space, combo)}


def grid_size(space: Sequence[Dimension]) -> int:
    n = 1
    for d in space:
        n *= len(d.values)
    return n


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``{"model.cl_weight": 0.3}`` -> ``["model.cl_weight=0.3"]`` in farm train's KEY=VALUE form."""
    return [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
        for k, v in params.items()
    ]


def label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"
