"""Grouped AUC: agreement with scikit-learn per-user loops, edge cases, invariances, multi-task, DDP."""

from __future__ import annotations

import math
import pickle
import socket

import numpy as np
import pytest
import torch

from farmcli.metrics import GroupedAUC, grouped_auc, grouped_auc_multi, per_user_auc

TOL = 1e-6


def roc_auc_score(y, s):
    # imported lazily: the DDP test's spawned workers import this module and do not need sklearn
    from sklearn.metrics import roc_auc_score as sk_auc

    return sk_auc(y, s)


# ------------------------------------------------------------------------------------------------
# reference: a plain Python loop over users with scikit-learn
# ------------------------------------------------------------------------------------------------
def sklearn_reference(scores, labels, users) -> dict:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    u = np.asarray(users)
    auc = roc_auc_score(y, s) if 0 < y.sum() < len(y) else math.nan
    aucs, weights, skipped = [], [], 0
    for uid in np.unique(u):
        m = u == uid
        if len(np.unique(y[m])) < 2:
            skipped += 1
            continue
        aucs.append(roc_auc_score(y[m], s[m]))
        weights.append(m.sum())
    return {
        "auc": auc,
        "uauc": float(np.mean(aucs)) if aucs else math.nan,
        "gauc": float(np.average(aucs, weights=weights)) if aucs else math.nan,
        "n_users": len(aucs),
        "n_skipped": skipped,
        "n_samples": len(y),
    }


def assert_same(got: dict, want: dict, tol: float = TOL) -> None:
    for k in ("auc", "uauc", "gauc"):
        if math.isnan(want[k]):
            assert math.isnan(got[k]), (k, got[k])
        else:
            assert got[k] == pytest.approx(want[k], abs=tol), k
    for k in ("n_users", "n_skipped", "n_samples"):
        assert got[k] == want[k], k


