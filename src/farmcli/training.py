"""`farm train` as a library call: data -> sample store -> Lightning fit with early stopping -> run directory
(config.yaml, run.json, checkpoints/, logs/, eval-*.{json,csv}). Here: the fit and its trainer; the run
directory's lifecycle (checks, records, resume) is farmcli/runs.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farmcli import locks
from farmcli.batch import TASKS
from farmcli.config import RunConfig
from farmcli.errors import UserError
from farmcli.interrupts import on_hard_exit, stopped_by_signal
from farmcli.machine import check_memory
from farmcli.metric_names import check_monitor, monitor_mode
from farmcli.runs import (
    CKPT_STORE_KEY,
    RUN_DIR_ENV,
    Record,
    best_checkpoint,
    check_fits,
    check_resume,
    finish,
    log_version,
    new_run_dir,
    other_data,
    relocated,
    stored_path,
)
from farmcli.trainer_check import check_trainer, trainer_error


@dataclass
class TrainResult:
    """A finished run: its directory (config.yaml, checkpoints, logs, eval tables) and its evaluation tables."""

    run: Path
    test: dict
    """RUN/eval-test.json as written (AUCs in percent); {} on a DDP rank other than 0."""
    valid: dict | None = None
    """RUN/eval-valid.json as written, where the data has a validation split."""


def early_stopping(cfg: RunConfig) -> list:
    """The early-stopping callback of ``cfg.fit`` (none with patience 0), shared by training and tuning."""
    from lightning.pytorch.callbacks import EarlyStopping

    if cfg.fit.patience <= 0:
        return []
    check_monitor(cfg)
    return [
        EarlyStopping(
            cfg.fit.monitor,
            mode=monitor_mode(cfg.fit.monitor),
            patience=cfg.fit.patience,
            min_delta=cfg.fit.min_delta,
            check_finite=True,
        )
    ]


def _atomic_checkpoint_io():
    """Lightning's checkpoint writer, renaming each file into place: a full disk keeps the previous one whole."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    return AtomicCheckpointIO()


