"""Table 1 (variants x tasks x metrics) and Table 4 (gain per group) from run evaluations: mean +- std over seeds;
differences paired by seed and marked (*) beyond twice their standard error, to tell a gap from noise."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from farmcli.data.schema import TASKS
from farmcli.metric_names import KINDS
from farmcli.tables_io import csv_text, markdown

COLUMNS = (*TASKS, "mean")  # the paper's tables are per task; a verdict needs the mean (paired by seed)
CELLS = tuple((t, k) for t in COLUMNS for k in KINDS)  # Table 1's columns
MARK = "*"


def _stats(values: Iterable[float | None]) -> dict:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    n = len(v)
    return {
        "mean": float(v.mean()) if n else None,
        "std": float(v.std(ddof=1)) if n > 1 else None,
        "n": n,
        "values": [float(x) for x in v],
    }


def _paired(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> dict:
    """a - b over the seeds both have, with the standard error of the mean difference and the 2-SE mark."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    d = np.asarray([float(a[s] or 0.0) - float(b[s] or 0.0) for s in seeds], dtype=float)
    out = _stats(d)
    se = out["std"] / math.sqrt(len(d)) if out["std"] is not None else None
    out["se"] = se
    out["mark"] = bool(se is not None and out["mean"] is not None and abs(out["mean"]) > 2 * se)
    return out


def _metric(ev: dict, group: str, task: str, kind: str, source: str = "model") -> float | None:
    """One run's value; ``task="mean"``: the mean over the six tasks (None where one is missing)."""
    if task == "mean":
        values = [_metric(ev, group, t, kind, source) for t in TASKS]
        return None if None in values else sum(v or 0.0 for v in values) / len(values)
    try:
        return ev[source][group][task][kind]
    except (KeyError, TypeError):
        return None


def _per_seed(runs: Mapping[int, dict], group: str, task: str, kind: str) -> dict[int, float | None]:
    return {s: _metric(ev, group, task, kind) for s, ev in runs.items()}


def _gain(evals: Mapping[str, Mapping[int, dict]], group: str, task: str, kind: str) -> dict:
    """FARM - base, paired by seed."""
    return _paired(_per_seed(evals["farm"], group, task, kind), _per_seed(evals["base"], group, task, kind))


def table1(evals: Mapping[str, Mapping[int, dict]], labels: Mapping[str, str], group: str = "full") -> dict:
    """Rows: base, farm, Improve (farm - base), other variants (marked where they differ from farm), oracle."""
    order = [v for v in ("base", "farm") if v in evals] + [v for v in evals if v not in ("base", "farm")]
    rows: list[dict[str, Any]] = []
    for variant in order:
        cells: dict[str, dict] = {}
        for task, kind in CELLS:
            per_seed = _per_seed(evals[variant], group, task, kind)
            cell = cells[f"{task}/{kind}"] = _stats(per_seed.values())
            if variant != "farm" and "farm" in evals:
                cell["vs_farm"] = _paired(per_seed, _per_seed(evals["farm"], group, task, kind))
                cell["mark"] = cell["vs_farm"]["mark"]
        rows.append(
            {"row": labels.get(variant, variant), "variant": variant, "seeds": sorted(evals[variant]), "cells": cells}
        )
        if variant == "farm" and "base" in evals:
            improve = {f"{t}/{k}": _gain(evals, group, t, k) for t, k in CELLS}
            rows.append({"row": "Improve", "variant": None, "seeds": None, "cells": improve})
    oracle = next((ev for runs in evals.values() for ev in runs.values() if ev.get("oracle")), None)
    if oracle:  # the same for every seed: one value, no spread
        cells = {f"{t}/{k}": {"mean": _metric(oracle, group, t, k, "oracle"), "std": None, "n": 1} for t, k in CELLS}
        rows.append({"row": "Oracle (true p)", "variant": None, "seeds": None, "cells": cells})
    return {"group": group, "unit": "percent", "rows": rows}


def table4(evals: Mapping[str, Mapping[int, dict]], groups: Sequence[str]) -> dict | None:
    """AUC gain of FARM over base (points, paired by seed) per activity group and task, and of the six-task mean."""
    if "farm" not in evals or "base" not in evals:
        return None
    rows = [{"group": g, "cells": {t: _gain(evals, g, t, "auc") for t in COLUMNS}} for g in (*groups, "full")]
    return {"metric": "auc", "unit": "percentage points", "rows": rows}


def fmt(cell: dict | None, signed: bool = False) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    m = f"{cell['mean']:+.2f}" if signed else f"{cell['mean']:.2f}"
    s = f" ± {cell['std']:.2f}" if cell.get("std") is not None else ""
    return m + s + (f" {MARK}" if cell.get("mark") else "")


def _page(header: str, columns: list, rows: list, note: str) -> str:
    """The table under its header, then the note on how to read its cells."""
    return "\n".join([header, "", *markdown(columns, rows, "l" + "r" * (len(columns) - 1)), "", note, ""])


def table1_markdown(t1: dict, header: str = "") -> str:
    rows = [
        [row["row"], *(fmt(row["cells"].get(f"{t}/{k}"), row["row"] == "Improve") for t, k in CELLS)]
        for row in t1["rows"]
    ]
    note = (
        f"Cells: mean ± standard deviation over seeds, in percent ({t1['group']} test population); mean = "
        f"the six tasks' mean. "
        f"Improve = FARM − Base in points, paired by seed. {MARK} = differs from FARM (for Improve: from "
        f"zero) by more than twice the standard error of the paired difference."
    )
    return _page(header, [None, *(f"{t} {k.upper()}" for t, k in CELLS)], rows, note)


def table4_markdown(t4: dict, header: str = "") -> str:
    rows = [[row["group"], *(fmt(row["cells"][t], signed=True) for t in COLUMNS)] for row in t4["rows"]]
    note = (
        f"Cells: AUC of FARM minus AUC of the base in percentage points, mean ± standard deviation over "
        f"seeds (paired; mean = of the six tasks' mean AUC); {MARK} = larger than twice its standard error."
    )
    return _page(header, ["group", *COLUMNS], rows, note)


def table1_csv(t1: dict) -> str:
    def line(row: dict, t: str, k: str) -> list:
        c = row["cells"].get(f"{t}/{k}") or {}
        vs = c.get("vs_farm") or {}
        mark = int(bool(c.get("mark"))) if "mark" in c else ""
        means = (_num(c.get("mean")), _num(c.get("std")), c.get("n", ""), _num(vs.get("mean")), _num(vs.get("se")))
        return [row["row"], row["variant"] or "", t, k, *means, mark]

    columns = ["row", "variant", "task", "metric", "mean", "std", "n", "diff_vs_farm", "se_vs_farm", "mark"]
    return csv_text(columns, (line(row, t, k) for row in t1["rows"] for t, k in CELLS))


def table4_csv(t4: dict) -> str:
    cells = ((row["group"], t, row["cells"][t]) for row in t4["rows"] for t in COLUMNS)
    return csv_text(
        ["group", "task", "auc_gain_mean", "std", "se", "n", "mark"],
        ([g, t, _num(c["mean"]), _num(c["std"]), _num(c["se"]), c["n"], int(c["mark"])] for g, t, c in cells),
    )


def _num(x) -> str:
    return "" if x is None else f"{x:.4f}"
