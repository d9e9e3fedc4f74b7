"""`farm train` as a library call: data -> sample store -> Lightning fit with early stopping -> run directory.

A run directory holds everything needed to reproduce and inspect the run:
config.yaml (the resolved config: ``farm train --config RUN/config.yaml`` repeats it), run.json (status,
sample store, best epoch), checkpoints/best.ckpt and last.ckpt, logs/metrics.csv, eval-{valid,test}.{json,csv}.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

from farmcli.config import RunConfig, resolve
from farmcli.errors import UserError
from farmcli.io import read_json, write_json, write_text

RUN_DIR_ENV = "FARM_RUN_DIR"
"""Set by rank 0 so the other DDP ranks (re-launched copies of the command) share its run directory."""


def run_name(cfg: RunConfig) -> str:
    data = Path(cfg.data.source).name if Path(cfg.data.source).is_dir() else cfg.data.source
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return cfg.fit.name or f"{cfg.variant}-{data}-s{cfg.seed}-{stamp}"


def _new_run_dir(cfg: RunConfig) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    run = Path(cfg.fit.runs_dir) / run_name(cfg)
    if run.exists() and any(run.iterdir()):
        raise UserError(
            f"{run} already exists and is not empty. Pick another --fit.name, or continue it with "
            f"`farm train --resume {run}`."
        )
    return run


def _log_version(run: Path) -> str:
    """A resumed run logs to logs/resumeN/ so the first leg's logs/metrics.csv is never overwritten."""
    n = 0
    while (run / "logs" / ("" if n == 0 else f"resume{n}") / "metrics.csv").exists():
        n += 1
    return "" if n == 0 else f"resume{n}"


def early_stopping(cfg: RunConfig) -> list:
    """The early-stopping callback of ``cfg.fit`` (none with patience 0), shared by training and tuning."""
    from lightning.pytorch.callbacks import EarlyStopping

    if cfg.fit.patience <= 0:
        return []
    return [
        EarlyStopping(
            cfg.fit.monitor, mode="max", patience=cfg.fit.patience, min_delta=cfg.fit.min_delta, check_finite=True
        )
    ]