def make_data(n=2000, n_users=100, ties="round1", pos_rate=0.3, seed=0, dtype=torch.float32):
    """Random scores/labels/users; users 0-9 all negative, 10-19 all positive (single-class)."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, n_users, (n,), generator=g)
    # per-user positive rates, some 0 and some 1, so single-class users exist
    rate = torch.rand(n_users, generator=g) * 2 * pos_rate
    rate[:10] = 0.0
    rate[10:20] = 1.0
    labels = (torch.rand(n, generator=g) < rate[users]).long()
    raw = torch.randn(n, generator=g) + 0.8 * labels  # informative, so AUCs are not all ~0.5
    if ties == "round1":
        scores = (raw * 10).round() / 10
    elif ties == "round2":
        scores = (raw * 100).round() / 100
    elif ties == "int":
        scores = raw.round().long().clamp(-3, 3)
    else:
        scores = raw
    if scores.is_floating_point():
        scores = scores.to(dtype)
    return scores, labels, users


# ------------------------------------------------------------------------------------------------
# agreement with scikit-learn
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ties", "dtype"),
    [
        ("round1", torch.float32),
        ("round2", torch.float32),
        ("int", None),
        ("none", torch.float32),
        ("round1", torch.float64),
        ("round2", torch.float64),
    ],
    ids=["f32-1dec", "f32-2dec", "int", "f32-no-ties", "f64-1dec", "f64-2dec"],
)
def test_agrees_with_sklearn(ties, dtype):
    scores, labels, users = make_data(ties=ties, dtype=dtype)
    want = sklearn_reference(scores, labels, users)
    got = grouped_auc(scores, labels, users)
    assert want["n_skipped"] >= 20  # single-class users really are present
    assert scores.unique().numel() < scores.numel() // 2 or ties == "none"  # and many ties
    assert_same(got, want)


@pytest.mark.parametrize("shift", [-(10**12), 10**15, -5])
def test_any_user_ids(shift):
    """Negative and huge ids take the offset / unique-remap paths and must give the same numbers."""
    scores, labels, users = make_data(ties="round1", seed=3)
    base = grouped_auc(scores, labels, users)
    odd = users * 7919 + shift if abs(shift) > 10 else users + shift
    assert_same(grouped_auc(scores, labels, odd), base, tol=0)


def test_per_user_matches_sklearn():
    scores, labels, users = make_data(n=1500, n_users=80, ties="round1", seed=5)
    pu = per_user_auc(scores, labels, users + 1000)
    s, y, u = scores.numpy(), labels.numpy(), users.numpy() + 1000
    assert pu["users"].tolist() == np.unique(u).tolist()
    rows = zip(pu["users"].tolist(), pu["auc"].tolist(), pu["n_samples"].tolist(), pu["n_pos"].tolist())
    for uid, auc, n, npos in rows:
        m = u == uid
        assert n == m.sum() and npos == y[m].sum()
        if 0 < npos < n:
            assert auc == pytest.approx(roc_auc_score(y[m], s[m]), abs=TOL)
        else:
            assert math.isnan(auc)


def test_hand_example_with_ties():
    # sklearn's docstring example, plus a tied pair counted 1/2 in user 1
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.2])
    labels = torch.tensor([0, 0, 1, 1, 1, 0, 0])
    users = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    got = grouped_auc(scores, labels, users)
    user_aucs = [0.75, (0.5 + 1.0) / 2]
    assert got["uauc"] == pytest.approx(np.mean(user_aucs))
    assert got["gauc"] == pytest.approx((0.75 * 4 + 0.75 * 3) / 7)
    assert got["auc"] == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()))


def test_negative_zero_ties_with_zero():
    scores = torch.tensor([-0.0, 0.0, 0.0, -0.0])
    labels = torch.tensor([1, 0, 1, 0])
    got = grouped_auc(scores, labels, torch.zeros(4, dtype=torch.long))
    assert got["auc"] == 0.5 and got["uauc"] == 0.5


# ------------------------------------------------------------------------------------------------
# edge cases
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [0, 1])
def test_all_one_class(cls):
    scores, _, users = make_data(n=200, n_users=20)
    labels = torch.full_like(users, cls)
    got = grouped_auc(scores, labels, users)
    assert math.isnan(got["auc"]) and math.isnan(got["uauc"]) and math.isnan(got["gauc"])
    assert got["n_users"] == 0 and got["n_skipped"] == users.unique().numel() and got["n_samples"] == 200


def test_single_user():
    scores, labels, _ = make_data(n=300, ties="round1")
    users = torch.full((300,), 42)
    got = grouped_auc(scores, labels, users)
    want = roc_auc_score(labels.numpy(), scores.numpy())
    assert got["auc"] == pytest.approx(want, abs=TOL)
    assert got["uauc"] == pytest.approx(want, abs=TOL) and got["gauc"] == pytest.approx(want, abs=TOL)
    assert got["n_users"] == 1 and got["n_skipped"] == 0


def test_empty():
    e = torch.zeros(0)
    got = grouped_auc(e, e.long(), e.long())
    assert math.isnan(got["auc"]) and math.isnan(got["uauc"]) and math.isnan(got["gauc"])
    assert (got["n_users"], got["n_skipped"], got["n_samples"]) == (0, 0, 0)
    multi = grouped_auc_multi(torch.zeros(0, 3), torch.zeros(0, 3), e.long(), {"full": None, "low": e.bool()})
    assert set(multi) == {"full", "low"} and set(multi["low"]) == {0, 1, 2}
    assert multi["low"][2]["n_samples"] == 0


def test_users_with_one_sample():
    scores, labels, users = make_data(n=500, n_users=30, ties="round1")
    # 40 extra users with a single sample each: no AUC, all skipped
    extra = torch.arange(1000, 1040)
    scores = torch.cat([scores, torch.rand(40)])
    labels = torch.cat([labels, torch.randint(0, 2, (40,))])
    users = torch.cat([users, extra])
    want = sklearn_reference(scores, labels, users)
    got = grouped_auc(scores, labels, users)
    assert_same(got, want)
    every_one_sample = grouped_auc(torch.rand(40), torch.randint(0, 2, (40,)), extra)
    assert every_one_sample["n_users"] == 0 and every_one_sample["n_skipped"] == 40


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        grouped_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="0 or 1"):
        grouped_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="1-D"):
        grouped_auc(torch.rand(3), torch.ones(4), torch.zeros(3))


# ------------------------------------------------------------------------------------------------
# invariances
# ------------------------------------------------------------------------------------------------
def test_permutation_invariant():
    scores, labels, users = make_data(ties="round1", seed=7)
    perm = torch.randperm(scores.numel(), generator=torch.Generator().manual_seed(1))
    assert_same(grouped_auc(scores[perm], labels[perm], users[perm]), grouped_auc(scores, labels, users), tol=1e-12)


def test_monotone_transform_invariant():
    logits, labels, users = make_data(ties="round2", seed=8)  # |logit| small: float32 sigmoid stays 1-to-1
    a = grouped_auc(logits, labels, users)
    assert_same(grouped_auc(torch.sigmoid(logits), labels, users), a, tol=1e-12)
    assert_same(grouped_auc(logits.double() * 3 - 1, labels, users), a, tol=1e-12)


# ------------------------------------------------------------------------------------------------
# multi-task and groups
# ------------------------------------------------------------------------------------------------
def test_multi_task_and_groups_match_separate_calls():
    g = torch.Generator().manual_seed(11)
    n, t = 3000, 3
    users = torch.randint(0, 200, (n,), generator=g)
    labels = (torch.rand(n, t, generator=g) < torch.tensor([0.1, 0.3, 0.6])).long()
    scores = ((torch.randn(n, t, generator=g) + labels) * 10).round() / 10
    level = users % 3  # a per-user group, as the activity groups are
    split_users = torch.rand(n, generator=g) < 0.5  # a mask that splits users: its own per-user pass
    groups = {"full": None, "low": level == 0, "mid": level == 1, "high": level == 2, "odd": split_users}
    got = grouped_auc_multi(scores, labels, users, groups)
    assert set(got) == set(groups)
    for name, m in groups.items():
        sel = torch.ones(n, dtype=torch.bool) if m is None else m
        for task in range(t):
            want = grouped_auc(scores[sel, task], labels[sel, task], users[sel])
            assert_same(got[name][task], want, tol=1e-12)
    assert_same(got["low"][1], sklearn_reference(scores[level == 0, 1], labels[level == 0, 1], users[level == 0]))


# ------------------------------------------------------------------------------------------------
# the torchmetrics Metric
# ------------------------------------------------------------------------------------------------
def metric_data(n=2000, t=2, seed=21):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, 60, (n,), generator=g)
    labels = (torch.rand(n, t, generator=g) < 0.35).long()
    scores = ((torch.randn(n, t, generator=g) + labels) * 10).round() / 10
    group_ids = (users % 4) - 1  # -1 = no group; 0, 1, 2 = low, mid, high
    return scores, labels, users, group_ids


def test_metric_batches_equal_one_batch():
    scores, labels, users, gids = metric_data()
    one = GroupedAUC(num_tasks=2, task_names=["click", "like"])
    one.update(scores, labels, users, gids)
    many = GroupedAUC(num_tasks=2, task_names=["click", "like"])
    for idx in torch.arange(scores.shape[0]).split(333):
        many.update(scores[idx], labels[idx], users[idx], gids[idx])
    a, b = one.compute(), many.compute()
    assert list(a) == ["full", "low", "mid", "high"] and list(a["full"]) == ["click", "like"]
    for grp in a:
        for task in a[grp]:
            assert_same(b[grp][task], a[grp][task], tol=0)


def test_metric_groups():
    scores, labels, users, gids = metric_data()
    m = GroupedAUC(num_tasks=2)
    m.update(scores, labels, users, gids)
    out = m.compute()
    for i, name in enumerate(["low", "mid", "high"]):
        sel = gids == i
        for task in range(2):
            want = sklearn_reference(scores[sel, task], labels[sel, task], users[sel])
            assert_same(out[name][task], want)
    assert_same(out["full"][1], sklearn_reference(scores[:, 1], labels[:, 1], users))
    assert set(out["full"][0]) >= {"auc", "uauc", "gauc", "n_users", "n_skipped"}


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric GroupedAUC was called before")
def test_metric_without_group_ids_and_reset():
    scores, labels, users, _ = metric_data(t=1)
    m = GroupedAUC(num_tasks=1, group_names=("low",))
    assert math.isnan(m.compute()["full"][0]["auc"])  # nothing seen yet: NaN, no crash
    m.update(scores[:, 0], labels[:, 0], users)  # 1-D scores for one task
    out = m.compute()
    assert_same(out["full"][0], sklearn_reference(scores[:, 0], labels[:, 0], users))
    assert out["low"][0]["n_samples"] == 0 and math.isnan(out["low"][0]["auc"])
    m.reset()
    assert math.isnan(m.compute()["full"][0]["auc"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, shards, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        scores, labels, users, gids = shards[rank]
        m = GroupedAUC(num_tasks=2)
        for idx in torch.arange(scores.shape[0]).split(256):
            m.update(scores[idx], labels[idx], users[idx], gids[idx])
        out = m.compute()  # syncs (all-gathers the list states) across ranks
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~5 s: two spawned processes each import torch and torchmetrics
def test_metric_ddp_two_processes(tmp_path):
    import torch.multiprocessing as mp

    scores, labels, users, gids = metric_data(n=1500)
    # uneven, interleaved split: every user has samples on both ranks
    on_rank0 = torch.rand(scores.shape[0], generator=torch.Generator().manual_seed(3)) < 0.6
    shards = [tuple(x[sel] for x in (scores, labels, users, gids)) for sel in (on_rank0, ~on_rank0)]
    both = set(shards[0][2].tolist()) & set(shards[1][2].tolist())
    assert len(both) == users.unique().numel()
    assert shards[0][0].shape[0] != shards[1][0].shape[0]

    single = GroupedAUC(num_tasks=2)
    single.update(scores, labels, users, gids)
    want = single.compute()

    mp.spawn(_ddp_worker, args=(2, _free_port(), shards, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            got = pickle.load(f)
        assert list(got) == list(want)
        for grp in want:
            for task in want[grp]:
                assert_same(got[grp][task], want[grp][task], tol=1e-12)
