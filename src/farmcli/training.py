"""`farm train` as a library call: data -> sample store -> Lightning fit with early stopping -> run directory.

A run directory holds everything needed to reproduce and inspect the run:
config.yaml (the resolved config: ``farm train --config RUN/config.yaml`` repeats it), run.json (status,
sample store, best epoch), checkpoints/best.ckpt and last.ckpt, logs/metrics.csv, eval-{valid,test}.{json,csv}.
Paths a run records inside itself are relative to the run directory, so a copied or moved run is whole.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from farmcli.batch import TASKS
from farmcli.config import RunConfig, resolve
from farmcli.errors import UserError
from farmcli.interrupts import stopped_by_signal
from farmcli.io import load_yaml, read_json, write_json, write_text
from farmcli.metric_names import KINDS, monitor_mode
from farmcli.runs import CKPT_STORE_KEY, alive, stored_path

RUN_DIR_ENV = "FARM_RUN_DIR"
"""Set by rank 0 so the other DDP ranks (re-launched copies of the command) share its run directory."""


# ------------------------------------------------------------------------------------------ monitor


def monitor_names(cfg: RunConfig) -> list[str]:
    """The validation metrics FarmModule logs every epoch (model/module.py), any of which fit.monitor may name."""
    names = ["val/loss", *(f"val/bce_{t}" for t in TASKS)]
    if cfg.model.align.name != "none":
        names.append("val/cl")
    names += [f"val/{k}_{t}" for k in KINDS for t in ("mean", *TASKS)]
    return names


def check_monitor(cfg: RunConfig) -> None:
    """fit.monitor (and lr_scheduler.monitor) must be a metric the model logs: Lightning would say so only after a
    whole epoch."""
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


# ------------------------------------------------------------------------------------------ run directory


def run_name(cfg: RunConfig) -> str:
    data = Path(cfg.data.source).name if Path(cfg.data.source).is_dir() else cfg.data.source
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return cfg.fit.name or f"{cfg.variant}-{data}-s{cfg.seed}-{stamp}"


def new_run_dir(cfg: RunConfig) -> Path:
    """The directory a new run of ``cfg`` writes; an existing non-empty one is refused, saying what it holds."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    run = Path(cfg.fit.runs_dir) / run_name(cfg)
    if run.exists() and any(run.iterdir()):
        if (run / "checkpoints" / "last.ckpt").is_file():
            raise UserError(
                f"{run} already exists and is not empty. Pick another --fit.name, or continue it with "
                f"`farm train --resume {run}`."
            )
        raise UserError(
            f"{run} already exists but holds no checkpoint (a run stopped before its first epoch ended, or "
            f"not a run): there is nothing to resume. Pick another --fit.name, or remove {run} to reuse the name."
        )
    return run


# ------------------------------------------------------------------------------------------ resume


def run_of_checkpoint(ckpt_path: str, config_files: Sequence[Path] = ()) -> Path:
    """The run directory that LightningCLI's ``ckpt_path`` resumes: the run itself, or its checkpoints/last.ckpt.
    farm resumes a run from its last checkpoint, whose run directory holds the config and the logs it continues."""
    path = Path(ckpt_path)
    if not ckpt_path or not path.exists():
        raise UserError(f"ckpt_path = {ckpt_path!r}: no such file or directory. Give RUN/checkpoints/last.ckpt or RUN.")
    run = path.parent.parent if path.suffix == ".ckpt" else path
    if path.suffix == ".ckpt" and path.name != "last.ckpt" and (run / "config.yaml").is_file():
        raise UserError(
            f"ckpt_path = {ckpt_path}: farm resumes a run from its last checkpoint (RUN/checkpoints/last.ckpt). To "
            f"continue from {path.name}, copy it over {run}/checkpoints/last.ckpt; to score it, `farm eval {path}`."
        )
    if not (run / "config.yaml").is_file():
        raise UserError(
            f"ckpt_path = {ckpt_path}: not a checkpoint of a farm run (no {run / 'config.yaml'}). farm resumes the "
            f"run directories `farm train` writes: --ckpt_path RUN/checkpoints/last.ckpt or --resume RUN."
        )
    return run


def resume_config(run: str | Path, overrides=()) -> RunConfig:
    """The config of an existing run (its config.yaml), with optional overrides (e.g. more epochs)."""
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml). Runs are made by `farm train`.")
    return resolve([run / "config.yaml"], overrides=overrides)


