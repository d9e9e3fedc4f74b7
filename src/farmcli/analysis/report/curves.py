"""Training curves per epoch from logs/metrics.csv and logs/resume*/metrics.csv (a resumed leg wins where steps repeat).

A train/* value is one batch's loss, and a rare task's BCE jumps tenfold between batches as its few positives come
and go: so each epoch's mean of its logged steps is shown with its standard error, and a first-to-last change is a
trend only beyond ``TREND_SE`` standard errors. val/* values are already one per epoch over the whole split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from farmcli.analysis.report.runs import LoadedRun, Section
from farmcli.data.schema import TASKS
from farmcli.errors import UserError

FILES = {"curves": "training-curves.png", "curves_compare": "training-curves-compare.png"}

TREND_SE = 2.0  # standard errors of the difference a trend must exceed (about a 95% two-sided bound)


class Series(NamedTuple):
    """One logged metric: ``x`` = step (train/*) or epoch (val/*), its values, each value's epoch."""

    x: np.ndarray
    y: np.ndarray
    epoch: np.ndarray


@dataclass(frozen=True)
class EpochMeans:
    """A train/* metric's per-epoch mean of logged steps, their count and its standard error (NaN for one step)."""

    epoch: np.ndarray
    mean: np.ndarray
    n: np.ndarray
    se: np.ndarray


@dataclass(frozen=True)
class Trend:
    """First against last epoch of a metric; ``beyond_noise`` None where it cannot be told (one epoch, or one
    logged step in an epoch)."""

    first_epoch: int
    last_epoch: int
    first: float
    last: float
    change: float
    noise: float  # TREND_SE standard errors of the difference
    beyond_noise: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noise": None if math.isnan(self.noise) else self.noise}


def log_files(run: Path) -> list[Path]:
    """logs/metrics.csv, then logs/resumeN/metrics.csv in N order (the legs of a resumed run)."""
    logs = Path(run) / "logs"
    files = [logs / "metrics.csv"] if (logs / "metrics.csv").is_file() else []
    legs = [p for p in logs.glob("resume*/metrics.csv") if re.fullmatch(r"resume\d+", p.parent.name)]
    return files + sorted(legs, key=lambda p: int(p.parent.name[len("resume") :]))


def training_logs(run: Path) -> dict[str, Series]:
    """{metric: Series} from every leg's metrics.csv; where a resumed leg logged a step (epoch) again, it wins."""
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
            df.select(*dict.fromkeys([x, "epoch"]), col, "_leg")
            .drop_nulls()
            .filter(pl.col(col).is_not_nan())
            .sort([x, "_leg"])
            .unique(subset=[x], keep="last", maintain_order=True)
        )
        if d.height:
            out[col] = Series(d[x].to_numpy(), d[col].to_numpy().astype(np.float64), d["epoch"].to_numpy())
    return out


def epoch_means(s: Series) -> EpochMeans:
    """The per-epoch mean of a train/* metric's logged steps, with the standard error of each mean."""
    epochs = np.unique(s.epoch)
    groups = [s.y[s.epoch == e] for e in epochs]
    n = np.array([len(g) for g in groups])
    mean = np.array([g.mean() for g in groups])
    se = np.array([g.std(ddof=1) / math.sqrt(len(g)) if len(g) > 1 else math.nan for g in groups])
    return EpochMeans(epochs, mean, n, se)


def trend(m: EpochMeans) -> Trend | None:
    """First to last epoch's mean against ``TREND_SE`` standard errors of the difference; None without an epoch."""
    if not len(m.epoch):
        return None
    noise = TREND_SE * math.sqrt(float(m.se[0]) ** 2 + float(m.se[-1]) ** 2)
    first, last = float(m.mean[0]), float(m.mean[-1])
    told = len(m.epoch) > 1 and not math.isnan(noise)
    beyond = bool(abs(last - first) > noise) if told else None
    return Trend(int(m.epoch[0]), int(m.epoch[-1]), first, last, last - first, noise, beyond)


def curve_inputs(logs: Mapping[str, Series]) -> dict:
    """Train BCE per task and L_cl (per step); validation BCE per task, L_cl and AUC (its mean first) per epoch."""

    def per_task(prefix: str, names: tuple[str, ...] = TASKS) -> dict[str, Series]:
        return {t: logs[f"{prefix}{t}"] for t in names if f"{prefix}{t}" in logs}

    val = per_task("val/auc_", ("mean", *TASKS))
    return {
        "task_losses": per_task("train/bce_"),
        "cl": logs.get("train/cl"),
        "val": val,
        "val_losses": per_task("val/bce_"),
        "val_cl": logs.get("val/cl"),
    }


