"""Evaluation metrics: AUC, UAUC and GAUC per task and user group (PAPER.md, "Metrics")."""

from farmcli.metrics.grouped_auc import GroupedAUC, grouped_auc, grouped_auc_multi, per_user_auc

__all__ = ["GroupedAUC", "grouped_auc", "grouped_auc_multi", "per_user_auc"]