def check_resume(run: Path, cfg: RunConfig, data_key: bool = True) -> str | None:
    """Everything `farm train --resume RUN` needs, checked before anything is built or written: the run is not
    training now, its last checkpoint is readable and ``cfg.data`` gives the samples it was trained on (with
    ``data_key``: the store key of ``cfg.data`` is computed, without building the store). Returns that key."""
    from farmcli.evaluation import read_checkpoint

    run = Path(run)
    info = read_json(run / "run.json")
    ours = info.get("pid") == os.getpid() or os.environ.get(RUN_DIR_ENV)  # this process, or one of its DDP ranks
    if info.get("status") in ("running", "evaluating") and alive(info) and not ours:
        raise UserError(
            f"{run} is still training (process {info.get('pid')} on {info.get('host')}). Wait for it to end, "
            f"or stop it, before resuming it."
        )
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        again = f"farm train --config {run}/config.yaml" + (f" --fit.name {cfg.fit.name}-2" if cfg.fit.name else "")
        raise UserError(
            f"{run}: no checkpoints/last.ckpt to resume from (the run stopped before its first epoch ended), "
            f"so there is nothing to continue. Start it again as a new run: `{again}` (or remove {run} and "
            f"repeat your first command)."
        )
    fresh = f"`farm train --config {run}/config.yaml --fit.name NEW` starts a new run"
    key = read_checkpoint(
        last,
        f"The run cannot continue from it: copy {run}/checkpoints/best.ckpt over it to continue from the "
        f"best epoch, or {fresh}.",
    ).get(CKPT_STORE_KEY) or info.get("store_key")
    best = run / "checkpoints" / "best.ckpt"
    if best.is_file():  # evaluated when the resumed run ends
        read_checkpoint(best, f"Remove it (the resumed run is then evaluated with its last checkpoint), or {fresh}.")
    if key and data_key:
        _check_resume_data(run, cfg, key)
    return key


def _check_resume_data(run: Path, cfg: RunConfig, key: str) -> None:
    from farmcli.data.build import sample_store_path
    from farmcli.paths import sample_cache
    from farmcli.sources import dataset_dir

    d = cfg.data
    path = sample_store_path(
        dataset_dir(d),
        Path(d.cache_dir) if d.cache_dir else sample_cache(),
        history_len=d.history_len,
        min_count=d.min_count,
    )
    if path.name != f"samples-{key[:16]}":
        raise UserError(_other_data(run, cfg, key, path.name.removeprefix("samples-")))


def _other_data(run: Path, cfg: RunConfig, key: str, other: str) -> str:
    trained = (load_yaml(run / "config.yaml").get("data") or {}) if (run / "config.yaml").is_file() else {}
    was, now = str(trained.get("source", "?")), cfg.data.source
    settings = [k for k in ("seed", "history_len", "min_count") if k in trained and trained[k] != getattr(cfg.data, k)]

    def named(source: str, values) -> str:
        return source + (" with " + ", ".join(f"data.{k} {values(k)}" for k in settings) if settings else "")

    why = (
        f"its data {now} changed since the run was trained"
        if was == now and not settings
        else f"this command names other data ({named(now, lambda k: getattr(cfg.data, k))}, sample store "
        f"{other[:16]}) than the run was trained on ({named(was, trained.get)})"
    )
    return (
        f"--resume {run}: {why}, so its checkpoint (sample store {key[:16]}) does not fit: other samples, other "
        f"vocabularies. The run is left as it was. Resume without --data or --data.* settings, or train a new "
        f"run on that data: `farm train --config {run}/config.yaml --fit.name NEW` with the same data options."
    )


def check_fits(run: Path, module, last: Path) -> None:
    """The resumed run's checkpoint fits the model these settings build (same weights, same shapes)."""
    from farmcli.evaluation import read_checkpoint

    saved = {k: tuple(v.shape) for k, v in read_checkpoint(last)["state_dict"].items()}
    built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    differ = sorted(k for k in saved.keys() | built.keys() if saved.get(k) != built.get(k))
    if differ:
        shown = "; ".join(
            f"{k}: {saved.get(k, 'absent')} in the checkpoint, {built.get(k, 'absent')} now" for k in differ[:3]
        )
        raise UserError(
            f"--resume {run}: its checkpoint does not fit the model these settings build ({shown}"
            f"{'; ...' if len(differ) > 3 else ''}). A resumed run keeps its model: drop the --model.* settings, "
            f"or train a new run. The run is left as it was."
        )


# ------------------------------------------------------------------------------------------ training


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


def relocated(state: dict[str, Any], dirpath: str) -> dict[str, Any]:
    """A ModelCheckpoint state saved in another directory (a copied or moved run) with its paths moved into
    ``dirpath``, so the resumed run keeps its best-so-far and never names the old directory's files."""
    old = state.get("dirpath")
    if not old or old == dirpath:
        return state

    def move(p):
        return str(Path(dirpath) / Path(p).relative_to(old)) if p and Path(p).is_relative_to(old) else p

    state = dict(state, dirpath=dirpath)
    for k in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if k in state:
            state[k] = move(state[k])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(p): v for p, v in state["best_k_models"].items()}
    return state


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

        callbacks.append(PassProgressBar(leave=True))  # Lightning's own epoch count: "Epoch 0/3" is the first of 4
    # a user's ModelCheckpoint writes beside farm's, unless its dirpath says otherwise
    callbacks += [
        components.instantiate("trainer.callbacks", c, dirpath=run / "checkpoints")
        for c in kwargs.pop("callbacks", None) or []
    ]
    # the run's CSV log is always kept (farm report reads logs/metrics.csv); --trainer.logger adds loggers, each in
    # a folder of its own under RUN/logs/ (logs/tensorboard/), a resumed leg beside the first (logs/tensorboard/resume1)
    version = _log_version(run)
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
        for lg in kwargs.pop("logger", None) or []
    ]
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
            logger=loggers,
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


