"""The metric kinds farm reports and which way each monitor improves, stated once for training, tuning and the
learning-rate scheduler."""

from __future__ import annotations

KINDS = ("auc", "uauc", "gauc")
"""AUC over all samples, the mean of per-user AUCs, and their sample-weighted mean (PAPER.md, Metrics)."""

LOWER_IS_BETTER = ("loss", "bce_", "cl")
"""Validation metrics named so are losses (early stopping, the best checkpoint and ReduceLROnPlateau minimise them)."""


def monitor_mode(monitor: str) -> str:
    """'min' for a loss (val/loss, val/bce_*, val/cl), 'max' for AUC, UAUC and GAUC."""
    return "min" if monitor.removeprefix("val/").startswith(LOWER_IS_BETTER) else "max"
