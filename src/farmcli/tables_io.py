"""Result tables as CSV or Markdown files, written atomically beside their JSON: the layout of every table farm
writes (ablate, tune, eval, report); each caller formats its own numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from farmcli.io import write_json, write_text


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A header line and a line per row, quoted as the csv module does; a cell of None or "" is empty."""
    buf = io.StringIO()
    csv.writer(buf).writerows([columns, *rows])
    return buf.getvalue()


def markdown(columns: Sequence[str | None], rows: Iterable[Sequence[Any]], align: str) -> list[str]:
    """A Markdown table's lines; ``align``: ``l`` or ``r`` per column; a None cell is empty (an untitled header)."""

    def line(cells: Sequence[Any]) -> str:
        return "|" + "".join(" |" if c is None else f" {c} |" for c in cells)

    return [line(columns), "|" + "".join("---:|" if a == "r" else "---|" for a in align), *map(line, rows)]


def write_table(stem: Path, *, md: str | None = None, csv: str | None = None, json: Any = None) -> list[Path]:
    """Write STEM.md, STEM.csv and STEM.json (those given: text, text, an object) atomically; returns their paths."""
    written = []
    for suffix, content in ((".md", md), (".csv", csv), (".json", json)):
        if content is not None:
            path = stem.with_name(stem.name + suffix)
            (write_json if suffix == ".json" else write_text)(path, content)
            written.append(path)
    return written