def build_trainer(cfg: RunConfig, run: Path, has_valid: bool, progress: bool = True, extra: Sequence = ()):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from farmcli import components
    from farmcli.logs import quiet_lightning, verbose

    quiet_lightning()
    ckpt = ModelCheckpoint(
        dirpath=run / "checkpoints",
        filename="best",
        save_last=True,
        save_top_k=1,
        monitor=cfg.fit.monitor if has_valid else None,
        mode=monitor_mode(cfg.fit.monitor),
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [ckpt, *extra]
    if has_valid:
        callbacks += early_stopping(cfg)
    kwargs = dict(cfg.trainer)
    progress = kwargs.pop("enable_progress_bar", None) is not False and progress
    if progress:
        from farmcli.scoring import PassProgressBar  # names the post-fit scoring passes; no v_num

        callbacks.append(PassProgressBar(leave=True))  # "Epoch 1/4" is the first of 4
    # a user's ModelCheckpoint writes beside farm's unless its dirpath says otherwise
    callbacks += [
        components.instantiate("trainer.callbacks", c, dirpath=run / "checkpoints")
        for c in components.as_list(kwargs.pop("callbacks", None))
    ]
    # logs/metrics.csv is always kept (farm report reads it); each --trainer.logger gets RUN/logs/NAME/VERSION
    version = log_version(run)
    loggers = [CSVLogger(run, name="logs", version=version)]
    loggers += [
        components.instantiate(
            "trainer.logger",
            lg,
            save_dir=str(run / "logs"),
            name=lg["class_path"].rpartition(".")[2].removesuffix("Logger").lower() or "logger",
            version=version,
            default_hp_metric=False,  # TensorBoard's placeholder hp_metric of -1
        )
        for lg in components.as_list(kwargs.pop("logger", None))
    ]
    if kwargs.get("enable_model_summary") is None:
        kwargs["enable_model_summary"] = verbose()
    if not has_valid:
        kwargs["limit_val_batches"] = 0
    try:
        trainer = L.Trainer(
            **kwargs,
            callbacks=callbacks,
            default_root_dir=run,
            use_distributed_sampler=False,
            logger=loggers,
            enable_progress_bar=progress,
            plugins=[_atomic_checkpoint_io()],
        )
    except Exception as e:  # checked before (check_trainer); here with the run's callbacks and loggers
        raise UserError(trainer_error(kwargs, e)) from None
    return trainer, ckpt


def _run_files(record: Record, store_key: str):
    """Checkpoints name their sample store and are read as this directory's; a resumed run is recorded at start."""
    import lightning as L

    class RunFiles(L.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
            checkpoint[CKPT_STORE_KEY] = store_key

        def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
            dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
            states = checkpoint.get("callbacks") or {}
            for k, state in states.items():
                if dirpath and str(k).startswith("ModelCheckpoint"):
                    states[k] = relocated(state, str(dirpath))

        def on_train_start(self, trainer, pl_module) -> None:
            if trainer.is_global_zero:
                record.write()

    return RunFiles()


def train(
    cfg: RunConfig, *, resume: str | Path | None = None, progress=None, show_bar: bool = True, store=None
) -> TrainResult:
    """Fit ``cfg`` (or continue ``resume``) and evaluate its best checkpoint, everything checked before data is read."""
    check_monitor(cfg)
    check_trainer(cfg.trainer)
    check_memory(cfg)  # data.history_len against this machine's memory, before the store is built
    run = Path(resume) if resume else new_run_dir(cfg)
    if os.environ.get(RUN_DIR_ENV):  # a DDP rank launched by the process that holds the run
        return _fit(cfg, run, resume, progress, show_bar, store, None)
    with contextlib.ExitStack() as lock:  # new_run_dir and check_resume refused a run another command writes
        return _fit(cfg, run, resume, progress, show_bar, store, lock)


def _fit(
    cfg: RunConfig, run: Path, resume, progress, show_bar: bool, store, lock: contextlib.ExitStack | None
) -> TrainResult:
    """The fit of ``train``; ``lock`` takes the run's lock once every check has passed (a refused run leaves none)."""
    import lightning as L

    from farmcli.data.module import data_module
    from farmcli.sources import sample_store

    last = run / "checkpoints" / "last.ckpt"
    key = check_resume(run, cfg, data_key=store is None) if resume else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    store = store if store is not None else sample_store(cfg.data, progress)
    if key and store.manifest.get("key") != key:
        raise UserError(other_data(run, cfg, key, store.manifest.get("key", "?")))
    has_valid = store.n("valid") > 0
    if store.n("train") == 0:
        raise UserError(
            f"{cfg.data.source}: the training window holds no live impressions; check the manifest's "
            f"train_start / train_end."
        )
    module = build_module(cfg, store)
    if resume:
        check_fits(run, module, last)
    dm = data_module(cfg, store)
    record = Record(run, cfg, store, resume=bool(resume))
    if lock is not None:
        run.parent.mkdir(parents=True, exist_ok=True)
        lock.enter_context(locks.hold(run, "the run", "--fit.name"))

        # the watchdog ends a process stuck in native code (a rendezvous): say so in run.json
        def mark_interrupted() -> None:
            if record.done:
                finish(run, status="interrupted")

        lock.enter_context(on_hard_exit(mark_interrupted))
    extra = [_run_files(record, store.manifest["key"])]
    trainer, ckpt = build_trainer(cfg, run, has_valid, progress=show_bar, extra=extra)
    if trainer.is_global_zero:
        os.environ[RUN_DIR_ENV] = str(run.resolve())  # inherited by DDP ranks launched inside fit()
        if not resume:
            record.write()
    t0 = time.time()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
    except BaseException as e:
        os.environ.pop(RUN_DIR_ENV, None)
        # Lightning answers Ctrl-C by stopping cleanly and then calling sys.exit(1): still an interrupt
        interrupted = stopped_by_signal(e) or (isinstance(e, SystemExit) and trainer.interrupted)
        if trainer.is_global_zero and record.done:
            if interrupted:
                finish(run, status="interrupted")
            else:
                finish(run, status="failed", error=str(e)[:500])
        if trainer.is_global_zero and isinstance(e, UserError) and last.is_file():
            raise UserError(
                f"{e}\nThe last good checkpoint is kept: {last} (`farm train --resume {run}` continues from it)."
            ) from None
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    os.environ.pop(RUN_DIR_ENV, None)
    if trainer.interrupted:
        if trainer.is_global_zero and record.done:
            finish(run, status="interrupted")
        raise KeyboardInterrupt
    best = best_checkpoint(run, ckpt.best_model_path, last)
    if trainer.is_global_zero:
        record.write()  # a resumed run with no epoch left to train
        finish(
            run,
            status="evaluating",
            best_checkpoint=stored_path(run, best),
            best_score=None if ckpt.best_model_score is None else float(ckpt.best_model_score),
            monitor=cfg.fit.monitor if has_valid else None,
            epochs=trainer.current_epoch,
            fit_seconds=round(time.time() - t0, 1),
        )
    evals = _test(trainer, module, cfg, store, run, best, ("valid", "test") if has_valid else ("test",))
    if trainer.is_global_zero:
        finish(run, status="finished")
    return TrainResult(run, evals.get("test", {}), evals.get("valid"))


def _test(trainer, module, cfg: RunConfig, store, run: Path, best: Path, splits: Sequence[str]) -> dict[str, dict]:
    """The best checkpoint scored by the fit's Trainer into RUN/eval-SPLIT.{json,csv}: the tables by split (rank 0)."""
    from farmcli.data.module import data_module
    from farmcli.evaluation import write_tables
    from farmcli.scoring import score_split

    evals = {}
    try:
        for split in splits:
            tables = score_split(trainer, module, data_module(cfg, store, test_split=split), ckpt_path=str(best))
            if trainer.is_global_zero:
                extra = {"checkpoint": stored_path(run, best), "variant": cfg.variant}
                evals[split] = write_tables(tables, run, split, extra=extra)
    except BaseException as e:
        if trainer.is_global_zero:
            if stopped_by_signal(e):
                finish(run, status="interrupted")
            else:
                finish(run, status="failed", error=str(e)[:500])
        raise
    return evals


def build_module(cfg: RunConfig, store):
    """The LightningModule for ``cfg`` with ``store``'s vocabulary sizes and training label rates."""
    from farmcli.model.module import FarmModule

    labels = store.split("train").labels
    rates = labels.mean(axis=0).tolist() if len(labels) else None
    check_labels(rates, cfg.data.source)
    return FarmModule(
        vocab=store.model_shapes,
        model=cfg.model,
        optim=cfg.optim,
        label_rates=rates,
        cl_batch_size=cfg.data.batch_size,
        lr_scheduler=cfg.lr_scheduler,
        monitor=cfg.fit.monitor,
        optimizer=cfg.optimizer,
        backend=cfg.fit.backend,
    )


def check_labels(rates: list[float] | None, source: str) -> None:
    """No positive label at all: nothing to learn (a user error); none for some tasks: their AUC is undefined."""
    if rates is None:
        return
    empty = [t for t, r in zip(TASKS, rates) if r == 0]
    if len(empty) == len(TASKS):
        raise UserError(
            f"{source}: every label of the training window is 0 (no click, view, like, comment or "
            f"gift), so there is nothing to learn. Check the label columns of live.parquet."
        )
    if empty:
        logging.getLogger("farmcli").warning(
            "%s: no positive %s label in the training window; %s AUC will be undefined ('-').",
            source,
            ", ".join(empty),
            "its" if len(empty) == 1 else "their",
        )
