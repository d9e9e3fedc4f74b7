"""A study's sample stores, one per store setting, so a trial tuning ``data.history_len`` or ``data.min_count``
trains on samples built with its own value; each is built (or read from the cache) and checked once."""

from __future__ import annotations

from typing import Any

from farmcli.config import DataConfig, RunConfig
from farmcli.data.checks import monitor_blind, undefined_tasks
from farmcli.errors import UserError

__all__ = ["STORE_FIELDS", "Stores", "check_store", "monitor_blind", "store_key", "undefined_tasks"]

# the DataConfig fields a sample store depends on (batch sizes and workers only read it)
STORE_FIELDS = ("source", "seed", "history_len", "min_count", "cache_dir")


def store_key(data: DataConfig) -> tuple[Any, ...]:
    return tuple(getattr(data, f) for f in STORE_FIELDS)


class Stores:
    """Sample stores by store key, built on first use and checked for tuning (``check_store``)."""

    def __init__(self) -> None:
        self._stores: dict[tuple[Any, ...], Any] = {}

    def get(self, cfg: RunConfig, progress=None):
        key = store_key(cfg.data)
        if key not in self._stores:
            from farmcli.sources import sample_store

            store = sample_store(cfg.data, progress)
            check_store(store, cfg)
            self._stores[key] = store
        return self._stores[key]


def check_store(store, cfg: RunConfig) -> None:
    """Refuse, before the study, a store that makes every score meaningless: no training or validation samples,
    or validation labels that leave the monitored AUC undefined (logged as 0.5 for every trial)."""
    source = cfg.data.source
    if store.n("train") == 0:
        raise UserError(
            f"{source}: the training window holds no live impressions; check the manifest's train_start / train_end."
        )
    if store.n("valid") == 0:
        raise UserError(
            f"{source}: the validation split is empty; farm tune scores on it only. "
            f"Check the manifest's train_end / valid_end."
        )
    tasks = undefined_tasks(store.split("valid").labels)
    blind = monitor_blind(cfg.fit.monitor, tasks)
    if blind:
        raise UserError(
            f"{source}: in the validation split {blind}, so the validation AUC that farm tune ranks trials by "
            f"({cfg.fit.monitor}) is undefined: every trial would score 50.00 (chance) and the best would be "
            f"arbitrary. Check the validation window (the manifest's train_end / valid_end) and the label "
            f"columns of live.parquet, or rank trials by a loss, e.g. --fit.monitor val/loss."
        )