def section(runs: list[LoadedRun], out: Path) -> Section:
    """One figure per run (the compared run's in its own file) and the text."""
    summary: dict[str, Any] = {}
    files: dict[str, str] = {}
    lines = ["## Training curves", ""]
    for r, key in zip(runs, FILES):
        inputs = curve_inputs(training_logs(r.run))
        if not inputs["task_losses"] and not inputs["val"]:
            lines += [f"No training log for {r.name} (no logs/metrics.csv with train/ or val/ columns).", ""]
            continue
        task_means = {t: epoch_means(s) for t, s in inputs["task_losses"].items()}
        cl_means = epoch_means(inputs["cl"]) if inputs["cl"] is not None else None
        title = f"{r.label} ({r.name}): training curves per epoch"
        val = {k: inputs[k] for k in ("val", "val_losses", "val_cl")}
        epoch_curves(task_means, out / FILES[key], cl=cl_means, title=title, **val)
        files[key] = FILES[key]
        summary[r.name] = stats = _stats(inputs, task_means, cl_means, len(log_files(r.run)))
        lines += [*_text(r, FILES[key], stats), ""]
    return Section(summary, files, lines[:-1] if lines[-1] == "" else lines)


def _stats(inputs: dict, task_means: dict[str, EpochMeans], cl: EpochMeans | None, legs: int) -> dict:
    """report.json's numbers behind the text: logged steps, each loss's trend, the best validation epoch."""
    stats: dict[str, Any] = {"legs": legs, "trend_se": TREND_SE}
    tl = inputs["task_losses"]
    if tl:
        stats["steps"] = int(max(s.x.max() for s in tl.values()))
        stats["points"] = int(max(len(s.x) for s in tl.values()))
        stats["bce"] = {t: tr.as_dict() for t, m in task_means.items() if (tr := trend(m)) is not None}
    if cl is not None and (cl_trend := trend(cl)) is not None:
        stats["cl"] = cl_trend.as_dict()
    if "mean" in inputs["val"]:
        x, y = inputs["val"]["mean"].x, inputs["val"]["mean"].y
        b = int(np.nanargmax(y))
        stats.update(epochs=int(len(x)), best_val_auc_mean=float(y[b]), best_epoch=int(x[b]))
    return stats


def _text(r: LoadedRun, fname: str, s: dict) -> list[str]:
    lines = [f"![training curves of {r.name}]({fname})", ""]
    text = (
        f"{r.label} (`{r.name}`), from {s['legs']} log file{'s' if s['legs'] != 1 else ''} "
        f"(logs/metrics.csv{' and the resumed legs' if s['legs'] > 1 else ''}): per-task training BCE as the mean "
        f"of each epoch's logged steps (bars: {TREND_SE:g} standard errors), validation BCE"
    )
    if "cl" in s:
        text += ", the contrastive loss L_cl (training and validation)"
    text += " and validation AUC per epoch."
    if s.get("bce"):
        text += " " + _trend_sentence("The training BCE", s["bce"], s["points"])
    if "cl" in s:
        text += " " + _trend_sentence("L_cl", {"": s["cl"]}, s.get("points", 0))
    if "best_val_auc_mean" in s:
        text += (
            f" The best mean validation AUC is {s['best_val_auc_mean']:.4f} at epoch {s['best_epoch']} "
            f"(of {s['epochs']} validated)."
        )
    return lines + [text]


def _trend_sentence(what: str, trends: dict[str, dict], points: int) -> str:
    """A sentence on {name: Trend.as_dict()} (one named "" for L_cl): a trend only where it exceeds the noise."""
    first = next(iter(trends.values()))
    a, b = first["first_epoch"], first["last_epoch"]
    if a == b:
        vals = ", ".join(f"{t} {d['last']:.3f}".strip() for t, d in trends.items())
        return (
            f"Only epoch {a} has logged training steps ({points} logged in all), so no trend can be read: "
            f"{what[0].lower()}{what[1:]} {vals}."
        )
    parts = "; ".join(_trend_part(t, d) for t, d in trends.items())
    return f"{what} from epoch {a} to {b} (a trend only where it exceeds the step-to-step noise): {parts}."


def _trend_part(name: str, d: dict) -> str:
    values = f"{d['first']:.3f} -> {d['last']:.3f}"
    label = f"{name}: " if name else ""
    if d["beyond_noise"] is None:
        return f"{label}{values}, too few logged steps per epoch to tell a trend from noise"
    if not d["beyond_noise"]:
        return f"{label}no trend beyond noise ({values}, noise {d['noise']:.3f})"
    direction = "falls" if d["change"] < 0 else "rises"
    return f"{label}{direction} {values} (change {d['change']:+.3f}, beyond the noise of {d['noise']:.3f})"