def build_trainer(cfg: RunConfig, run: Path, has_valid: bool, progress: bool = True):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger

    from farmcli.logs import quiet_lightning, verbose

    quiet_lightning()

    ckpt = ModelCheckpoint(
        dirpath=run / "checkpoints",
        filename="best",
        save_last=True,
        save_top_k=1,
        monitor=cfg.fit.monitor if has_valid else None,
        mode="max",
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [ckpt]
    if has_valid:
        callbacks += early_stopping(cfg)
    if progress:
        callbacks.append(RichProgressBar(leave=True))
    kwargs = dict(cfg.trainer)
    if kwargs.get("enable_model_summary") is None:
        kwargs["enable_model_summary"] = verbose()
    if not has_valid:
        kwargs["limit_val_batches"] = 0
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = L.Trainer(
            **kwargs,
            callbacks=callbacks,
            default_root_dir=run,
            use_distributed_sampler=False,
            logger=CSVLogger(run, name="logs", version=_log_version(run)),
            enable_progress_bar=progress,
        )
    except MisconfigurationException as e:
        settings = ", ".join(
            f"trainer.{k}={kwargs[k]}" for k in ("accelerator", "devices", "strategy", "precision") if k in kwargs
        )
        raise UserError(
            f"Lightning cannot set up this machine with {settings}: {e} On a machine without a GPU, "
            f"use --config cpu (or --trainer.accelerator cpu)."
        ) from None
    return trainer, ckpt


def train(
    cfg: RunConfig, *, resume: str | Path | None = None, progress=None, show_bar: bool = True, store=None
) -> Path:
    """Fit ``cfg`` (or continue the run at ``resume``) and evaluate its best checkpoint; returns the run dir.

    ``store``: the sample store of ``cfg.data`` when the caller has opened it already (built once per command).
    """
    import lightning as L

    from farmcli.sources import sample_store

    run = Path(resume) if resume else _new_run_dir(cfg)
    last = run / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise UserError(
            f"{run}: no checkpoints/last.ckpt to resume from (the run stopped before its first "
            f"epoch ended). Start it again with `farm train --config {run}/config.yaml`."
        )
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    store = store if store is not None else sample_store(cfg.data, progress)
    has_valid = store.n("valid") > 0
    if store.n("train") == 0:
        raise UserError(
            f"{cfg.data.source}: the training window holds no live impressions; check the manifest's "
            f"train_start / train_end."
        )
    module = build_module(cfg, store)
    dm = data_module(cfg, store)
    trainer, ckpt = build_trainer(cfg, run, has_valid, progress=show_bar)
    if trainer.is_global_zero:
        run.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_DIR_ENV] = str(run.resolve())  # inherited by DDP ranks launched inside fit()
        write_text(run / "config.yaml", cfg.to_yaml())
        info = read_json(run / "run.json") if resume else {}
        info.update(
            {
                "status": "running",
                "variant": cfg.variant,
                "store": str(store.path),
                "store_key": store.manifest["key"],
                "started": info.get("started", time.time()),
            }
        )
        write_json(run / "run.json", info)
    t0 = time.time()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
    except BaseException as e:
        os.environ.pop(RUN_DIR_ENV, None)
        # Lightning answers Ctrl-C by stopping cleanly and then calling sys.exit(1): still an interrupt
        interrupted = isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and trainer.interrupted)
        if trainer.is_global_zero:
            if interrupted:
                _finish(run, status="interrupted")
            else:
                _finish(run, status="failed", error=str(e)[:500])
            if isinstance(e, UserError) and last.is_file():
                raise UserError(
                    f"{e}\nThe last good checkpoint is kept: {last} (`farm train --resume {run}` continues from it)."
                ) from None
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    os.environ.pop(RUN_DIR_ENV, None)
    if trainer.interrupted:
        if trainer.is_global_zero:
            _finish(run, status="interrupted")
        raise KeyboardInterrupt
    if not trainer.is_global_zero:
        return run
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else last
    _finish(
        run,
        status="evaluating",
        best_checkpoint=str(best),
        best_score=_item(ckpt.best_model_score),
        monitor=cfg.fit.monitor if has_valid else None,
        epochs=trainer.current_epoch,
        fit_seconds=round(time.time() - t0, 1),
    )
    from farmcli.evaluate import evaluate_run

    accel = "gpu" if trainer.strategy.root_device.type == "cuda" else "cpu"
    for split in ("valid", "test") if has_valid else ("test",):
        evaluate_run(best, split=split, accelerator=accel)
    _finish(run, status="finished")
    return run


def data_module(cfg: RunConfig, store):
    """The LightningDataModule of ``cfg``'s data settings over ``store``."""
    from farmcli.data.module import FarmDataModule

    d = cfg.data
    return FarmDataModule(
        store,
        d.batch_size,
        d.eval_batch_size,
        d.num_workers,
        cfg.seed,
        device_store=d.device_store,
        device_store_share=d.device_store_share,
    )


def build_module(cfg: RunConfig, store):
    """The LightningModule for ``cfg`` on ``store``: vocabulary sizes and training label rates from the store."""
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
    )


def check_labels(rates: list[float] | None, source: str) -> None:
    """No positive label at all: nothing to learn (a user error); none for some tasks: their AUC is undefined."""
    import logging

    from farmcli.data.schema import TASKS

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


def _item(x):
    return None if x is None else float(x)


def _finish(run: Path, **fields) -> None:
    info = read_json(run / "run.json")
    info.update(fields, ended=time.time())
    write_json(run / "run.json", info)


def resume_config(run: str | Path, overrides=()) -> RunConfig:
    """The config of an existing run (its config.yaml), with optional overrides (e.g. more epochs)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml). Runs are made by `farm train`.")
    return resolve([run / "config.yaml"], overrides=overrides)
