"""`farm report`: the paper's analysis figures and tables for one trained run (optionally against a second).

Each module's ``section`` computes one figure or table (:mod:`.alignment` Figure 3, :mod:`.attention` Figure 4,
:mod:`.gates` Table 3, :mod:`.curves` training curves), writes its files and returns its part of report.md and
report.json; :func:`build_report` runs them and moves the whole report into place as one step at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from farmcli import locks
from farmcli.analysis.report import alignment, attention, curves, gates
from farmcli.analysis.report.runs import SPLIT, LoadedRun, Progress, load_run, run_lines
from farmcli.analysis.report.users import choose_user
from farmcli.errors import UserError
from farmcli.io import in_the_way, move_into, output_path, read_json, staging_dir, write_json, write_text

FORMAT = "farm-report/1"  # report.json's: a directory holding it (and the files it lists) is farm's report
FILES = {**alignment.FILES, **attention.FILES, **gates.FILES, **curves.FILES, "json": "report.json", "md": "report.md"}


def build_report(
    run: str | Path,
    compare: str | Path | None = None,
    user: int | None = None,
    out: str | Path | None = None,
    max_users: int = 10_000,
    *,
    overwrite: bool = False,
    batch_size: int = 4096,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> Path:
    """Write the report of ``run`` (``compare`` overlaid in Figure 3) to ``out``; returns report.md's path.

    Bad input raises UserError before any model pass. The default ``out``, RUN/report, is the run's own: an earlier
    report there is replaced; elsewhere only with ``overwrite``.
    """
    if max_users is not None and int(max_users) < 1:
        raise UserError(f"--max-users must be at least 1, got {max_users}.")
    given = output_path(out, "--out", "report")
    if given is not None:
        locks.check_free(given, "the report", "--out")
        check_out(given, overwrite)
    main = load_run(run, device)
    if given is None:
        check_out(main.run / "report", overwrite=True)
    other = load_run(compare, device) if compare is not None else None
    if other is not None:
        warn_other_data(main, other)
    chosen = choose_user(main.store, user) if (attention.applies(main) or user is not None) else None

    out = given if given is not None else main.run / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(out, "the report", "--out"):
        check_out(out, overwrite=overwrite or given is None)  # again, now that no other farm report writes it
        # every file into a folder beside out, moved in as one step at the end: an interruption or a full disk
        # leaves out as it was (no stray figure a later `farm report` would call foreign)
        earlier = set(_written(out))
        runs: list[LoadedRun] = [main] + ([other] if other is not None else [])
        title = f"# Report: {main.name}" + (f" vs {other.name}" if other else "")
        with staging_dir(out) as stage:
            sections = {
                "figure3": alignment.section(runs, stage, max_users, batch_size, progress),
                "figure4": attention.section(main, chosen, stage),
                "table3": gates.section(main, stage, batch_size, progress),
                "curves": curves.section(runs, stage),
            }
            summary: dict[str, Any] = {"format": FORMAT, "run": str(main.run), "checkpoint": str(main.ckpt)}
            summary.update(variant=main.cfg.variant, compare=str(other.run) if other else None, split=SPLIT, files={})
            lines = [title, "", *run_lines(runs), ""]
            for key, s in sections.items():
                summary[key] = s.summary
                summary["files"].update(s.files)
                lines += [*s.lines, ""]
            summary["files"].update(md=FILES["md"], json=FILES["json"])
            write_text(stage / FILES["md"], "\n".join(lines).rstrip() + "\n")
            write_json(stage / FILES["json"], summary)
            names = [n for n in summary["files"].values() if n != FILES["json"]] + [FILES["json"]]  # the mark last
            gone = earlier - set(names)  # an earlier report's files that this one did not write
            move_into(stage, out, names, remove=gone)
    return out / FILES["md"]


def _written(out: Path) -> list[str]:
    """The files an earlier report of farm in ``out`` wrote (its report.json lists them), else []."""
    info = read_json(out / FILES["json"])
    files = info.get("files")
    if not isinstance(files, dict) or "run" not in info or info.get("format", FORMAT) != FORMAT:
        return []
    return [FILES["json"], *(n for n in files.values() if n in FILES.values() and n != FILES["json"])]


def check_out(out: Path, overwrite: bool) -> None:
    """Before any work: files in ``out`` that farm did not write are refused, an earlier report without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the report (its page, figures and tables).")
    blocker = in_the_way(out)
    if blocker is not None:
        raise UserError(f"--out {out}: {blocker} is a file, so a file is in the way where a directory is needed.")
    theirs = [n for n in FILES.values() if (out / n).exists() and n not in _written(out)]
    if theirs:
        raise UserError(
            f"--out {out} holds {', '.join(theirs)}, not written by farm report; farm leaves such files alone. "
            f"Choose another --out."
        )
    if _written(out) and not overwrite:
        raise UserError(
            f"--out {out} holds an earlier report; pass --overwrite to replace it, or choose another --out."
        )


def warn_other_data(main: LoadedRun, other: LoadedRun) -> None:
    """Figure 3 overlays the two runs' users: on other data they are other users, and the overlay says little."""
    import logging

    a, b = main.store.manifest.get("key"), other.store.manifest.get("key")
    if a and b and a != b:
        logging.getLogger("farmcli").warning(
            "--compare %s was trained on other data than %s (%s vs %s): Figure 3 overlays different users, "
            "so the two curves are not comparable. Compare runs trained on the same data.",
            other.run,
            main.run,
            other.cfg.data.source,
            main.cfg.data.source,
        )