def epoch_curves(
    task_means: Mapping[str, EpochMeans],
    path: str | Path,
    *,
    cl: EpochMeans | None = None,
    val: Mapping[str, Series] | None = None,
    val_losses: Mapping[str, Series] | None = None,
    val_cl: Series | None = None,
    title: str | None = None,
) -> Path:
    """One PNG: per-task BCE (train epoch means with ``TREND_SE`` standard error bars, solid; validation dashed),
    L_cl likewise, and validation AUC (the mean bold); a task keeps its colour in every panel."""
    from matplotlib.ticker import MaxNLocator

    from farmcli.analysis import plots

    val, val_losses = dict(val or {}), dict(val_losses or {})
    panels = ["bce"] + (["cl"] if cl is not None and len(cl.epoch) else []) + (["val"] if val else [])
    names = list(dict.fromkeys([*task_means, *val_losses, *(k for k in val if k != "mean")]))
    color = {t: plots.COLORS[i % len(plots.COLORS)] for i, t in enumerate(names)}
    fig = plots._figure(4.6 * len(panels), 4.3)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    _loss_panel(axes[0], task_means, val_losses, color)
    if "cl" in panels and cl is not None:
        _loss_panel(axes[1], {"L_cl": cl}, {"L_cl": val_cl} if val_cl is not None else {}, {"L_cl": "black"})
        axes[1].set_title("contrastive loss L_cl (eq. 14) per epoch", fontsize=10)
        axes[1].set_ylabel("InfoNCE")
    if "val" in panels:
        _auc_panel(axes[-1], val, color)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch (0 = first)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=11)
    _legend(fig, names, color, has_val_losses=bool(val_losses) or val_cl is not None)
    return plots.save(fig, path)


def _loss_panel(ax, means: Mapping[str, EpochMeans], val_losses: Mapping[str, Series], color: dict) -> None:
    """Train epoch means with error bars (solid), validation losses (dashed); log scale where the rare tasks'
    losses sit orders of magnitude below click's."""
    for name, m in means.items():
        err = np.where(np.isnan(m.se), 0.0, TREND_SE * m.se)
        ax.errorbar(m.epoch, m.mean, yerr=err, color=color[name], marker="o", markersize=3, linewidth=1.4, capsize=3)
    for name, s in val_losses.items():
        ax.plot(s.x, s.y, color=color.get(name, "black"), linestyle="--", marker="s", markersize=3, linewidth=1.0)
    values = [m.mean for m in means.values()] + [s.y for s in val_losses.values()]
    allpos = np.concatenate([v[v > 0] for v in values] or [np.empty(0)])
    if allpos.size and allpos.max() / allpos.min() > 20:
        ax.set_yscale("log")
    ax.set_title(f"BCE per task (eq. 7) per epoch, train ± {TREND_SE:g} SE", fontsize=10)
    ax.set_ylabel("binary cross-entropy")
    if not means and not val_losses:
        ax.text(0.5, 0.5, "no train/bce_* logged", ha="center", va="center", transform=ax.transAxes)


def _auc_panel(ax, val: Mapping[str, Series], color: dict) -> None:
    for name, s in val.items():
        if name != "mean":
            ax.plot(s.x, s.y, marker="o", markersize=2.5, linewidth=1.0, color=color[name], alpha=0.75)
    if "mean" in val:
        s = val["mean"]
        best = f"mean over tasks (best {np.nanmax(s.y):.3f})" if len(s.y) else "mean over tasks"
        ax.plot(s.x, s.y, marker="o", markersize=4.5, linewidth=2.4, color="black", zorder=3, label=best)
        ax.legend(fontsize=8, loc="best")
    ax.set_title("validation AUC per epoch", fontsize=10)
    ax.set_ylabel("AUC")


def _legend(fig, names: list[str], color: dict, has_val_losses: bool) -> None:
    """One legend under the panels: a colour per task, and the line styles of train and validation."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color[t], linewidth=2) for t in names]
    labels = list(names)
    if has_val_losses:
        handles += [
            Line2D([], [], color="grey", marker="o", linewidth=1.4),
            Line2D([], [], color="grey", linestyle="--", marker="s", linewidth=1.0),
        ]
        labels += ["train (epoch mean)", "validation"]
    if handles:
        ncol = min(len(labels), 8)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8, frameon=False)
