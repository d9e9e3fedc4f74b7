"""The Rich renderings: what a user reads must carry the numbers it was given, in the right place."""

from __future__ import annotations

import math

from rich.console import Console

from farmcli import render
from farmcli.data.schema import TASKS


def _text(renderable, width: int = 300) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _tables(oracle: bool = True) -> dict:
    model = {
        g: {t: {"auc": 70.0 + i, "uauc": 60.0 + i, "gauc": 65.0 + i} for i, t in enumerate(TASKS)}
        for g in ("full", "low")
    }
    model["low"]["gift"]["uauc"] = None  # a group where a metric is undefined
    return {"model": model, "oracle": {"full": model["full"]} if oracle else None}


def test_eval_table_wide_has_every_task_metric_and_the_oracle_dimmed():
    text = _text(render.eval_table(_tables(), title="run: test"), width=300)
    assert "run: test" in text
    for short in (render.SHORT[t] for t in TASKS):
        assert short in text
    row = next(line for line in text.splitlines() if line.strip().startswith("low"))
    cells = row.split()
    assert cells[1:4] == ["70.00", "60.00", "65.00"] and cells[-2:] == ["-", "70.00"]  # click ... gift: UAUC undefined
    assert "oracle:full" in text


def test_eval_table_narrow_splits_by_metric():
    text = _text(render.eval_table(_tables(oracle=False), title="t", width=100), width=100)
    assert "t - AUC" in text and "t - UAUC" in text and "t - GAUC" in text and "oracle" not in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_percentages_and_missing_values():
    assert render._pct(0.12345) == "12.35%"
    assert render._pct(None) == "-" and render._pct(math.nan) == "-"
    live = {"click": (0.1, None), "like": (0.01, 0.1)}
    rates, video = render.label_rates(live, {"long_view": 0.2})
    text = _text(rates) + _text(video)
    assert "10.00%" in text and "1.00%" in text and "20.00%" in text


def test_gain_table_signs_the_gains():
    cells = {
        t: {"mean": 0.5 if t == "click" else -0.25, "std": 0.1, "se": 0.05, "mark": t == "click", "n": 3} for t in TASKS
    }
    text = _text(render.gain_table({"rows": [{"group": "low", "cells": cells}]}))
    row = next(line for line in text.splitlines() if line.strip().startswith("low"))
    assert "+0.50" in row and "-0.25" in row
    assert row.rstrip().endswith("-")  # no six-task mean in these cells: a dash, not an error


def test_store_summary_flattens_nested_keys():
    text = _text(render.store({"path": "/x", "rows": {"train": 1234567}, "history_len": 50}))
    assert "rows.train" in text and "1,234,567" in text and "history_len" in text
