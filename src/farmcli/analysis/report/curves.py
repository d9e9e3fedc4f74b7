"""Training curves from logs/metrics.csv and logs/resume*/metrics.csv (a resumed leg wins where steps repeat)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from farmcli.analysis.report.runs import LoadedRun, Section
from farmcli.data.schema import TASKS
from farmcli.errors import UserError

FILES = {"curves": "training-curves.png", "curves_compare": "training-curves-compare.png"}


def log_files(run: Path) -> list[Path]:
    """logs/metrics.csv, then logs/resumeN/metrics.csv in N order (the legs of a resumed run)."""
    logs = Path(run) / "logs"
    files = [logs / "metrics.csv"] if (logs / "metrics.csv").is_file() else []
    legs = [p for p in logs.glob("resume*/metrics.csv") if re.fullmatch(r"resume\d+", p.parent.name)]
    return files + sorted(legs, key=lambda p: int(p.parent.name[len("resume") :]))


def training_logs(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (x, y)} from every leg's metrics.csv: x = step for train/*, epoch for val/*; where a resumed
    leg logged a step (epoch) again, the later leg's value wins."""
    import polars as pl

    frames = []
    for leg, f in enumerate(log_files(run)):
        try:
            df = pl.read_csv(f, infer_schema_length=None)
        except Exception as e:  # a truncated or empty log: say which
            raise UserError(f"{f}: cannot read the training log ({str(e).splitlines()[0][:200]}).") from None
        if df.height:
            frames.append(df.with_columns(pl.lit(leg).alias("_leg")))
    if not frames:
        return {}
    df = pl.concat(frames, how="diagonal_relaxed")
    out = {}
    for col in df.columns:
        if col in ("epoch", "step", "_leg") or not (col.startswith("train/") or col.startswith("val/")):
            continue
        x = "epoch" if col.startswith("val/") else "step"
        d = (
            df.select(x, col, "_leg")
            .drop_nulls()
            .filter(pl.col(col).is_not_nan())
            .sort([x, "_leg"])
            .unique(subset=[x], keep="last", maintain_order=True)
        )
        if d.height:
            out[col] = (d[x].to_numpy(), d[col].to_numpy().astype(np.float64))
    return out


def curve_inputs(logs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    tasks = {t: logs[f"train/bce_{t}"] for t in TASKS if f"train/bce_{t}" in logs}
    val = {}
    if "val/auc_mean" in logs:
        val["mean"] = logs["val/auc_mean"]
    val.update({t: logs[f"val/auc_{t}"] for t in TASKS if f"val/auc_{t}" in logs})
    return {"task_losses": tasks, "cl": logs.get("train/cl"), "val": val}


def section(runs: list[LoadedRun], out: Path) -> Section:
    """One figure per run (the compared run's in its own file) and the text."""
    from farmcli.analysis import plots

    summary: dict[str, Any] = {}
    files: dict[str, str] = {}
    lines = ["## Training curves", ""]
    for r, key in zip(runs, FILES):
        inputs = curve_inputs(training_logs(r.run))
        if not inputs["task_losses"] and not inputs["val"]:
            lines += [f"No training log for {r.name} (no logs/metrics.csv with train/ or val/ columns).", ""]
            continue
        plots.training_curves(
            inputs["task_losses"],
            out / FILES[key],
            cl=inputs["cl"],
            val=inputs["val"],
            title=f"{r.label} ({r.name}): training curves",
        )
        files[key] = FILES[key]
        stats = _stats(inputs, len(log_files(r.run)))
        summary[r.name] = stats
        lines += [*_text(r, FILES[key], stats), ""]
    return Section(summary, files, lines[:-1] if lines[-1] == "" else lines)


def _stats(inputs: dict, legs: int) -> dict:
    stats: dict[str, Any] = {"legs": legs}
    tl = inputs["task_losses"]
    if tl:
        stats["steps"] = int(max(x.max() for x, _ in tl.values()))
        stats["points"] = int(max(len(x) for x, _ in tl.values()))
        stats["first_bce"] = {t: float(y[0]) for t, (_, y) in tl.items()}
        stats["last_bce"] = {t: float(y[-1]) for t, (_, y) in tl.items()}
    if inputs["cl"] is not None:
        x, y = inputs["cl"]
        stats["cl_first"], stats["cl_last"] = float(y[0]), float(y[-1])
    if "mean" in inputs["val"]:
        x, y = inputs["val"]["mean"]
        b = int(np.nanargmax(y))
        stats.update(epochs=int(len(x)), best_val_auc_mean=float(y[b]), best_epoch=int(x[b]))
    return stats


def _text(r: LoadedRun, fname: str, s: dict) -> list[str]:
    lines = [f"![training curves of {r.name}]({fname})", ""]
    text = (
        f"{r.label} (`{r.name}`), from {s['legs']} log file{'s' if s['legs'] != 1 else ''} "
        f"(logs/metrics.csv{' and the resumed legs' if s['legs'] > 1 else ''}): per-task training BCE by step "
        f"(rolling mean when there are many points)"
    )
    if "cl_first" in s:
        text += ", the contrastive loss L_cl by step"
    text += " and validation AUC per epoch."
    if "last_bce" in s and s["points"] > 1:
        ch = ", ".join(f"{t} {s['first_bce'][t]:.3f} -> {s['last_bce'][t]:.3f}" for t in s["last_bce"])
        text += f" From the first to the last logged step ({s['steps']}) the BCE went {ch}."
        if "cl_first" in s:
            text += f" L_cl went {s['cl_first']:.3f} -> {s['cl_last']:.3f}."
    elif "last_bce" in s:
        ch = ", ".join(f"{t} {v:.3f}" for t, v in s["last_bce"].items())
        text += f" Only one training step was logged ({s['steps']}): BCE {ch}."
        if "cl_first" in s:
            text += f" L_cl {s['cl_last']:.3f}."
    if "best_val_auc_mean" in s:
        text += (
            f" The best mean validation AUC is {s['best_val_auc_mean']:.4f} at epoch {s['best_epoch']} "
            f"(of {s['epochs']} validated)."
        )
    return lines + [text]
