"""One scoring loop: Lightning's test loop scores a split (after ``fit``, ``farm eval``) and its predict loop
writes scores (``farm predict``), so the numbers come from one place (``FarmModule.test_step`` / ``predict_step``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar

from farmcli.batch import TASKS
from farmcli.logs import quiet_lightning
from farmcli.machine import device_for

if TYPE_CHECKING:
    from farmcli.data.module import FarmDataModule
    from farmcli.model.module import FarmModule

ID_COLUMNS = ("user_id", "author_id", "ts")
Progress = Callable[[str, int, "int | None"], None]  # (what, samples scored, total): evaluation's, not imported


def probabilities(logits: np.ndarray) -> np.ndarray:
    """sigmoid in float64 then float32: the p_<task> columns of farm eval and farm predict alike."""
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def scoring_trainer(accelerator: str = "auto", bf16: bool = False, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A one-device Trainer that only scores (farm eval, farm predict): no logger, no checkpoints, no bar."""
    device = device_for(accelerator)  # a clear message where a GPU is asked for and absent
    quiet_lightning()
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if bf16 else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=list(callbacks),
    )


@contextlib.contextmanager
def interrupts_as_keyboard(trainer: L.Trainer) -> Iterator[None]:
    """Lightning answers Ctrl-C by stopping its loop and calling sys.exit(1): that is still an interrupt."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


class ScoringPass(L.Callback):
    """The test loop's logits in split order (with ``keep``, for --save-predictions; on their device until the end)
    and its progress as ``progress(what, samples scored, total)``: ``farm eval``'s bar (its Trainer draws none)."""

    def __init__(self, keep: bool, progress: Progress | None, what: str, total: int) -> None:
        self.keep, self.progress, self.what, self.total = keep, progress, what, total
        self.chunks: list[torch.Tensor] = []
        self.done = 0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.chunks, self.done = [], 0
        if self.progress is not None:
            self.progress(self.what, 0, self.total)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        if self.keep:
            self.chunks.append(outputs["logits"].float())
        self.done += len(outputs["logits"])
        if self.progress is not None:
            self.progress(self.what, self.done, self.total)

    def logits(self) -> np.ndarray:
        if not self.chunks:
            return np.empty((0, len(TASKS)), np.float32)
        return torch.cat(self.chunks).cpu().numpy()


def pass_label(split: str) -> str:
    """The name of one scoring pass on its bar (Lightning calls both post-fit passes "Testing")."""
    return f"scoring {split} split"


class PassProgressBar(RichProgressBar):
    """Lightning's rich bar with epochs counted from 1 and each scoring pass named (``test_label``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.test_label = "Testing"

    @property
    def test_description(self) -> str:
        return self.test_label

    def _get_train_description(self, current_epoch: int) -> str:
        """Epochs counted from 1, as run.json does: "Epoch 1/3" for the first of three (Lightning: "Epoch 0/2")."""
        most = self.trainer.max_epochs
        text = f"Epoch {current_epoch + 1}" + (f"/{most}" if most is not None and most >= 0 else "")
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": the bar does not flicker

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        """Without ``v_num``: a run directory has no versions (two loggers showed ``v_num: _0_1``)."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def score_split(
    trainer: L.Trainer, module: FarmModule, datamodule: FarmDataModule, ckpt_path: str | None = None
) -> dict:
    """The grouped tables of ``datamodule.test_split`` from the test loop, with the precision they were scored in."""
    module.test_tables = None
    if isinstance(trainer.progress_bar_callback, PassProgressBar):
        trainer.progress_bar_callback.test_label = pass_label(datamodule.test_split)
    if datamodule.store.n(datamodule.test_split):  # an empty split has no loop to run (the caller says why)
        with interrupts_as_keyboard(trainer):
            trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if module.test_tables is None:  # an empty split: its tables of undefined cells, made by the hooks themselves
        module.on_test_epoch_start()
        module.on_test_epoch_end()
    assert module.test_tables is not None
    return {**module.test_tables, "precision": str(trainer.precision)}


class ParquetPredictions(BasePredictionWriter):
    """Streams each predicted batch (one dataloader per split) to a parquet file: ids, ts, split, p_<task>."""

    def __init__(self, path: Path, store, splits: Sequence[str], metadata: dict[str, str], progress=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(write_interval="batch")
        self.store, self.splits, self.progress = store, tuple(splits), progress
        ids = [(k, pa.int64()) for k in ID_COLUMNS]
        self.schema = pa.schema([*ids, ("split", pa.string()), *((f"p_{t}", pa.float32()) for t in TASKS)], metadata)
        self.writer = pq.ParquetWriter(path, self.schema)
        self.offsets = [0] * len(self.splits)
        self.total = sum(store.n(s) for s in self.splits)
        self.done = 0

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        import pyarrow as pa

        split = self.splits[dataloader_idx]
        probs = probabilities(prediction.float().cpu().numpy())
        n = len(probs)
        rows = slice(self.offsets[dataloader_idx], self.offsets[dataloader_idx] + n)
        self.offsets[dataloader_idx] += n
        arrays = self.store.split(split)
        cols = [
            *(pa.array(np.asarray(getattr(arrays, k)[rows], dtype=np.int64)) for k in ID_COLUMNS),
            pa.array([split] * n, type=pa.string()),
            *(pa.array(probs[:, i]) for i in range(len(TASKS))),
        ]
        self.writer.write_table(pa.Table.from_arrays(cols, schema=self.schema))
        self.done += n
        if self.progress:
            self.progress("scoring", self.done, self.total)

    def close(self) -> None:
        self.writer.close()
