"""The paper's result tables from run evaluations: Table 1 (variants x tasks x metrics) and Table 4 (gain per group).

Each cell is the mean +- standard deviation over seeds. Differences to FARM are paired by seed: a mark (*)
says the mean difference is larger than twice its standard error, so the reader can tell a gap from noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from farmcli.data.schema import TASKS
from farmcli.metric_names import KINDS
from farmcli.tables_io import csv_text, markdown

COLUMNS = (*TASKS, "mean")
"""The six tasks and their mean: the paper's tables are per task, a verdict needs the mean (paired by seed)."""
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


def table1(evals: Mapping[str, Mapping[int, dict]], labels: Mapping[str, str], group: str = "full") -> dict:
    """Rows: base, farm, Improve (farm - base), other variants (marked where they differ from farm), oracle."""
    order = [v for v in ("base", "farm") if v in evals] + [v for v in evals if v not in ("base", "farm")]
    rows: list[dict[str, Any]] = []
    for variant in order:
        runs = evals[variant]
        cells: dict[str, dict] = {}
        for task in COLUMNS:
            for kind in KINDS:
                per_seed = {s: _metric(ev, group, task, kind) for s, ev in runs.items()}
                cell = _stats(list(per_seed.values()))
                if variant != "farm" and "farm" in evals:
                    farm = {s: _metric(ev, group, task, kind) for s, ev in evals["farm"].items()}
                    diff = _paired(per_seed, farm)
                    cell["vs_farm"] = diff
                    cell["mark"] = diff["mark"]
                cells[f"{task}/{kind}"] = cell
        rows.append({"row": labels.get(variant, variant), "variant": variant, "seeds": sorted(runs), "cells": cells})
        if variant == "farm" and "base" in evals:
            improve: dict[str, dict] = {}
            for task in COLUMNS:
                for kind in KINDS:
                    farm = {s: _metric(ev, group, task, kind) for s, ev in evals["farm"].items()}
                    base = {s: _metric(ev, group, task, kind) for s, ev in evals["base"].items()}
                    improve[f"{task}/{kind}"] = _paired(farm, base)
            rows.append({"row": "Improve", "variant": None, "seeds": None, "cells": improve})
    oracle = _oracle(evals, group)
    if oracle:
        rows.append({"row": "Oracle (true p)", "variant": None, "seeds": None, "cells": oracle})
    return {"group": group, "unit": "percent", "rows": rows}


def _oracle(evals: Mapping[str, Mapping[int, dict]], group: str) -> dict | None:
    for runs in evals.values():
        for ev in runs.values():
            if ev.get("oracle"):
                return {f"{t}/{k}": _single(_metric(ev, group, t, k, "oracle")) for t in COLUMNS for k in KINDS}
    return None


def _single(mean: float | None) -> dict:
    """A cell with one value and no spread (the oracle is the same for every seed)."""
    return {"mean": mean, "std": None, "n": 1}


def table4(evals: Mapping[str, Mapping[int, dict]], groups: Sequence[str]) -> dict | None:
    """AUC gain of FARM over base (points, paired by seed) per activity group and task, and of the six-task mean."""
    if "farm" not in evals or "base" not in evals:
        return None
    rows = []
    for group in (*groups, "full"):
        cells = {}
        for task in COLUMNS:
            farm = {s: _metric(ev, group, task, "auc") for s, ev in evals["farm"].items()}
            base = {s: _metric(ev, group, task, "auc") for s, ev in evals["base"].items()}
            cells[task] = _paired(farm, base)
        rows.append({"group": group, "cells": cells})
    return {"metric": "auc", "unit": "percentage points", "rows": rows}


def fmt(cell: dict | None, signed: bool = False) -> str:
    if not cell or cell.get("mean") is None:
        return "-"
    m = f"{cell['mean']:+.2f}" if signed else f"{cell['mean']:.2f}"
    s = f" ± {cell['std']:.2f}" if cell.get("std") is not None else ""
    return m + s + (f" {MARK}" if cell.get("mark") else "")


def table1_markdown(t1: dict, header: str = "") -> str:
    cols = [f"{task} {kind.upper()}" for task in COLUMNS for kind in KINDS]
    rows = [
        [row["row"], *(fmt(row["cells"].get(f"{t}/{k}"), row["row"] == "Improve") for t in COLUMNS for k in KINDS)]
        for row in t1["rows"]
    ]
    lines = [
        header,
        "",
        *markdown([None, *cols], rows, "l" + "r" * len(cols)),
        "",
        f"Cells: mean ± standard deviation over seeds, in percent ({t1['group']} test population); mean = "
        f"the six tasks' mean. "
        f"Improve = FARM − Base in points, paired by seed. {MARK} = differs from FARM (for Improve: from "
        f"zero) by more than twice the standard error of the paired difference.",
        "",
    ]
    return "\n".join(lines)


def table4_markdown(t4: dict, header: str = "") -> str:
    rows = [[row["group"], *(fmt(row["cells"][t], signed=True) for t in COLUMNS)] for row in t4["rows"]]
    lines = [
        header,
        "",
        *markdown(["group", *COLUMNS], rows, "l" + "r" * len(COLUMNS)),
        "",
        f"Cells: AUC of FARM minus AUC of the base in percentage points, mean ± standard deviation over "
        f"seeds (paired; mean = of the six tasks' mean AUC); {MARK} = larger than twice its standard error.",
        "",
    ]
    return "\n".join(lines)


def table1_csv(t1: dict) -> str:
    def line(row: dict, t: str, k: str) -> list:
        c = row["cells"].get(f"{t}/{k}") or {}
        vs = c.get("vs_farm") or {}
        mark = int(bool(c.get("mark"))) if "mark" in c else ""
        means = (_num(c.get("mean")), _num(c.get("std")), c.get("n", ""), _num(vs.get("mean")), _num(vs.get("se")))
        return [row["row"], row["variant"] or "", t, k, *means, mark]

    columns = ["row", "variant", "task", "metric", "mean", "std", "n", "diff_vs_farm", "se_vs_farm", "mark"]
    return csv_text(columns, (line(row, t, k) for row in t1["rows"] for t in COLUMNS for k in KINDS))


def table4_csv(t4: dict) -> str:
    cells = ((row["group"], t, row["cells"][t]) for row in t4["rows"] for t in COLUMNS)
    return csv_text(
        ["group", "task", "auc_gain_mean", "std", "se", "n", "mark"],
        ([g, t, _num(c["mean"]), _num(c["std"]), _num(c["se"]), c["n"], int(c["mark"])] for g, t, c in cells),
    )


def _num(x) -> str:
    return "" if x is None else f"{x:.4f}"
