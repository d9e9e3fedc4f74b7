"""What a run directory records about itself, read back: paths relative to the run, and whether it still runs.

Shared by training (which writes the records), evaluation, prediction and the report (which read them).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from farmcli.io import read_json

CKPT_STORE_KEY = "farm_store_key"
"""Written into every checkpoint: the key of the sample store it was trained on (its vocabularies)."""


def stored_path(run: Path, path: str | Path) -> str:
    """How a run records ``path``: relative to the run directory where it lies inside it, else absolute."""
    path, root = Path(path).resolve(), run.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def recorded_path(run: Path, value: str) -> Path:
    """A path a run recorded, read against the run directory. An absolute one (runs before relative paths)
    outside the run, e.g. /old/RUN/checkpoints/best.ckpt of a copied run, is read as RUN/checkpoints/best.ckpt."""
    path = Path(value)
    if not path.is_absolute():
        return run / path
    if path.is_relative_to(run.resolve()):
        return path
    mine = run / path.parent.name / path.name
    return mine if mine.exists() else path


def run_status(run: Path) -> str:
    """run.json's status, but 'killed' where it says running and its process on this host is gone (SIGKILL,
    a power cut: nothing could record the end)."""
    info = read_json(run / "run.json")
    status = str(info.get("status", "unknown"))
    if status in ("running", "evaluating") and alive(info) is False:
        return "killed"
    return status


def alive(info: dict) -> bool | None:
    """Whether the process run.json names still runs; None where it cannot tell (an older run, another host)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def status_note(run: Path) -> str | None:
    """One line for a reader of a run that did not end normally (killed, still training), else None."""
    info = read_json(run / "run.json")
    if info.get("status") not in ("running", "evaluating"):
        return None
    where = f"process {info.get('pid')} on {info.get('host')}"
    running = alive(info)
    if running is False:
        return (
            f"{run} was killed before it finished (run.json says {info['status']}, but its {where} is gone): "
            f"its checkpoints are the last ones it saved; `farm train --resume {run}` continues it."
        )
    if running:
        return f"{run} is still training ({where}): its checkpoints may still change."
    return (
        f"{run}: run.json says {info['status']}, which cannot be checked from here (an older run, or another "
        f"machine's); if it was stopped, `farm train --resume {run}` continues it."
    )
