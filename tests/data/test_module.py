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
