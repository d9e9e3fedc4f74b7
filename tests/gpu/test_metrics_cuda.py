"""The grouped AUC computed on CUDA equals the CPU's (evaluation computes it on the device it scores on)."""

from __future__ import annotations

import math

import pytest
import torch

from farmcli.metrics import GroupedAUC, grouped_auc

TOL = 1e-6


def data(n: int = 200_000, tasks: int = 6, users: int = 5_000, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    user_ids = torch.randint(0, users, (n,), generator=g) * 7919 + 10**12  # raw, sparse, large ids
    labels = (torch.rand(n, tasks, generator=g) < torch.linspace(0.02, 0.5, tasks)).long()
    scores = ((torch.randn(n, tasks, generator=g) + labels) * 20).round() / 20  # many ties
    group_ids = torch.randint(-1, 3, (n,), generator=g)  # -1: no group
    return scores, labels, user_ids, group_ids


def assert_close(got: dict, want: dict) -> None:
    for k in ("auc", "uauc", "gauc"):
        if math.isnan(want[k]):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(want[k], abs=TOL), k
    for k in ("n_users", "n_skipped", "n_samples"):
        assert got[k] == want[k], k


def test_grouped_auc_metric_on_cuda_equals_the_cpus():
    scores, labels, users, gids = data()
    cpu = GroupedAUC(num_tasks=6)
    cuda = GroupedAUC(num_tasks=6).to("cuda")
    for idx in torch.arange(scores.shape[0]).split(20_000):  # in batches, as evaluation feeds it
        cpu.update(scores[idx], labels[idx], users[idx], gids[idx])
        cuda.update(*(t[idx].cuda() for t in (scores, labels, users, gids)))
    want, got = cpu.compute(), cuda.compute()
    assert list(got) == list(want) == ["full", "low", "mid", "high"]
    for group in want:
        for task in want[group]:
            assert_close(got[group][task], want[group][task])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_auc_on_cuda_equals_the_cpus(dtype):
    scores, labels, users, _ = data(n=100_000, tasks=1)
    s = scores[:, 0].to(dtype)
    want = grouped_auc(s, labels[:, 0], users)
    got = grouped_auc(s.cuda(), labels[:, 0].cuda(), users.cuda())
    assert_close(got, want)
