"""One scoring loop: Lightning's test loop scores a split (the evaluation after ``fit``, ``farm eval``) and its
predict loop writes scores (``farm predict``), so the trainer's device, precision and strategy apply to all
three and the numbers come from one place (``FarmModule.test_step`` / ``predict_step``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from farmcli.batch import TASKS
from farmcli.errors import UserError

if TYPE_CHECKING:
    from farmcli.model.module import FarmModule

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")


def device_for(accelerator: str = "auto") -> torch.device:
    """The device an --accelerator option names; asking for a GPU that torch does not see is a user error."""
    if accelerator not in ACCELERATORS:
        raise UserError(f"--accelerator '{accelerator}': choose auto, cpu or gpu.")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("accelerator 'gpu' was asked for but torch sees no CUDA device.")
        return torch.device("cuda")
    return torch.device("cpu")


def probabilities(logits: np.ndarray) -> np.ndarray:
    """sigmoid in float64 then float32: the p_<task> columns of farm eval and farm predict alike."""
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def scoring_trainer(accelerator: str = "auto", bf16: bool = False, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A one-device Trainer that only scores (farm eval, farm predict): no logger, no checkpoints, no bar."""
    from farmcli.logs import quiet_lightning

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


class CollectLogits(L.Callback):
    """The test loop's logits in split order (for --save-predictions), kept on their device until the end."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.chunks = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        self.chunks.append(outputs["logits"].float())

    def logits(self) -> np.ndarray:
        if not self.chunks:
            return np.empty((0, len(TASKS)), np.float32)
        return torch.cat(self.chunks).cpu().numpy()


def score_split(
    trainer: L.Trainer, module: FarmModule, datamodule: L.LightningDataModule, ckpt_path: str | None = None
) -> dict:
    """Score ``datamodule.test_split`` with the test loop (``ckpt_path``: weights to load first); the grouped
    tables of ``FarmModule.test_tables``."""
    module.test_tables = None
    with interrupts_as_keyboard(trainer):
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if module.test_tables is None:  # an empty split: Lightning skips the loop and its hooks
        module.on_test_epoch_start()
        module.on_test_epoch_end()
    assert module.test_tables is not None
    return module.test_tables


class ParquetPredictions(BasePredictionWriter):
    """Streams each predicted batch to a parquet file (user_id, author_id, ts, split, p_<task>): bounded memory
    at any dataset size. The predict loop's batches come in split order, one dataloader per split."""

    def __init__(self, path: Path, store, splits: Sequence[str], metadata: dict[str, str], progress=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(write_interval="batch")
        self.store, self.splits, self.progress = store, tuple(splits), progress
        self.schema = pa.schema(
            [
                ("user_id", pa.int64()),
                ("author_id", pa.int64()),
                ("ts", pa.int64()),
                ("split", pa.string()),
                *((f"p_{t}", pa.float32()) for t in TASKS),
            ],
            metadata=metadata,
        )
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
            pa.array(np.asarray(arrays.user_id[rows], dtype=np.int64)),
            pa.array(np.asarray(arrays.author_id[rows], dtype=np.int64)),
            pa.array(np.asarray(arrays.ts[rows], dtype=np.int64)),
            pa.array([split] * n, type=pa.string()),
            *(pa.array(probs[:, i]) for i in range(len(TASKS))),
        ]
        self.writer.write_table(pa.Table.from_arrays(cols, schema=self.schema))
        self.done += n
        if self.progress:
            self.progress("scoring", self.done, self.total)

    def close(self) -> None:
        self.writer.close()
