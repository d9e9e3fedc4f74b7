"""Score a split with a trained model and report AUC / UAUC / GAUC per task and user group (plus the oracle)."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from farmcli.batch import ACTIVITY_LEVELS, TASKS
from farmcli.errors import UserError
from farmcli.io import atomic_path, check_output_file, output_path, read_json
from farmcli.metric_names import KINDS, PER_USER_KINDS
from farmcli.runs import CKPT_STORE_KEY, alive, read_checkpoint, recorded_path, run_data_gone, stored_path, unreadable
from farmcli.tables_io import csv_text, write_table

if TYPE_CHECKING:
    import torch

MIN_USERS = 30
"""Fewest users (with both classes) behind a UAUC / GAUC cell that the printed table shows without a mark: a
per-user mean over a few users is mostly their luck (one AUC of 0 moves a mean of five by 20 points). The value
is still written; 30 is the usual size at which a mean of bounded values is read as roughly normal."""
FEW_USERS_MARK = "\u2020"
"""The dagger after a UAUC / GAUC cell from fewer than ``MIN_USERS`` users, explained under the table."""
Progress = Callable[[str, int, "int | None"], None]
"""A library progress callback ``(what, done, total)``: the CLI draws it as a bar, a notebook may pass none."""
PREDICTIONS_FORMAT = "farm-eval-predictions/1"
"""The parquet metadata mark of --save-predictions files (--overwrite replaces only farm's files)."""
PREDICT_FORMAT = "farm-predictions/1"
"""The same mark in `farm predict`'s files."""


@dataclass
class Predictions:
    """Scores (logits) of one split beside everything needed to group and label them."""

    logits: np.ndarray  # [N, 6]
    labels: np.ndarray  # [N, 6]
    user_id: np.ndarray
    author_id: np.ndarray
    ts: np.ndarray
    activity: np.ndarray
    p: np.ndarray | None

    def write_parquet(self, path: str | Path) -> None:
        import polars as pl

        from farmcli.scoring import probabilities

        cols = {"user_id": self.user_id, "author_id": self.author_id, "ts": self.ts}
        cols.update({t: self.labels[:, i].astype(np.int8) for i, t in enumerate(TASKS)})
        probs = probabilities(self.logits)
        cols.update({f"p_{t}": probs[:, i] for i, t in enumerate(TASKS)})
        with atomic_path(path) as tmp:
            pl.DataFrame(cols).write_parquet(tmp, metadata={"farmcli": PREDICTIONS_FORMAT})


def batches(
    store, split: str, idx: np.ndarray | None = None, batch_size: int = 8192, device: torch.device | None = None
) -> Iterator[tuple[slice | np.ndarray, dict[str, torch.Tensor]]]:
    """(rows, model batch on ``device``) over a split (or its rows ``idx``) in order, gathered as in training."""
    import torch

    from farmcli.data.device_store import DeviceStore

    device = device or torch.device("cpu")
    n = store.n(split) if idx is None else len(idx)
    fits = device.type == "cuda" and DeviceStore.fits(store, device, (split,))
    on_device = DeviceStore(store, device, (split,)) if fits else None
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size)) if idx is None else idx[start : start + batch_size]
        if on_device is None:
            yield rows, {k: v.to(device, non_blocking=True) for k, v in store.batch(split, rows).items()}
        else:
            where = torch.arange(rows.start, rows.stop) if isinstance(rows, slice) else torch.as_tensor(rows)
            yield rows, on_device.batch(split, where.to(device, non_blocking=True))


def score(
    module, store, data, accelerator: str, bf16: bool, keep_predictions: bool = False, progress: Progress | None = None
) -> tuple[dict, Predictions | None]:
    """The grouped tables of ``data.test_split``, and with ``keep_predictions`` its scores beside its labels."""
    from farmcli.scoring import ScoringPass, pass_label, score_split, scoring_trainer

    watch = ScoringPass(keep_predictions, progress, pass_label(data.test_split), store.n(data.test_split))
    tables = score_split(scoring_trainer(accelerator, bf16, [watch]), module, data)
    if not keep_predictions:
        return tables, None
    s = store.split(data.test_split)
    columns = {k: np.array(getattr(s, k)) for k in ("labels", "user_id", "author_id", "ts", "activity")}
    return tables, Predictions(logits=watch.logits(), **columns, p=None if s.p is None else np.array(s.p))


def only_groups(tables: dict, groups: tuple[str, ...]) -> dict:
    """The test loop's tables (every activity group) cut to the full population and ``groups``, in that order."""
    check_groups(groups)
    keep = ("full", *groups)
    cut = {k: None if tables.get(k) is None else {g: tables[k][g] for g in keep} for k in ("model", "oracle")}
    out = {**cut, "samples": tables["samples"]}
    if "precision" in tables:
        out["precision"] = tables["precision"]
    return out


