"""Lightning DataModule over a sample store: each batch is one vectorised gather, never one object per sample.

Ranks shard the index themselves (``use_distributed_sampler=False`` in the Trainer): rank r of W reads
samples r, r + W, ... of the epoch's permutation, so each rank reads its own slice. Evaluation repeats no
sample to even out the ranks (metrics gather every prediction exactly once); training drops the last
n mod W samples of each epoch's permutation instead, so every rank takes the same number of steps (DDP
needs that) and no sample is dropped for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from farmcli.data.store import SampleStore


class SplitBatches(Dataset):
    """Indexed by an array of sample indices (from :class:`BatchIndexSampler`); returns the model batch."""

    def __init__(self, store: SampleStore, split: str):
        self.store, self.split = store, split

    def __len__(self) -> int:
        return self.store.n(self.split)

    def __getitem__(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return self.store.batch(self.split, idx)


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
    ):
        super().__init__()
        self.store = store
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def loader(self, split: str, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        rank, world = self._rank_world()
        sampler = BatchIndexSampler(
            self.store.n(split),
            batch_size or self.eval_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world=world,
        )
        return DataLoader(
            SplitBatches(self.store, split),
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}