class _Record:
    """Writes config.yaml and run.json (status running, this process and host). A new run does it before
    fitting; a resumed one only once its checkpoint is restored (Lightning's on_train_start), so a resume
    that cannot start leaves the run as it was."""

    def __init__(self, run: Path, cfg: RunConfig, store, resume: bool):
        self.run, self.cfg, self.store, self.resume = run, cfg, store, resume
        self.done = False

    def write(self) -> None:
        if self.done:
            return
        self.run.mkdir(parents=True, exist_ok=True)
        write_text(self.run / "config.yaml", self.cfg.to_yaml())
        info = read_json(self.run / "run.json") if self.resume else {}
        for stale in ("error", "ended"):
            info.pop(stale, None)
        info.update(
            {
                "status": "running",
                "variant": self.cfg.variant,
                "store": str(self.store.path),
                "store_key": self.store.manifest["key"],
                "started": info.get("started", time.time()),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
        )
        write_json(self.run / "run.json", info)
        self.done = True


def _run_files(record: _Record, store_key: str):
    """The callback that ties checkpoints to the run: each names its sample store, a copied or moved run's
    checkpoint state is read as this directory's, and a resumed run is recorded once training starts."""
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
) -> Path:
    """Fit ``cfg`` (or continue the run at ``resume``) and evaluate its best checkpoint; returns the run dir.

    ``store``: the sample store of ``cfg.data`` when the caller has opened it already (built once per command).
    Everything that can be checked is checked before the store is built and before the run directory is touched.
    """
    import lightning as L

    from farmcli.data.module import data_module
    from farmcli.sources import sample_store

    check_monitor(cfg)
    run = Path(resume) if resume else new_run_dir(cfg)
    last = run / "checkpoints" / "last.ckpt"
    key = check_resume(run, cfg, data_key=store is None) if resume else None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    store = store if store is not None else sample_store(cfg.data, progress)
    if key and store.manifest.get("key") != key:
        raise UserError(_other_data(run, cfg, key, store.manifest.get("key", "?")))
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
    record = _Record(run, cfg, store, resume=bool(resume))
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
                _finish(run, status="interrupted")
            else:
                _finish(run, status="failed", error=str(e)[:500])
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
            _finish(run, status="interrupted")
        raise KeyboardInterrupt
    if trainer.is_global_zero:
        record.write()  # a resumed run with no epoch left to train
    best = _best_checkpoint(run, ckpt.best_model_path, last)
    if trainer.is_global_zero:
        _finish(
            run,
            status="evaluating",
            best_checkpoint=stored_path(run, best),
            best_score=_item(ckpt.best_model_score),
            monitor=cfg.fit.monitor if has_valid else None,
            epochs=trainer.current_epoch,
            fit_seconds=round(time.time() - t0, 1),
        )
    _test(trainer, module, cfg, store, run, best, ("valid", "test") if has_valid else ("test",))
    if trainer.is_global_zero:
        _finish(run, status="finished")
    return run


def _test(trainer, module, cfg: RunConfig, store, run: Path, best: Path, splits: Sequence[str]) -> None:
    """The best checkpoint scored by the fit's own Trainer (its device, precision and strategy; every rank
    takes part): RUN/eval-SPLIT.{json,csv} for each split, the tables `farm eval` writes."""
    from farmcli.data.module import data_module
    from farmcli.evaluation import write_tables
    from farmcli.scoring import score_split

    try:
        for split in splits:
            tables = score_split(trainer, module, data_module(cfg, store, test_split=split), ckpt_path=str(best))
            if trainer.is_global_zero:
                write_tables(tables, run, split, extra={"checkpoint": stored_path(run, best), "variant": cfg.variant})
    except BaseException as e:
        if trainer.is_global_zero:
            interrupted = stopped_by_signal(e)
            _finish(
                run,
                status="interrupted" if interrupted else "failed",
                **({} if interrupted else {"error": str(e)[:500]}),
            )
        raise


def _best_checkpoint(run: Path, best_model_path: str, last: Path) -> Path:
    """The best checkpoint Lightning chose, always one inside ``run`` (evaluating it writes only there)."""
    best = Path(best_model_path) if best_model_path else last
    if not best.resolve().is_relative_to(run.resolve()) or not best.is_file():
        best = run / "checkpoints" / "best.ckpt"
    return best if best.is_file() else last


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
        lr_scheduler=cfg.lr_scheduler,
        monitor=cfg.fit.monitor,
        optimizer=cfg.optimizer,
    )


def check_labels(rates: list[float] | None, source: str) -> None:
    """No positive label at all: nothing to learn (a user error); none for some tasks: their AUC is undefined."""
    import logging

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
    """Record the end of a step in run.json; the process no longer runs the run unless it is evaluating."""
    info = read_json(run / "run.json")
    info.update(fields, ended=time.time())
    if fields.get("status") != "evaluating":
        info.pop("pid", None)
        info.pop("host", None)
    write_json(run / "run.json", info)