def check_groups(groups: tuple[str, ...]) -> None:
    unknown = [g for g in groups if g not in ACTIVITY_LEVELS]
    if unknown:
        raise UserError(
            f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(ACTIVITY_LEVELS)} "
            f"(full is always reported)."
        )


def to_csv(tables: dict) -> str:
    """One row per task of each of the model's groups, then of the oracle's."""
    return csv_text(
        ["source", "group", "task", *KINDS, "n_users", "n_skipped", "n_samples"],
        (
            [source, group, task, *(_pct(r[k]) for k in KINDS), r["n_users"], r["n_skipped"], r["n_samples"]]
            for source in ("model", "oracle")
            for group, per_task in (tables.get(source) or {}).items()
            for task, r in per_task.items()
        ),
    )


def _pct(x: float) -> float | str:
    return "" if x != x else round(100 * x, 4)


def as_percent(tables: dict) -> dict:
    """The JSON form: AUC / UAUC / GAUC in percent, an undefined AUC as null."""
    return {
        k: (None if v != v else 100 * v) if k in KINDS else as_percent(v) if isinstance(v, dict) else v
        for k, v in tables.items()
    }


def few_users(cell: dict, kind: str) -> bool:
    """Whether a UAUC / GAUC cell rests on fewer than ``MIN_USERS`` users (AUC, undefined or older cells: never)."""
    n = cell.get("n_users")
    return kind in PER_USER_KINDS and cell.get(kind) is not None and isinstance(n, int) and n < MIN_USERS


def eval_name(split: str, bf16: bool = False) -> str:
    """The stem of a split's table files: eval-SPLIT-bf16 for a ``--bf16`` pass, so it never replaces the fp32 one."""
    return f"eval-{split}-bf16" if bf16 else f"eval-{split}"


def write_tables(tables: dict, run_dir: Path, split: str, extra: dict | None = None, bf16: bool = False) -> dict:
    """RUN/eval-SPLIT.json and .csv, atomically (with ``min_users``, below which a cell is marked); returns the JSON."""
    body = {"split": split, "unit": "percent", "min_users": MIN_USERS, **(extra or {}), **as_percent(tables)}
    write_table(run_dir / eval_name(split, bf16), csv=to_csv(tables), json=body)
    return body


