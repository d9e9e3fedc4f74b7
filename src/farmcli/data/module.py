"""Lightning DataModule over a sample store: each batch is one vectorised gather, never one object per sample.

Ranks shard the index themselves (``use_distributed_sampler=False`` in the Trainer): rank r of W reads
samples r, r + W, ... of the epoch's permutation, so each rank reads its own slice. Evaluation repeats no
sample to even out the ranks (metrics gather every prediction exactly once); training drops the last
n mod W samples of each epoch's permutation instead, so every rank takes the same number of steps (DDP
needs that) and no sample is dropped for good.

Where the batches are gathered (``device_store``): on a CUDA device whose free memory holds the store's arrays
(``auto``), the loaders yield only the sample indices (:class:`IndexBatch`, no worker processes) and the batch
is gathered on the device by :class:`~farmcli.data.device_store.DeviceStore` once Lightning has moved the
indices there (``on_after_batch_transfer``). Otherwise each batch is gathered on the CPU (in ``num_workers``
processes), into pinned memory when the trainer's device is CUDA, and Lightning copies it without blocking.
Either way the sampler is the same, so a run reads the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from farmcli.data.checks import check_monitor_defined
from farmcli.data.device_store import DEFAULT_SHARE, DeviceStore, concrete_device
from farmcli.data.schema import SPLITS
from farmcli.data.store import SampleStore
from farmcli.errors import UserError

DEVICE_STORE_MODES = ("auto", "always", "never")
"""``auto``: the store's arrays on the device when it is CUDA and they fit; ``always``: on whatever device the
trainer has (the CPU too: how the tests check it); ``never``: batches gathered on the CPU."""


class SplitBatches(Dataset):
    """Indexed by an array of sample indices (from :class:`BatchIndexSampler`); returns the model batch."""

    def __init__(self, store: SampleStore, split: str):
        self.store, self.split = store, split

    def __len__(self) -> int:
        return self.store.n(self.split)

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return self.store.batch(self.split, idx)


class IndexBatch(NamedTuple):
    """What a loader yields when batches are gathered on the device: the split and its samples' indices [B]."""

    split: str
    idx: torch.Tensor


class SplitIndices(SplitBatches):
    """Indexed like :class:`SplitBatches`, but returns the indices alone (gathered later, on the device)."""

    def __getitem__(self, idx: np.ndarray) -> IndexBatch:  # type: ignore[override]
        return IndexBatch(self.split, torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)))


class BatchIndexSampler(Sampler[np.ndarray]):
    """Yields arrays of sample indices: a seeded permutation per epoch (train) or contiguous slices (eval)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
    ):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.drop_last = rank, world, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> np.ndarray:
        if self.shuffle:
            idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            idx = idx[: self.n - self.n % self.world]
        else:
            idx = np.arange(self.n)
        return idx[self.rank :: self.world]

    def _count(self) -> int:
        if self.shuffle:
            return self.n // self.world
        return len(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        m = self._count()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        idx = self._indices()
        for i in range(len(self)):
            yield idx[i * self.batch_size : (i + 1) * self.batch_size]


class FarmDataModule(L.LightningDataModule):
    def __init__(
        self,
        store: SampleStore,
        batch_size: int = 1024,
        eval_batch_size: int = 8192,
        num_workers: int = 0,
        seed: int = 0,
        device_store: str = "auto",
        device_store_share: float = DEFAULT_SHARE,
        test_split: str = "test",
        predict_splits: Sequence[str] = ("test",),
    ):
        """``test_split``: the split the test loop scores (farm eval scores either); ``predict_splits``: those
        the predict loop scores, one dataloader each, in order (farm predict --split all)."""
        super().__init__()
        if device_store not in DEVICE_STORE_MODES:
            raise UserError(f"data.device_store '{device_store}': choose one of {', '.join(DEVICE_STORE_MODES)}.")
        if not 0 < device_store_share <= 1:
            raise UserError(f"data.device_store_share {device_store_share}: give a share of memory in (0, 1].")
        self.store = store
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.device_store_mode, self.device_store_share = device_store, device_store_share
        self._device_store: DeviceStore | None = None
        self.test_split, self.predict_splits = test_split, tuple(predict_splits)

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _root_device(self) -> torch.device | None:
        """The device the trainer puts batches on (None without a trainer)."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else trainer.strategy.root_device

    def device_store(self, device: torch.device | None = None) -> DeviceStore | None:
        """The store's arrays on ``device`` (default: the trainer's, else the CPU) when batches are gathered
        there (see DEVICE_STORE_MODES), else None. Made once per device."""
        device = concrete_device(device if device is not None else (self._root_device() or torch.device("cpu")))
        if self.device_store_mode == "never":
            return None
        if self._device_store is not None and self._device_store.device == device:
            return self._device_store  # decided once: the copy itself now takes some of the free memory
        if self.device_store_mode == "auto" and (
            device.type != "cuda" or not DeviceStore.fits(self.store, device, SPLITS, self.device_store_share)
        ):
            return None
        self._device_store = None  # an earlier device's copy goes before the new one is made
        self._device_store = DeviceStore(self.store, device, SPLITS)
        return self._device_store

    def loader(self, split: str, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        rank, world = self._rank_world()
        sampler = BatchIndexSampler(
            self.store.n(split), batch_size or self.eval_batch_size, shuffle, self.seed, rank, world
        )
        root = self._root_device()
        pin = root.type == "cuda" if root is not None else torch.cuda.is_available()
        on_device = self.device_store() is not None
        workers = 0 if on_device else self.num_workers  # indices only: nothing for a worker to do
        dataset: Dataset = SplitIndices(self.store, split) if on_device else SplitBatches(self.store, split)
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Gather an :class:`IndexBatch` on the device its indices were moved to; anything else as it is."""
        if isinstance(batch, IndexBatch):
            store = self._device_store
            if store is None or store.device != batch.idx.device:
                self._device_store = None
                store = self._device_store = DeviceStore(self.store, batch.idx.device, SPLITS)
            return store.batch(batch.split, batch.idx)
        return batch

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.test_split)

    def predict_dataloader(self) -> list[DataLoader]:
        return [self.loader(split) for split in self.predict_splits]

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}


def data_module(cfg, store: SampleStore, **overrides: Any) -> FarmDataModule:
    """The LightningDataModule of a RunConfig ``cfg``'s data settings over ``store`` (``overrides``: its other arguments,
    e.g. the split the test loop scores). A fit's (no split to score or predict in ``overrides``) is refused before the
    fit starts where the validation labels leave ``fit.monitor`` undefined (:func:`~farmcli.data.checks.check_monitor_defined`)."""
    if not {"test_split", "predict_splits"} & overrides.keys():
        check_monitor_defined(store, cfg.fit.monitor, cfg.data.source)
    d = cfg.data
    names = ("batch_size", "eval_batch_size", "num_workers", "device_store", "device_store_share")
    settings: dict[str, Any] = {"seed": cfg.seed, **{k: getattr(d, k) for k in names}}
    return FarmDataModule(store, **{**settings, **overrides})
