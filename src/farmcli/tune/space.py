"""Search spaces as typed after ``--space``: a list (``model.cl_weight=0.1,0.3,0.5``, every value for the grid, a
choice for TPE) or a range (``optim.lr=1e-4:1e-2:log``, ``model.head.levels=1:3``; integers when both bounds are).

Values stay typed, so tune.json, the tables and best.yaml hold ``0.1`` as a number, never the text ``'0.1'``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from farmcli.errors import UserError

LIST_EXAMPLE = "e.g. --space model.cl_weight=0.1,0.3,0.5"
RANGE_EXAMPLE = "e.g. --space optim.lr=1e-4:1e-2:log or --space model.head.levels=1:3"
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")  # YAML 1.2's; PyYAML reads 1e-3 as a string


@dataclass(frozen=True)
class Dimension:
    key: str  # a dotted setting of farm train, e.g. model.live_frequency.cutoff
    values: tuple[Any, ...] = ()  # a list's values (empty for a range)
    low: int | float | None = None  # a range's bounds (None for a list)
    high: int | float | None = None
    log: bool = False  # sampled log-uniformly

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def to_dict(self) -> dict[str, Any]:
        """As tune.json stores it (a list keeps its old form, so studies made before ranges still resume)."""
        if self.is_range:
            return {"key": self.key, "low": self.low, "high": self.high, "log": self.log}
        return {"key": self.key, "values": list(self.values)}

    def text(self) -> str:
        """The values as typed, for messages."""
        if self.is_range:
            return f"{self.low}:{self.high}" + (":log" if self.log else "")
        return ",".join(value_text(v) for v in self.values)


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, so a list value (``[128,64],[256,128,64]``) stays whole."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def scalar(text: str) -> Any:
    """One value as YAML reads it (``3``, ``0.1``, ``true``, ``[64, 32]``), and ``1e-3`` as a float, not a string."""
    value = yaml.safe_load(text)
    return float(value) if isinstance(value, str) and _NUMBER.match(value.strip()) else value


def _is_range_text(values: str) -> bool:
    """``LO:HI`` or ``LO:HI:log``: a colon outside brackets and quotes, and no comma (a list)."""
    if values.strip()[:1] in ("'", '"', "[", "{"):
        return False
    return len(_split_top_level(values)) == 1 and len(_split_top_level(values, ":")) > 1


def _number(key: str, text: str, what: str) -> int | float:
    """A range bound: an int when typed as one (``3``), else a finite float (``0.1``, ``1e-3``)."""
    with contextlib.suppress(ValueError):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
        bad = f"its {what} '{text}' is not a number"
    else:
        bad = f"its {what} '{text}' is not finite"
    if not math.isfinite(value):
        raise UserError(
            f"--space {key}: {bad}; a range is LO:HI or LO:HI:log with numbers ({RANGE_EXAMPLE}). A text value "
            f"with a colon is a list item in quotes: --space '{key}=\"a:b\",c'."
        )
    return value


def parse_range(key: str, values: str) -> Dimension:
    """``LO:HI`` (uniform) or ``LO:HI:log`` (log-uniform), checked: LO < HI, and LO > 0 on a log scale."""
    parts = _split_top_level(values, ":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].lower() != "log"):
        raise UserError(
            f"--space {key}={values}: a range is LO:HI (uniform) or LO:HI:log (log-uniform), "
            f"{'not a third part ' + repr(parts[2]) if len(parts) == 3 else f'not {len(parts)} parts'}; "
            f"{RANGE_EXAMPLE}."
        )
    low, high = _number(key, parts[0], "lower bound"), _number(key, parts[1], "upper bound")
    log = len(parts) == 3
    if low >= high:
        raise UserError(
            f"--space {key}={values}: the lower bound {low} is not below the upper bound {high}; give LO:HI "
            f"with LO < HI (a single value is --space {key}={low}, or fix it with --{key} {low})."
        )
    if log and low <= 0:
        raise UserError(
            f"--space {key}={values}: a log range needs a lower bound above 0, got {low}; give a positive LO "
            f"(e.g. {key}=1e-4:{high}:log) or drop ':log' for a uniform range."
        )
    return Dimension(key, low=low, high=high, log=log)


def _same(a: Any, b: Any) -> bool:
    """Two listed values Optuna cannot tell apart: equal in Python (``1``, ``1.0``, ``true``) or the same text."""
    return repr(a) == repr(b) or (is_scalar(a) and is_scalar(b) and a == b)


def is_scalar(v: Any) -> bool:
    """A value Optuna stores as itself."""
    return v is None or isinstance(v, (bool, int, float, str))


def parse_dimension(text: str) -> Dimension:
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not key or not values.strip():
        raise UserError(f"--space expects KEY=V1,V2,... or KEY=LO:HI[:log], got '{text}'; {LIST_EXAMPLE}.")
    if _is_range_text(values):
        return parse_range(key, values.strip())
    raw = _split_top_level(values)
    if any(not r for r in raw):
        raise UserError(f"--space {text}: an empty value in the list; {LIST_EXAMPLE}.")
    try:
        parsed = tuple(scalar(r) for r in raw)
    except yaml.YAMLError as e:
        raise UserError(f"--space {text}: a value is not readable ({e}); {LIST_EXAMPLE}.") from None
    for i, j in itertools.combinations(range(len(parsed)), 2):
        if _same(parsed[i], parsed[j]):
            raise UserError(f"--space {text}: the value {raw[j]} is listed twice (as {raw[i]}); give each once.")
    return Dimension(key, parsed)


def parse_space(items: Sequence[str]) -> list[Dimension]:
    dims = [parse_dimension(s) for s in items]
    keys = [d.key for d in dims]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--space names {', '.join(twice)} more than once; give all its values in one --space.")
    return dims


def grid(space: Sequence[Dimension]) -> Iterator[dict[str, Any]]:
    """Every combination, in the order the values were given (the paper's grid search); lists only."""
    assert not any(d.is_range for d in space), "a grid has no ranges (farmcli.tune.study.check refuses them)"
    for combo in itertools.product(*(d.values for d in space)):
        yield {d.key: v for d, v in zip(space, combo)}


def grid_size(space: Sequence[Dimension]) -> int:
    return math.prod(len(d.values) for d in space)


def corners(space: Sequence[Dimension]) -> list[dict[str, Any]]:
    """Each listed value and range bound once, the rest left as is: enough to check a sampled space up front."""
    return [{d.key: v} for d in space for v in ((d.low, d.high) if d.is_range else d.values)]


def value_text(v: Any) -> str:
    """A value as the command line spells it (YAML flow style): ``0.1``, ``[1, 2]``, ``x``."""
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def as_overrides(params: dict[str, Any]) -> list[str]:
    """``{"model.cl_weight": 0.3}`` -> ``["--model.cl_weight=0.3"]`` in farm train's KEY=VALUE form."""
    return [f"--{k}={value_text(v)}" for k, v in params.items()]


def label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"
