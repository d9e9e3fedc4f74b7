"""What makes a sample store useless for a fit, checked before one starts: validation labels that leave the monitored
AUC undefined. Shared by `farm train` (``farmcli.training``) and `farm tune` (``farmcli.tune.stores``)."""

from __future__ import annotations

from typing import Any

from farmcli.data.schema import TASKS
from farmcli.errors import UserError
from farmcli.metric_names import KINDS


def undefined_tasks(labels: Any) -> dict[str, str]:
    """The tasks whose labels (an [N, 6] array in TASKS order) are all one class, with that class ("0" or "1")."""
    out = {}
    for i, task in enumerate(TASKS):
        column = labels[:, i]
        if len(column) and column.min() == column.max():
            out[task] = str(int(column.min()))
    return out


def monitor_blind(monitor: str, undefined: dict[str, str]) -> str | None:
    """Why an AUC-type monitor (``val/auc_mean``, ``val/gauc_click``) has no value to rank by, or None."""
    kind, _, task = monitor.removeprefix("val/").partition("_")
    if kind not in KINDS:
        return None  # a loss is defined with one class too
    if task == "mean" and len(undefined) == len(TASKS):
        return "every task's labels are all one class (" + ", ".join(f"{t}={c}" for t, c in undefined.items()) + ")"
    if task in undefined:
        return f"every {task} label is {undefined[task]}"
    return None


def check_monitor_defined(store: Any, monitor: str, source: str) -> None:
    """Refuse a fit whose validation split leaves the monitored AUC undefined: it is logged as 0.5 every epoch, so
    early stopping would end the fit after ``fit.patience`` epochs of chance and keep an arbitrary checkpoint.
    A store without validation samples is let through (the fit then has no validation, nothing to monitor)."""
    if store.n("valid") == 0:
        return
    blind = monitor_blind(monitor, undefined_tasks(store.split("valid").labels))
    if blind:
        raise UserError(
            f"{source}: in the validation split {blind}, so the validation AUC that early stopping and the best "
            f"checkpoint follow (fit.monitor = {monitor}) is undefined: it would read 50.00 (chance) every epoch, "
            f"training would stop on it and keep an arbitrary checkpoint. Check the validation window (the "
            f"manifest's train_end / valid_end) and the label columns of live.parquet, or monitor a loss: "
            f"--fit.monitor val/loss."
        )
