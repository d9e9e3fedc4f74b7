"""One tuning trial: fit a config and return its best validation epoch's metrics; no run directory, no checkpoint,
never the test split (the paper selects on held-out data, Sec. 4.1.3)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from farmcli.config import RunConfig
from farmcli.data.schema import TASKS

EpochHook = Callable[[int, float], bool]  # (epoch, fit.monitor value) after each validation epoch; True prunes


@dataclass
class TrialResult:
    score: float  # best fit.monitor over the epochs (val/auc_mean: a fraction in [0, 1])
    best_epoch: int
    epochs: int
    history: list[float] = field(default_factory=list)  # the monitor after each epoch
    tasks: dict[str, float] = field(default_factory=dict)  # per-task validation AUC at the best epoch
    uauc: dict[str, float] = field(default_factory=dict)  # per-task validation UAUC there, and their "mean"
    cl: list[float] = field(default_factory=list)  # val/cl after each epoch, where the variant has one
    fit_seconds: float = 0.0
    pruned: bool = False  # stopped by on_epoch (a pruner), not by early stopping or max_epochs


def _recorder(on_epoch: EpochHook | None, monitor: str):
    import lightning as L

    class ValidationRecorder(L.Callback):
        """Keeps every validation epoch's metrics in memory; hands the monitor to ``on_epoch`` (the pruner)."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self.pruned = False

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            self.epochs.append(metrics)
            if on_epoch is not None and on_epoch(len(self.epochs) - 1, metrics.get(monitor, float("nan"))):
                self.pruned = trainer.should_stop = True

    return ValidationRecorder()


def run_trial(
    cfg: RunConfig,
    store,
    *,
    on_epoch: EpochHook | None = None,
    show_bar: bool = False,
    extra_callbacks: Sequence[Any] = (),
) -> TrialResult:
    """Fit ``cfg`` on ``store`` with its early stopping and return the validation result (no test split)."""
    import time

    import lightning as L

    from farmcli.logs import quiet_lightning

    quiet_lightning()
    from farmcli.data.module import data_module
    from farmcli.training import build_module, early_stopping, monitor_mode

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, store)
    dm = data_module(cfg, store)
    recorder = _recorder(on_epoch, cfg.fit.monitor)
    from farmcli import components

    kwargs = {**dict(cfg.trainer), "enable_model_summary": False}
    kwargs.pop("logger", None)  # a trial logs nothing; its scores go to the study
    bar_setting = kwargs.pop("enable_progress_bar", None)  # --trainer.enable_progress_bar false: no bar
    show_bar = show_bar and bar_setting is not False
    user_callbacks = [
        components.instantiate("trainer.callbacks", c) for c in components.as_list(kwargs.pop("callbacks", None))
    ]
    callbacks: list[Any] = [recorder, *extra_callbacks, *early_stopping(cfg), *user_callbacks]
    if show_bar:
        from farmcli.scoring import PassProgressBar

        callbacks.append(PassProgressBar())  # "Epoch 1/3" for the first of three, as farm train shows
    trainer = L.Trainer(
        **kwargs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=show_bar,
        use_distributed_sampler=False,
    )
    t0 = time.time()
    trainer.fit(module, datamodule=dm)
    if trainer.interrupted:
        raise KeyboardInterrupt
    history = [e.get(cfg.fit.monitor, float("nan")) for e in recorder.epochs]
    finite = [(v, i) for i, v in enumerate(history) if math.isfinite(v)]
    pick = min if monitor_mode(cfg.fit.monitor) == "min" else max
    score, best = pick(finite) if finite else (float("nan"), 0)
    at_best = recorder.epochs[best] if recorder.epochs else {}
    return TrialResult(
        score=score,
        best_epoch=best,
        epochs=len(history),
        history=history,
        tasks={t: at_best.get(f"val/auc_{t}", float("nan")) for t in TASKS},
        uauc={t: at_best.get(f"val/uauc_{t}", float("nan")) for t in (*TASKS, "mean")},
        cl=[e["val/cl"] for e in recorder.epochs if "val/cl" in e],
        fit_seconds=round(time.time() - t0, 1),
        pruned=recorder.pruned,
    )
