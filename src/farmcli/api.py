"""farm's commands as Python functions (docs/API.md): the CLI's checks and files; they return what it prints.

Nothing here prints; a bad input raises ``farmcli.UserError`` with the CLI's message.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farmcli.config import DataConfig, RunConfig, resolve
from farmcli.training import TrainResult

if TYPE_CHECKING:
    import polars as pl

    from farmcli.data.store import SampleStore

PathLike = str | Path


def synth(out: PathLike, preset: str = "tiny", seed: int = 0, overwrite: bool = False, **settings: Any) -> Path:
    """Simulate a farm-events/1 dataset (docs/SIMULATOR.md) into ``out``, as ``farm data synth``; ``settings``:
    any simulator field (``n_users=500``). The same arguments give byte-identical files."""
    from farmcli.data.simulator import sim_config, synthesize

    synthesize(sim_config(preset, **{**settings, "seed": seed}), out, overwrite=overwrite)
    return Path(out)


def build(data: PathLike, history_len: int = 50, min_count: int = 1, cache_dir: PathLike | None = None) -> SampleStore:
    """The sample store of a dataset directory or preset (built once, then reused), as ``farm data build``."""
    from farmcli.sources import sample_store

    cache = None if cache_dir is None else str(cache_dir)
    return sample_store(DataConfig(source=str(data), history_len=history_len, min_count=min_count, cache_dir=cache))


def train(
    config: RunConfig | None = None,
    *,
    variant: str | None = None,
    data: PathLike | None = None,
    config_files: Sequence[PathLike] = (),
    overrides: Mapping[str, Any] | Sequence[str] = (),
    progress: bool = True,
) -> TrainResult:
    """Train as ``farm train`` does and evaluate the best checkpoint on the test split; a resolved ``config``, or
    the CLI's layers: ``config_files`` < ``variant`` < ``overrides`` (``{"trainer.max_epochs": 1}`` or
    ``["--trainer.max_epochs", "1"]``), with ``data`` for ``data.source``."""
    from farmcli.training import train as fit

    if config is None:
        values = {"data": {"source": str(data)}} if data is not None else None
        config = resolve(list(config_files), variant=variant, overrides=overrides, values=values)
    elif variant or data or config_files or overrides:
        raise TypeError("train(): give either a resolved config or variant/data/config_files/overrides, not both")
    return fit(config, show_bar=progress)


def evaluate(
    run: PathLike, split: str = "test", groups: Sequence[str] = ("low", "mid", "high"), bf16: bool = False
) -> dict:
    """A run's AUC / UAUC / GAUC per task and group on ``split``, in percent, as ``farm eval`` (which also writes
    RUN/eval-SPLIT.json and .csv)."""
    from farmcli.evaluation import as_percent, evaluate_run

    tables, _, _ = evaluate_run(run, split=split, groups=tuple(groups), bf16=bf16)
    return as_percent(tables)


def predict(
    run: PathLike, data: PathLike | None = None, split: str = "test", out: PathLike | None = None
) -> pl.DataFrame:
    """Scores of every live impression of ``split`` (of the run's data, or of another dataset ``data``):
    user_id, author_id, ts, split, p_click ... p_gift, as ``farm predict``; also written to ``out`` if given."""
    import polars as pl

    from farmcli.prediction import predict_run

    with tempfile.TemporaryDirectory() as tmp:  # without ``out``, the scores are read back from a temporary file
        path = Path(tmp) / "scores.parquet" if out is None else out
        predict_run(run, path, data=None if data is None else str(data), split=split)
        return pl.read_parquet(path)


def export(run: PathLike, out: PathLike, format: str = "onnx", overwrite: bool = False) -> dict:
    """The serving graph of a run (``onnx`` or ``torchscript``) with ``OUT.json`` (its inputs) and ``OUT.vocab/``,
    as ``farm export``; returns the input spec."""
    from farmcli.exporter import export_run

    return export_run(run, out, fmt=format, overwrite=overwrite)