def locate(target: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(run directory, checkpoint) from a run directory (its best checkpoint) or a checkpoint inside one."""
    if not str(target).strip():
        raise UserError("The run is an empty path: give a run directory of `farm train` (e.g. farm-runs/RUN).")
    target = Path(target)
    if target.is_dir():
        run = target
        best = read_json(run / "run.json").get("best_checkpoint")
        ckpts = [run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"]
        if isinstance(best, str) and best and recorded_path(run, best).resolve().is_relative_to(run.resolve()):
            ckpts.insert(0, recorded_path(run, best))
        ckpt = next((c for c in ckpts if c.is_file()), None)
        if ckpt is None:
            raise UserError(no_checkpoint(run))
    elif target.is_file() and target.suffix == ".ckpt":
        ckpt, run = target, target.parent.parent
    else:
        raise UserError(f"{target}: no such run directory or .ckpt file.")
    if not (run / "config.yaml").is_file():
        raise UserError(
            f"{ckpt}: its run directory {run} has no config.yaml, which says which data it was trained "
            f"on. Evaluate checkpoints inside their run directory (RUN/checkpoints/*.ckpt)."
        )
    return run, ckpt


def no_checkpoint(run: Path) -> str:
    """Why a run directory has no checkpoint: still in its first epoch, stopped before it ended, or not a run."""
    if not (run / "config.yaml").is_file() or not (run / "run.json").is_file():
        return f"{run}: no checkpoints/best.ckpt or last.ckpt. Is this a run directory of `farm train`?"
    info = read_json(run / "run.json")
    if info.get("status") in ("running", "evaluating") and alive(info):
        return (
            f"{run} is still in its first epoch (process {info.get('pid')} on {info.get('host')}): it has no "
            f"checkpoint to score yet. Try again once its first epoch has ended."
        )
    status = info.get("status", "unknown")
    return (
        f"{run}: the run was stopped before its first epoch ended (run.json says {status}), so it saved no "
        f"checkpoint and there is nothing to score. Train it again as a new run: `farm train --config "
        f"{run}/config.yaml --fit.name NEW` (a run without a checkpoint cannot be resumed), or delete {run} "
        f"(rm -r {run}) and repeat your first command."
    )


def check_trained_on(ckpt: Path, contents: dict, store) -> None:
    """The checkpoint was trained on ``store``'s samples or vocabularies: its store key, or vocabulary sizes, match."""
    key = (store.manifest.get("settings") or {}).get("vocab_from") or store.manifest.get("key")
    trained = contents.get(CKPT_STORE_KEY)
    sizes = (contents.get("hyper_parameters") or {}).get("vocab") or {}
    differs = [k for k, v in sizes.items() if store.model_shapes.get(k, v) != v]
    if (trained and key and trained != key) or differs:
        what = (
            f"sizes {', '.join(f'{k} {sizes[k]} vs {store.model_shapes[k]}' for k in differs)}"
            if differs
            else f"sample store {str(trained)[:16]}, the data gives {str(key)[:16]}"
        )
        raise UserError(
            f"{ckpt} was trained on other data than {store.manifest.get('dataset', store.path)} ({what}), so "
            f"its scores there would be meaningless (AUC near 50). Use the checkpoint inside the run that trained "
            f"on this data, or train a run on it (farm train --data DIR)."
        )


def load_module(ckpt: Path, store=None):
    """The trained FarmModule of a checkpoint on the CPU; a truncated, foreign or other data's file is a user error."""
    from farmcli.model.module import FarmModule

    contents = read_checkpoint(ckpt)
    if store is not None:
        check_trained_on(ckpt, contents, store)
    del contents
    try:
        return FarmModule.load_from_checkpoint(ckpt, map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError) as e:
        raise UserError(unreadable(ckpt, e)) from None


def run_store(run: Path, cfg):
    """The sample store the run was trained on; a changed or gone dataset is refused."""
    from farmcli.data.store import SampleStore
    from farmcli.sources import sample_store

    info = read_json(run / "run.json")
    path, key = info.get("store"), info.get("store_key")
    if path and Path(path).is_dir():
        try:
            store = SampleStore.open(path)
            if store.manifest.get("key") == key:
                return store
        except UserError:
            pass
    gone = run_data_gone(run, cfg, path)
    if gone:
        raise UserError(gone)
    store = sample_store(cfg.data)
    if key and store.manifest.get("key") != key:
        raise UserError(
            f"{run}: its data ({cfg.data.source}) changed since the run was trained, so its "
            f"vocabularies no longer match the checkpoint. Train again on the new data."
        )
    return store


def check_predictions_name(path: Path, option: str) -> None:
    """A predictions file is parquet: another suffix (preds.csv) is refused (a directory: ``check_output_file``)."""
    if path.suffix != ".parquet" and not path.is_dir():
        raise UserError(
            f"{option} {path}: give a .parquet file name (the file is written as parquet), e.g. "
            f"{path.with_suffix('.parquet')}."
        )


def empty_split_note(manifest: dict, split: str) -> str:
    """Why a split has no samples, from the manifest: its window is empty, or holds no live impressions."""
    start, end = (manifest.get("windows") or {}).get(split, (None, None))

    def day(ms) -> str:
        return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M") if ms is not None else "?"

    bounds = {"train": "train_start .. train_end", "valid": "train_end .. valid_end", "test": "valid_end .. test_end"}
    dataset = manifest.get("dataset", "the dataset")
    low, high = bounds.get(split, "..").split(" .. ")
    if start is not None and start == end:
        return (
            f"no {split} samples: {dataset} has no {split} window ({high} = {low} = {day(start)} UTC in its "
            f"manifest.json)."
        )
    return (
        f"no {split} samples: the {split} window [{day(start)}, {day(end)}) UTC of {dataset} holds no live "
        f"impressions. Check its manifest.json ({bounds.get(split, '')}) and the live table's ts."
    )


def evaluate_run(
    target: str | os.PathLike[str],
    split: str = "test",
    groups: tuple[str, ...] = ACTIVITY_LEVELS,
    save_predictions: str | Path | None = None,
    accelerator: str = "auto",
    bf16: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[dict, Path, Path]:
    """Score a split with a run's checkpoint into RUN/eval-SPLIT.{json,csv}, every input checked first."""
    from farmcli.config import resolve
    from farmcli.machine import check_accelerator, device_for

    if split not in ("test", "valid"):
        raise UserError(f"unknown split '{split}'; choose test or valid.")
    check_groups(groups)
    out = output_path(save_predictions, "--save-predictions", "predictions.parquet")
    if out is not None:
        check_predictions_name(out, "--save-predictions")
        check_output_file(out, "--save-predictions", overwrite, (PREDICTIONS_FORMAT, PREDICT_FORMAT))
    check_accelerator(accelerator)
    run, ckpt = locate(target)
    cfg = resolve([run / "config.yaml"])
    device_for(accelerator)  # torch: is the GPU asked for there?
    store = run_store(run, cfg)
    module = load_module(ckpt, store)
    from farmcli.data.module import data_module

    data = data_module(cfg, store, test_split=split)
    all_groups, pred = score(
        module, store, data, accelerator, bf16, keep_predictions=out is not None, progress=progress
    )
    tables = only_groups(all_groups, groups)
    write_tables(tables, run, split, extra={"checkpoint": stored_path(run, ckpt), "variant": cfg.variant}, bf16=bf16)
    if pred is not None and out is not None:
        pred.write_parquet(out)
    return tables, run, ckpt
