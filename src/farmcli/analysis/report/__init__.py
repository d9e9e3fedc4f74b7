"""`farm report`: the paper's analysis figures and tables for one trained run (optionally against a second).

One module per figure or table, each with a ``section`` that computes its numbers (model passes batched, under
``torch.inference_mode``, CPU by default), writes its files and returns its part of report.md and report.json:

- :mod:`.alignment`: Figure 3 shape, cos(h_video, h_live) per test user (each user's last test sample; users
  with both histories non-empty; at most ``max_users``, a seeded sample).
- :mod:`.attention`: Figure 4 shape, the cross-attention weights of one user's last test sample.
- :mod:`.gates`: Table 3 shape, the frequency gates per activity group.
- :mod:`.curves`: training curves from the run's logs.

:func:`build_report` (this module) runs them in order and writes everything (PNGs, CSVs, report.json and a
Markdown page report.md linking each figure with the numbers behind it) atomically, file by file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from farmcli.analysis.report import alignment, attention, curves, gates
from farmcli.analysis.report.runs import SPLIT, LoadedRun, Progress, load_run, run_lines
from farmcli.analysis.report.users import choose_user
from farmcli.errors import UserError
from farmcli.io import write_json, write_text

FILES = {
    **alignment.FILES,
    **attention.FILES,
    **gates.FILES,
    **curves.FILES,
    "json": "report.json",
    "md": "report.md",
}


def build_report(
    run: str | Path,
    compare: str | Path | None = None,
    user: int | None = None,
    out: str | Path | None = None,
    max_users: int = 10_000,
    *,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Path:
    """Write the report of ``run`` (and ``compare`` overlaid in Figure 3) to ``out`` (default RUN/report/).

    Returns the path of report.md. Bad input (not a run directory, unknown ``user``) raises UserError before any
    model pass.
    """
    if max_users is not None and int(max_users) < 1:
        raise UserError(f"--max-users must be at least 1, got {max_users}.")
    main = load_run(run, device)
    other = load_run(compare, device) if compare is not None else None
    chosen = choose_user(main.store, user) if (attention.applies(main) or user is not None) else None

    out = Path(out) if out is not None else main.run / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs: list[LoadedRun] = [main] + ([other] if other is not None else [])
    title = f"# Report: {main.name}" + (f" vs {other.name}" if other else "")
    sections = {
        "figure3": alignment.section(runs, out, max_users, batch_size, progress),
        "figure4": attention.section(main, chosen, out),
        "table3": gates.section(main, out, batch_size, progress),
        "curves": curves.section(runs, out),
    }
    summary: dict[str, Any] = {
        "run": str(main.run),
        "checkpoint": str(main.ckpt),
        "variant": main.cfg.variant,
        "compare": str(other.run) if other else None,
        "split": SPLIT,
        "files": {},
    }
    lines = [title, "", *run_lines(runs), ""]
    for key, s in sections.items():
        summary[key] = s.summary
        summary["files"].update(s.files)
        lines += [*s.lines, ""]
    summary["files"].update(md=FILES["md"], json=FILES["json"])
    for key, name in FILES.items():  # files of an earlier report in this directory that this one did not write
        if key not in summary["files"] and (out / name).is_file():
            (out / name).unlink()
    write_json(out / FILES["json"], summary)
    md = out / FILES["md"]
    write_text(md, "\n".join(lines).rstrip() + "\n")
    return md
