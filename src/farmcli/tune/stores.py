"""The sample stores of a study: one per distinct sample setting, so a trial that tunes ``data.history_len`` or
``data.min_count`` trains on samples built with its own value, never on the first trial's.

A store is keyed as ``farmcli.sources.sample_store`` keys it (the dataset, its simulator seed, L, min_count and
the cache); within a study each is built (or reused from the cache) once and checked once.
"""

from __future__ import annotations

from typing import Any

from farmcli.config import DataConfig, RunConfig
from farmcli.data.checks import monitor_blind, undefined_tasks
from farmcli.errors import UserError

__all__ = ["STORE_FIELDS", "Stores", "check_store", "monitor_blind", "store_key", "undefined_tasks"]

STORE_FIELDS = ("source", "seed", "history_len", "min_count", "cache_dir")
"""The DataConfig fields a sample store depends on (the rest, batch sizes and workers, only read it)."""


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
    """What would make every trial's score meaningless, refused before the study starts: no training or
    validation samples, or a validation split whose labels make the monitored AUC undefined for every trial
    (it is logged as 0.5, so every trial would score 50.00 and the "best" be the first)."""
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
