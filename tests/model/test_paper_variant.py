"""The paper, one word away: ``--variant paper`` sets every departure that has a switch (docs/DESIGN.md, "Where we
depart from the paper") to the paper's reading, changes nothing else, and names the departures that stay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from farmcli.config import resolve
from farmcli.variants import load_variant

DESIGN = Path(__file__).parents[2] / "docs" / "DESIGN.md"

PAPERS_READING = {
    "model.live_frequency.name": "dft",  # 9: eq. 9 as written
    "model.live_frequency.params.identity": 0.0,
    "model.align.params.normalize": False,  # 3: sim = dot product
    "model.preference_grad": 1.0,  # 4: the full gradient
    "model.output_bias": "zero",  # 6: torch's init
    "optim.id_weight_decay": 0.0,  # 10: no regularisation
    "trainer.max_epochs": 1,  # 8: one pass
}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def test_the_paper_variant_sets_each_switch_to_the_papers_reading_and_nothing_else():
    paper, farm = _flat(resolve(variant="paper").to_dict()), _flat(resolve(variant="farm").to_dict())
    differ = {k for k in paper.keys() | farm.keys() if paper.get(k) != farm.get(k)} - {"variant"}
    assert differ == set(PAPERS_READING)
    assert {k: paper[k] for k in PAPERS_READING} == PAPERS_READING


def test_the_paper_variant_names_what_still_departs():
    description = load_variant("paper").description
    for words in (
        "LayerNorm",  # 1
        "x_cand",  # 2
        "same-user pairs",  # 5
        "rows with both histories",  # 13
        "behaviour tables",  # 7
        "init std",  # 6
        "eq. 10",  # 11
        "left-padded window",  # 12
        "positional encoding",  # 14
    ):
        assert words in description, words


def test_design_lists_every_reading():
    section = DESIGN.read_text().split("### Where we depart from the paper")[1].split("\n## ")[0]
    titles = re.findall(r"^\s*(\d+)\. \*\*(.+?)\*\*", section, re.M)
    assert [int(n) for n, _ in titles] == list(range(1, len(titles) + 1))
    for reading in (
        "Eq. 10: one gate MLP over the masked mean of V.",
        "Eq. 9 over the left-padded window.",
        "Eq. 14 averaged over valid rows.",
        "No positional encoding in eq. 12 and 16.",
    ):
        assert reading in [t for _, t in titles], reading
    assert "`paper` variant" in section
