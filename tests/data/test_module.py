"""BatchIndexSampler: how ranks share an epoch (DDP reads no sample twice in evaluation, steps evenly in training)."""

from __future__ import annotations

import numpy as np
import pytest

from farmcli.data.module import BatchIndexSampler


def _epoch(n: int, world: int, shuffle: bool, batch: int = 4, epoch: int = 0, drop_last: bool = False):
    out = []
    for rank in range(world):
        s = BatchIndexSampler(n, batch, shuffle, seed=7, rank=rank, world=world, drop_last=drop_last)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert all(len(b) <= batch for b in batches)
        out.append(np.concatenate(batches) if batches else np.empty(0, np.int64))
    return out


@pytest.mark.parametrize("n,world", [(23, 1), (23, 2), (23, 3), (24, 4), (5, 8)])
def test_evaluation_reads_every_sample_exactly_once_across_ranks(n, world):
    ranks = _epoch(n, world, shuffle=False)
    assert sorted(np.concatenate(ranks).tolist()) == list(range(n))
    for rank, idx in enumerate(ranks):  # rank r reads r, r + W, ... in order
        assert idx.tolist() == list(range(rank, n, world))


@pytest.mark.parametrize("n,world", [(23, 1), (23, 2), (23, 3), (5, 8)])
def test_training_ranks_are_disjoint_equal_and_drop_under_world_samples(n, world):
    ranks = _epoch(n, world, shuffle=True)
    sizes = {len(r) for r in ranks}
    assert sizes == {n // world}  # every rank the same number of samples (DDP steps in lockstep)
    seen = np.concatenate(ranks)
    assert len(set(seen.tolist())) == len(seen) == n - n % world  # disjoint; only n mod W left out this epoch
    assert set(seen.tolist()) <= set(range(n))


def test_training_permutation_depends_on_seed_and_epoch_and_not_on_the_rank_count():
    a, b = _epoch(50, 1, True, epoch=0)[0], _epoch(50, 1, True, epoch=1)[0]
    assert sorted(a.tolist()) == sorted(b.tolist()) == list(range(50)) and not np.array_equal(a, b)
    assert np.array_equal(a, _epoch(50, 1, True, epoch=0)[0])  # seeded: the same epoch is the same order
    two = _epoch(50, 2, True, epoch=0)  # the same permutation, dealt out to two ranks
    assert np.array_equal(np.stack(two, 1).reshape(-1), a)


def test_the_left_out_samples_change_from_epoch_to_epoch():
    left_out = []
    for epoch in range(6):
        seen = set(np.concatenate(_epoch(23, 3, True, epoch=epoch)).tolist())
        left_out.append(frozenset(set(range(23)) - seen))
    assert len(set(left_out)) > 1  # no sample is dropped for good


def test_drop_last_counts_whole_batches_only():
    s = BatchIndexSampler(23, 4, shuffle=True, world=2, drop_last=True)
    assert len(s) == 11 // 4 and all(len(b) == 4 for b in s)


# ------------------------------------------------------------------------------------------------
# device_store: batches gathered on the device by index equal those gathered on the CPU
# ------------------------------------------------------------------------------------------------
def _gathered(dm, loader, epoch: int = 0):
    loader.sampler.set_epoch(epoch)
    return [dm.on_after_batch_transfer(b, 0) for b in loader]


def test_device_store_always_yields_indices_and_gathers_the_same_batches(tiny_store):
    import torch

    from farmcli.data.module import FarmDataModule, IndexBatch, SplitBatches, SplitIndices

    never = FarmDataModule(tiny_store, 700, 1000, num_workers=0, seed=3, device_store="never")
    always = FarmDataModule(tiny_store, 700, 1000, num_workers=2, seed=3, device_store="always")
    assert never.device_store() is None and always.device_store() is not None
    for split, make in (("train", "train_dataloader"), ("valid", "val_dataloader"), ("test", "test_dataloader")):
        a, b = getattr(never, make)(), getattr(always, make)()
        assert isinstance(a.dataset, SplitBatches) and isinstance(b.dataset, SplitIndices)
        assert b.num_workers == 0  # indices only: no worker processes
        assert isinstance(next(iter(b)), IndexBatch)
        for epoch in (0, 1):  # the same seeded permutation either way, epoch after epoch
            want, got = _gathered(never, a, epoch), _gathered(always, b, epoch)
            assert len(want) == len(got) == len(a)
            for w, g in zip(want, got):
                assert list(g) == list(w)
                for k in w:
                    assert g[k].dtype == w[k].dtype and torch.equal(g[k], w[k]), (split, epoch, k)


def test_device_store_auto_is_off_on_the_cpu_and_modes_are_checked(tiny_store):
    from farmcli.data.module import FarmDataModule, SplitBatches
    from farmcli.errors import UserError

    dm = FarmDataModule(tiny_store, 64)
    assert dm.device_store_mode == "auto" and dm.device_store() is None
    assert isinstance(dm.train_dataloader().dataset, SplitBatches)
    batch = {"x": np.arange(3)}
    assert dm.on_after_batch_transfer(batch, 0) is batch  # a gathered batch passes through
    with pytest.raises(UserError, match="device_store"):
        FarmDataModule(tiny_store, device_store="sometimes")
    with pytest.raises(UserError, match="share"):
        FarmDataModule(tiny_store, device_store_share=0)


def _fit_batches(store, mode: str) -> dict[str, list]:
    """The batches a Lightning fit hands to training_step and validation_step (2 epochs, a few steps each)."""
    import lightning as L
    import torch

    from farmcli.data.module import FarmDataModule

    seen: dict[str, list] = {"train": [], "valid": []}

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen["train"].append({k: v.clone() for k, v in batch.items()})
            return (self.w * batch["labels"].sum()).sum()

        def validation_step(self, batch, batch_idx):
            seen["valid"].append({k: v.clone() for k, v in batch.items()})

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    dm = FarmDataModule(store, 500, 400, seed=11, device_store=mode)
    trainer.fit(Recorder(), datamodule=dm)
    return seen


@pytest.mark.filterwarnings("ignore:.*does not have many workers.*", "ignore:.*LeafSpec.*")
def test_a_fit_sees_the_same_batches_with_the_store_on_the_device(tiny_store):
    import torch

    want, got = _fit_batches(tiny_store, "never"), _fit_batches(tiny_store, "always")
    assert [len(want[s]) for s in ("train", "valid")] == [6, 4]
    for stage in ("train", "valid"):
        assert len(got[stage]) == len(want[stage])
        for w, g in zip(want[stage], got[stage]):
            assert list(g) == list(w)
            for k in w:
                assert g[k].dtype == w[k].dtype and torch.equal(g[k], w[k]), (stage, k)
    # the two epochs read different permutations
    assert not torch.equal(want["train"][0]["user_id"], want["train"][3]["user_id"])
