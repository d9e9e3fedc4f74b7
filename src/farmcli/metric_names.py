"""The metric kinds farm reports, the validation metrics the model logs, and which way each monitor improves, stated
once for training, tuning, the learning-rate scheduler, the eval tables and the ablation tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from farmcli.batch import TASKS
from farmcli.errors import UserError

if TYPE_CHECKING:
    from farmcli.config import RunConfig

KINDS = ("auc", "uauc", "gauc")
"""AUC over all samples, the mean of per-user AUCs, and their sample-weighted mean (PAPER.md, Metrics)."""
PER_USER_KINDS = ("uauc", "gauc")
"""The means over per-user AUCs: their cell rests on ``n_users`` users, not on the group's samples."""

LOWER_IS_BETTER = ("loss", "bce_", "cl")
"""Validation metrics named so are losses (early stopping, the best checkpoint and ReduceLROnPlateau minimise them)."""


def monitor_mode(monitor: str) -> str:
    """'min' for a loss (val/loss, val/bce_*, val/cl), 'max' for AUC, UAUC and GAUC."""
    return "min" if monitor.removeprefix("val/").startswith(LOWER_IS_BETTER) else "max"


def monitor_names(cfg: RunConfig) -> list[str]:
    """The validation metrics FarmModule logs every epoch (model/module.py), any of which fit.monitor may name."""
    names = ["val/loss", *(f"val/bce_{t}" for t in TASKS)]
    if cfg.model.align.name != "none":
        names.append("val/cl")
    names += [f"val/{k}_{t}" for k in KINDS for t in ("mean", *TASKS)]
    return names


def check_monitor(cfg: RunConfig) -> None:
    """fit.monitor and lr_scheduler.monitor must be metrics the model logs (Lightning says so only after an epoch)."""
    _check_monitor(cfg, "fit.monitor", cfg.fit.monitor)
    scheduler_monitor = ((cfg.lr_scheduler or {}).get("init_args") or {}).get("monitor")
    if scheduler_monitor is not None:
        _check_monitor(cfg, "lr_scheduler.monitor", scheduler_monitor)


def _check_monitor(cfg: RunConfig, key: str, m: str) -> None:
    import difflib

    names = monitor_names(cfg)
    if m in names:
        return
    close = [n for n in names if n.startswith(m) or n == f"val/{m}"] or difflib.get_close_matches(m, names, 1, 0.75)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    extra = " (val/cl needs an align with a contrastive loss; model.align is none)" if m == "val/cl" else ""
    raise UserError(
        f"{key} = '{m}' is not a metric the model logs{extra}. {hint}Choose one of: "
        f"val/loss, val/bce_TASK, val/cl, val/auc_mean, val/uauc_mean, val/gauc_mean, val/auc_TASK, "
        f"val/uauc_TASK, val/gauc_TASK (TASK: {', '.join(TASKS)}); losses are minimised, AUCs maximised."
    )
