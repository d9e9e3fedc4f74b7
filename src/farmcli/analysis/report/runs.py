"""The runs a report reads: a run directory loaded for analysis, and the helpers every section shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from farmcli.errors import UserError
from farmcli.io import read_json

SPLIT = "test"  # every figure and table is computed on this split of each run's own sample store

Progress = Callable[[str, int, int | None], None]


@dataclass
class LoadedRun:
    """A run directory with its config, checkpoint, model (eval mode, on ``device``) and sample store."""

    run: Path
    ckpt: Path
    cfg: Any
    module: Any
    store: Any
    device: torch.device
    label: str  # the variant's label (e.g. "FARM", "w/o C-PA"), or its name

    @property
    def farm(self) -> Any:
        return self.module.farm

    @property
    def name(self) -> str:
        return self.run.name

    def slot(self, slot: str) -> str:
        return getattr(self.cfg.model, slot).name

    def batches(self, idx: np.ndarray | None, batch_size: int, progress: Progress | None = None, what: str = ""):
        """Model batches of the test split (every sample, or ``idx``) on the run's device, reporting progress."""
        from farmcli.evaluation import batches

        n = self.store.n(SPLIT) if idx is None else len(idx)
        done = 0
        for _, batch in batches(self.store, SPLIT, idx, batch_size, self.device):
            yield batch
            done += len(batch["labels"])
            if progress:
                progress(what, done, n)


def load_run(target: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """A run directory (best checkpoint) or a .ckpt inside one; anything else is a UserError."""
    from farmcli.config import resolve
    from farmcli.evaluation import load_module, locate, run_store

    target = Path(target)
    if target.is_dir() and not (target / "config.yaml").is_file():
        raise UserError(f"{target}: not a run directory (no config.yaml). Runs are made by `farm train`.")
    run, ckpt = locate(target)
    cfg = resolve([run / "config.yaml"])
    store = run_store(run, cfg)
    device = torch.device(device)
    module = load_module(ckpt, store).to(device).eval()  # a checkpoint trained on other data is refused
    return LoadedRun(run, ckpt, cfg, module, store, device, variant_label(cfg.variant))


def variant_label(variant: str) -> str:
    """The label a built-in variant gives itself ("FARM", "w/o C-PA", ...); otherwise the variant name."""
    from farmcli.variants import VARIANTS_DIR, load_variant

    path = VARIANTS_DIR / f"{variant}.yaml"
    if path.is_file():
        try:
            return load_variant(str(path)).label
        except UserError:
            pass
    return variant


def named(progress: Progress | None, what: str) -> Progress | None:
    """The progress callback with its step renamed."""
    return None if progress is None else (lambda _what, done, total: progress(what, done, total))


def percentiles(x: np.ndarray) -> dict[str, float]:
    """p10, p50 and p90 of ``x``."""
    return dict(zip(("p10", "p50", "p90"), map(float, np.percentile(x, [10, 50, 90]))))


def fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def run_lines(runs: list[LoadedRun]) -> list[str]:
    """The report's header: runs, checkpoints, data and slots, with a note on unfinished runs or different data."""
    from farmcli.runs import status_note

    lines = []
    for i, r in enumerate(runs):
        slots = ", ".join(f"{s}={r.slot(s)}" for s in ("video_frequency", "live_frequency", "align", "fuse", "head"))
        role = "Run" if i == 0 else "Compared with"
        info = read_json(r.run / "run.json")
        best = ""
        if isinstance(info.get("best_score"), (int, float)) and info.get("monitor"):
            best = f" ({info['monitor']} {info['best_score']:.4f} in run.json)"
        lines.append(
            f"- **{role}:** `{r.run}` — variant `{r.cfg.variant}` ({r.label}); checkpoint "
            f"`{r.ckpt.name}`{best}; data `{r.cfg.data.source}`; seed {r.cfg.seed}; {slots}."
        )
        note = status_note(r.run)
        if note:
            lines.append(f"- **Note:** {note}")
    if len({r.store.manifest.get("key") for r in runs}) > 1:
        lines.append(
            "- **Warning:** the runs were trained on different data, so Figure 3 overlays different users and "
            "the curves are not comparable."
        )
    lines.append(f"- Everything below is computed on the **{SPLIT}** split of each run's own sample store.")
    return lines


@dataclass
class Section:
    """One part of the report: its entry in report.json, the files it wrote ({key: name}) and its Markdown."""

    summary: Any
    files: dict[str, str]
    lines: list[str]
