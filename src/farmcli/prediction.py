"""`farm predict`: score every live impression of a dataset with a trained run, streamed to parquet.

Another dataset is encoded with the run's vocabularies (``vocab_from``): an id the model never saw is
out-of-vocabulary, as in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from farmcli.errors import UserError
from farmcli.evaluation import (
    PREDICT_FORMAT,
    PREDICTIONS_FORMAT,
    Progress,
    check_predictions_name,
    check_trained_on,
    empty_split_note,
    load_module,
    locate,
    run_store,
)
from farmcli.io import atomic_path, check_output_file, output_path
from farmcli.runs import read_checkpoint

SPLIT_CHOICES = ("test", "valid", "train", "all")
FORMAT = PREDICT_FORMAT
"""Written into the parquet's key-value metadata; ``--overwrite`` replaces only files that carry it."""


@dataclass
class PredictResult:
    out: Path
    rows: dict[str, int]
    store: Path
    checkpoint: Path
    notes: list[str] = field(default_factory=list)
    """Why a split gave no rows (its window is empty, or holds no live impressions), one line each."""


def scoring_store(run: Path, cfg, data: str | None, progress: Progress | None = None, trained=None):
    """The run's own store when ``data`` is None or its training data, else ``data`` in the run's vocabularies."""
    from farmcli.data.build import build_samples
    from farmcli.paths import sample_cache
    from farmcli.sources import dataset_dir

    trained = trained if trained is not None else run_store(run, cfg)
    if data is None:
        return trained
    root = dataset_dir(dataclasses.replace(cfg.data, source=data), progress, training=False)
    if Path(trained.manifest.get("dataset", "")).resolve() == root.resolve():
        return trained
    what = f"encoding {root.name} with the run's vocabularies"
    done = (lambda step, d, t: progress(f"{what}: {step}", d, t)) if progress else None
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else sample_cache()
    store = build_samples(
        root,
        cache,
        history_len=cfg.data.history_len,
        min_count=cfg.data.min_count,
        on_progress=done,
        vocab_from=trained,
    )
    if store.history_len != trained.history_len:
        raise UserError(
            f"{root}: histories of length {store.history_len}, the run was trained on {trained.history_len}."
        )
    return store


def predict_run(
    target: str | Path,
    out: str | Path,
    data: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    accelerator: str = "auto",
    bf16: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PredictResult:
    """Write OUT.parquet: user_id, author_id, ts, split and p_<task> per impression, one batch at a time; an empty
    split's rows are none and ``notes`` says why. Inputs that need no data are checked before torch loads."""
    from farmcli.config import resolve
    from farmcli.machine import check_accelerator, device_for

    out = output_path(out, "--out", "scores.parquet") or Path()
    if split not in SPLIT_CHOICES:
        raise UserError(f"--split '{split}': choose one of {', '.join(SPLIT_CHOICES)}.")
    splits = ("train", "valid", "test") if split == "all" else (split,)
    check_accelerator(accelerator)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    if data is not None and not str(data).strip():
        raise UserError("--data is empty: give a farm-events/1 directory or a simulator preset, or leave it out.")
    check_predictions_name(out, "--out")
    check_output_file(out, "--out", overwrite, (FORMAT, PREDICTIONS_FORMAT))
    run, ckpt = locate(target)
    cfg = resolve([run / "config.yaml"])
    device_for(accelerator)
    trained = run_store(run, cfg)
    check_trained_on(ckpt, read_checkpoint(ckpt), trained)  # before any other data is encoded
    store = scoring_store(run, cfg, data, progress, trained=trained)
    module = load_module(ckpt, store)
    from farmcli.data.module import data_module
    from farmcli.scoring import ParquetPredictions, interrupts_as_keyboard, scoring_trainer

    scored = tuple(s for s in splits if store.n(s))  # an empty split has no batches for the predict loop
    with atomic_path(out) as tmp:
        writer = ParquetPredictions(
            tmp, store, scored, {"farmcli": FORMAT, "run": str(run), "checkpoint": str(ckpt)}, progress
        )
        try:
            if scored:
                if progress:
                    progress("scoring", 0, writer.total)
                data_mod = data_module(
                    cfg, store, eval_batch_size=batch_size or cfg.data.batch_size, predict_splits=scored
                )
                trainer = scoring_trainer(accelerator, bf16, [writer])
                with interrupts_as_keyboard(trainer):
                    trainer.predict(module, datamodule=data_mod, return_predictions=False)
        finally:
            writer.close()
    notes = [empty_split_note(store.manifest, s) for s in splits if not store.n(s)]
    return PredictResult(out, {s: store.n(s) for s in splits}, store.path, ckpt, notes)
