"""AUC, UAUC and GAUC (PAPER.md, "Metrics") computed with vectorised rank sums: no Python loop over users.

Definitions, for one task:

* ``auc``:  ROC AUC over all samples.
* ``uauc``: plain mean of the per-user AUCs.
* ``gauc``: mean of the per-user AUCs weighted by each user's sample count.

A user whose samples are all positive or all negative has no AUC; such users are left out of ``uauc``
and ``gauc`` and counted in ``n_skipped``. Values are fractions in [0, 1] (the CLI reports percent) and
NaN where undefined (one class overall, or no user with both classes).

How (the Mann-Whitney form of AUC): ``AUC = (R+ - P(P+1)/2) / (P*Q)`` where ``R+`` is the sum of the
1-based ranks of the ``P`` positives among ``P + Q`` samples. Tied scores get the *average* rank of
their tie run, which is exactly the trapezoid that ``sklearn.metrics.roc_auc_score`` draws through a
tie (a tied positive/negative pair counts 1/2). Per user, the same formula runs on segments of one
sort by ``(user, score)``; the segment sums come from cumulative sums taken at run/segment starts.

Precision: twice an average rank is an integer, so all rank sums are kept *exactly* in int64 (they
reach ~N^2, ~1e12 at N = 1e6, far beyond float32's 24-bit mantissa and where float64 would start to
round in sums of sums); only the final division is float64. This is why we agree with scikit-learn to
~1e-12, not merely 1e-6, at a million samples.

Speed: float scores are mapped to an order-preserving integer key (IEEE-754 bit trick), because
PyTorch sorts integers with a radix sort, ~5-8x faster than its float comparison sort on CPU. The
per-user order is one sort of an int64 composite key ``user << 32 | score_key`` instead of a lexsort
or two passes.

Scores may be logits or probabilities: AUC depends on the order of the scores only. Prefer logits
(or float64 probabilities): a float32 sigmoid saturates and can turn distinct logits into ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

__all__ = ["GroupedAUC", "grouped_auc", "grouped_auc_multi", "per_user_auc"]

_KEYS = ("auc", "uauc", "gauc", "n_users", "n_skipped", "n_samples")
_TWO31 = 1 << 31


# ----------------------------------------------------------------------------------------------
# input checks and keys
# ----------------------------------------------------------------------------------------------
def _check_scores(scores: Tensor) -> None:
    if scores.is_floating_point() and scores.numel() and bool(torch.isnan(scores).any()):
        raise ValueError("grouped_auc: scores contain NaN; an AUC of NaN scores is undefined")


def _as_bool_labels(labels: Tensor) -> Tensor:
    """Labels as bool, after checking they are 0/1 (a 0.7 'label' is a bug upstream, not a class)."""
    if labels.dtype == torch.bool:
        return labels
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("grouped_auc: labels must be 0 or 1")
    return labels != 0


def _score_key(scores: Tensor) -> tuple[Tensor, bool]:
    """Integer key with the same order and the same ties as ``scores``.

    Returns ``(key, fits32)``; when ``fits32`` the key lies in [0, 2**32) and can go into the low half of
    the (user, score) composite directly, otherwise the caller uses dense ranks instead.
    """
    if scores.dtype in (torch.float16, torch.bfloat16, torch.float32):
        # +0.0 turns -0.0 into +0.0 so that the two (equal as floats) get one key.
        bits = (scores.to(torch.float32) + 0.0).view(torch.int32)
        # Negative floats order backwards in their bit pattern: flip their magnitude bits.
        return bits ^ ((bits >> 31) & 0x7FFFFFFF), True  # int32, order == float order
    if scores.dtype == torch.float64:
        bits = (scores + 0.0).view(torch.int64)
        return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF), False
    if scores.dtype == torch.bool:
        return scores.to(torch.int32), True
    return scores.to(torch.int64), False  # integer scores


def _user_key(users: Tensor) -> tuple[Tensor, Tensor | None, int]:
    """Users as int64 in [0, 2**31) for the high half of the composite key.

    Returns ``(key, uniques, offset)``: original id = ``uniques[key]`` when ``uniques`` is given,
    else ``key + offset``. Ids that already fit (the usual case) cost nothing.
    """
    users = users.to(torch.int64)
    if users.numel() == 0:
        return users, None, 0
    lo, hi = int(users.min()), int(users.max())
    if 0 <= lo and hi < _TWO31:
        return users, None, 0
    if hi - lo < _TWO31:
        return users - lo, None, lo
    uniques, inverse = torch.unique(users, return_inverse=True)
    return inverse, uniques, 0


# ----------------------------------------------------------------------------------------------
# core: rank sums on sorted arrays
# ----------------------------------------------------------------------------------------------
def _starts(new: Tensor) -> tuple[Tensor, Tensor]:
    """Start and (exclusive) end positions of the runs flagged by ``new`` (``new[0]`` is True)."""
    starts = torch.nonzero(new).squeeze(1)
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = new.numel()
    return starts, ends


def _segment_stats(run_key: Tensor, y: Tensor, seg_key: Tensor | None) -> dict[str, Tensor]:
    """Per-segment Mann-Whitney statistics on data sorted by (segment, score).

    ``run_key``: sorted key whose equal neighbours are ties (for per-user: the composite, so ties never
    cross users); ``y``: bool labels in the same order; ``seg_key``: segment (user) key in that order, or
    None for one segment. Returns int64 ``start``, ``count``, ``n_pos`` and ``u2`` (twice the
    Mann-Whitney U) per segment.
    """
    n = run_key.numel()
    dev = run_key.device
    new_run = torch.ones(n, dtype=torch.bool, device=dev)
    torch.ne(run_key[1:], run_key[:-1], out=new_run[1:])
    rs, re = _starts(new_run)
    zero = torch.zeros(1, dtype=torch.int64, device=dev)
    cy = torch.cat([zero, torch.cumsum(y, 0, dtype=torch.int64)])  # positives before position i
    pos_run = cy[re] - cy[rs]
    # A run over 0-based positions [s, e) has average 1-based rank (s + 1 + e) / 2: twice it is an integer.
    twice_rank_pos = (rs + re + 1) * pos_run
    if seg_key is None:
        us = zero
        ue = torch.full((1,), n, dtype=torch.int64, device=dev)
        twice_r = twice_rank_pos.sum().reshape(1)
    else:
        new_seg = torch.ones(n, dtype=torch.bool, device=dev)
        torch.ne(seg_key[1:], seg_key[:-1], out=new_seg[1:])
        seg_run = torch.nonzero(new_seg[rs]).squeeze(1)  # index of each segment's first run
        seg_run_end = torch.empty_like(seg_run)
        seg_run_end[:-1] = seg_run[1:]
        seg_run_end[-1:] = rs.numel()
        ct = torch.cat([zero, torch.cumsum(twice_rank_pos, 0)])
        us = rs[seg_run]
        ue = torch.empty_like(us)
        ue[:-1] = us[1:]
        ue[-1:] = n
        twice_r = ct[seg_run_end] - ct[seg_run]
    n_pos = cy[ue] - cy[us]
    # Ranks were global positions: shift to 1-based ranks within the segment (subtract its start).
    twice_r = twice_r - 2 * us * n_pos
    u2 = twice_r - n_pos * (n_pos + 1)
    return {"start": us, "count": ue - us, "n_pos": n_pos, "u2": u2}


def _auc_of(stats: Mapping[str, Tensor]) -> Tensor:
    """float64 AUC per segment, NaN where the segment has one class."""
    n_pos = stats["n_pos"]
    n_neg = stats["count"] - n_pos
    denom = (2 * n_pos * n_neg).to(torch.float64)
    return stats["u2"].to(torch.float64) / denom  # 0/0 -> NaN for single-class segments


def _empty_result(n_samples: int = 0) -> dict[str, Any]:
    nan = float("nan")
    return {"auc": nan, "uauc": nan, "gauc": nan, "n_users": 0, "n_skipped": 0, "n_samples": n_samples}


class _Sorted:
    """One task's two sort orders, reusable for any sample mask (a mask keeps a sorted order sorted)."""

    def __init__(self, scores: Tensor, y: Tensor, ukey: Tensor):
        key, fits32 = _score_key(scores)
        self.g_key, g_perm = torch.sort(key)  # global order by score
        self.g_y = y[g_perm]
        self.g_perm = g_perm
        if fits32:
            low = key.to(torch.int64) + _TWO31 if key.dtype == torch.int32 else key.to(torch.int64)
        else:
            # Wide keys (float64, int64): replace the score by its dense rank (< N < 2**32).
            new = torch.ones(key.numel(), dtype=torch.bool, device=key.device)
            torch.ne(self.g_key[1:], self.g_key[:-1], out=new[1:])
            low = torch.empty_like(g_perm)
            low[g_perm] = torch.cumsum(new, 0) - 1
        composite = (ukey << 32) | low
        self.u_key, u_perm = torch.sort(composite)  # per-user order by (user, score)
        self.u_y = y[u_perm]
        self.u_perm = u_perm
        self._per_user: tuple[Tensor, Tensor] | None = None

    def per_user(self) -> tuple[Tensor, Tensor]:
        """(AUC, sample count) of every user, in user-key order; computed once per task."""
        if self._per_user is None:
            stats = _segment_stats(self.u_key, self.u_y, self.u_key >> 32)
            self._per_user = (_auc_of(stats), stats["count"])
        return self._per_user

    def user_level(self, mask: Tensor) -> Tensor | None:
        """Per-user membership if ``mask`` is constant within every user (activity groups are), else None.

        Then the group's per-user AUCs are a subset of the full ones: no per-user pass for the group.
        """
        m = mask[self.u_perm]
        seg = self.u_key >> 32
        if bool(((seg[1:] == seg[:-1]) & (m[1:] != m[:-1])).any()):
            return None
        new_seg = torch.ones_like(m)
        torch.ne(seg[1:], seg[:-1], out=new_seg[1:])
        return m[new_seg]

    def result(self, mask: Tensor | None = None, members: Tensor | None = None) -> dict[str, Any]:
        """The metric dict on all samples (``mask`` None) or on ``mask``; ``members`` from ``user_level``."""
        if mask is None:
            return _result(self.g_key, self.g_y, *self.per_user())
        gm = mask[self.g_perm]
        g_key, g_y = self.g_key[gm], self.g_y[gm]
        if members is not None:
            user_auc, count = self.per_user()
            return _result(g_key, g_y, user_auc[members], count[members])
        um = mask[self.u_perm]
        u_key, u_y = self.u_key[um], self.u_y[um]
        if u_key.numel() == 0:
            return _empty_result()
        stats = _segment_stats(u_key, u_y, u_key >> 32)
        return _result(g_key, g_y, _auc_of(stats), stats["count"])


def _result(g_key: Tensor, g_y: Tensor, user_auc: Tensor, count: Tensor) -> dict[str, Any]:
    """Global AUC from the score-sorted arrays; UAUC/GAUC from per-user AUCs (NaN = single class)."""
    n = g_key.numel()
    if n == 0:
        return _empty_result()
    auc = float(_auc_of(_segment_stats(g_key, g_y, None))[0])
    ok = ~torch.isnan(user_auc)
    n_ok = int(ok.sum())
    out = {
        "auc": auc,
        "uauc": float("nan"),
        "gauc": float("nan"),
        "n_users": n_ok,
        "n_skipped": int(user_auc.numel()) - n_ok,
        "n_samples": n,
    }
    if n_ok:
        a = user_auc[ok]
        w = count[ok].to(torch.float64)
        out["uauc"] = float(a.mean())
        out["gauc"] = float((a * w).sum() / w.sum())
    return out


def _check_1d(scores: Tensor, labels: Tensor, users: Tensor) -> None:
    if scores.dim() != 1 or labels.shape != scores.shape or users.shape != scores.shape:
        raise ValueError(
            f"grouped_auc: scores, labels and users must be 1-D of one length, got "
            f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(users.shape)}"
        )


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def grouped_auc(scores: Tensor, labels: Tensor, users: Tensor) -> dict[str, Any]:
    """AUC, UAUC and GAUC of one task, on the tensors' device.

    Args:
        scores: [N] float (logits or probabilities; only their order matters) or integer scores.
        labels: [N] 0/1 (bool, int or float).
        users: [N] integer user ids (any int64 values).

    Returns:
        ``{"auc", "uauc", "gauc"}`` as Python floats in [0, 1] (NaN when undefined) and
        ``{"n_users", "n_skipped", "n_samples"}`` as ints: users with an AUC, single-class users left
        out, samples seen.
    """
    _check_1d(scores, labels, users)
    if scores.numel() == 0:
        return _empty_result()
    _check_scores(scores)
    y = _as_bool_labels(labels)
    ukey, _, _ = _user_key(users)
    return _Sorted(scores, y, ukey).result()


def grouped_auc_multi(
    scores: Tensor,
    labels: Tensor,
    users: Tensor,
    groups: Mapping[str, Tensor | None] | None = None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """``grouped_auc`` for T tasks and any number of sample groups at once.

    Args:
        scores: [N, T] (or [N] for one task).
        labels: [N, T] (or [N]), 0/1.
        users: [N] user ids, shared by the tasks.
        groups: ``{name: BoolTensor[N] or None}``; None means all samples. Default ``{"full": None}``.

    Returns:
        ``{group: {task_index: grouped_auc-style dict}}``.

    Each task is sorted twice (by score, by (user, score)) once for all groups: restricting a sorted
    array to a mask keeps it sorted, so a group costs a few O(N) gathers and cumulative sums, no sort.
    A group that takes whole users (e.g. activity levels) reuses the task's per-user AUCs outright and
    only needs its own global AUC; a group that splits users gets its own per-user pass. The user-id
    key is built once for all tasks.
    """
    if scores.dim() == 1:
        scores = scores.unsqueeze(1)
    if labels.dim() == 1:
        labels = labels.unsqueeze(1)
    if scores.dim() != 2 or labels.shape != scores.shape or users.shape != scores.shape[:1]:
        raise ValueError(
            f"grouped_auc_multi: want scores/labels [N, T] and users [N], got {tuple(scores.shape)}, "
            f"{tuple(labels.shape)}, {tuple(users.shape)}"
        )
    if groups is None:
        groups = {"full": None}
    masks: dict[str, Tensor | None] = {}
    for name, m in groups.items():
        if m is not None:
            if m.shape != users.shape:
                raise ValueError(
                    f"grouped_auc_multi: group {name!r} mask has shape {tuple(m.shape)}, want {tuple(users.shape)}"
                )
            m = m.to(device=users.device, dtype=torch.bool)
        masks[name] = m
    _check_scores(scores)
    y_all = _as_bool_labels(labels)
    n_tasks = scores.shape[1]
    out: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in masks}
    if scores.shape[0] == 0:
        for name in masks:
            out[name] = {t: _empty_result() for t in range(n_tasks)}
        return out
    ukey, _, _ = _user_key(users)
    members: dict[str, Tensor | None] = {}
    for t in range(n_tasks):  # a loop over tasks (a handful), never over users
        srt = _Sorted(scores[:, t].contiguous(), y_all[:, t].contiguous(), ukey)
        if t == 0:  # which groups are unions of whole users: the same for every task
            members = {name: None if m is None else srt.user_level(m) for name, m in masks.items()}
        for name, m in masks.items():
            out[name][t] = srt.result(m, members[name])
    return out


def per_user_auc(scores: Tensor, labels: Tensor, users: Tensor) -> dict[str, Tensor]:
    """Per-user statistics, for inspection and for comparing with other conventions.

    Returns tensors over the distinct users, sorted by id: ``users`` (ids), ``auc`` (float64, NaN for a
    single-class user), ``n_samples`` and ``n_pos`` (int64).
    """
    _check_1d(scores, labels, users)
    dev = scores.device
    if scores.numel() == 0:
        e = torch.zeros(0, dtype=torch.int64, device=dev)
        return {"users": e, "auc": e.to(torch.float64), "n_samples": e, "n_pos": e}
    _check_scores(scores)
    y = _as_bool_labels(labels)
    ukey, uniques, offset = _user_key(users)
    srt = _Sorted(scores, y, ukey)
    seg = srt.u_key >> 32
    stats = _segment_stats(srt.u_key, srt.u_y, seg)
    ids = seg[stats["start"]]
    ids = uniques[ids] if uniques is not None else ids + offset
    return {"users": ids, "auc": _auc_of(stats), "n_samples": stats["count"], "n_pos": stats["n_pos"]}


# ----------------------------------------------------------------------------------------------
# torchmetrics wrapper
# ----------------------------------------------------------------------------------------------
class GroupedAUC(Metric):
    """AUC / UAUC / GAUC per task and per user group, as a torchmetrics ``Metric``.

    ``update`` only appends the batch to list states; ``compute`` concatenates them (under DDP,
    torchmetrics all-gathers the lists first: ``dist_reduce_fx="cat"``) and runs
    ``grouped_auc_multi`` once. Gathering raw samples instead of partial sums is required: a user's
    samples may sit on several ranks and in several batches, and a rank AUC cannot be merged from parts.

    Args:
        num_tasks: T, the width of ``scores`` / ``labels``.
        task_names: keys for the tasks in the output; default the task indices 0..T-1.
        group_names: names for ``group_ids`` 0, 1, ...; ``"full"`` (all samples) is always added.

    ``compute()`` returns ``{group: {task: {"auc", "uauc", "gauc", "n_users", "n_skipped",
    "n_samples"}}}`` with AUCs as fractions in [0, 1] (NaN when undefined), ``"full"`` first and every
    name in ``group_names`` present (NaN values for a group without samples).

    Scores may be logits or probabilities: AUC only uses their order.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    scores: list[Tensor]
    labels: list[Tensor]
    user_ids: list[Tensor]
    group_ids: list[Tensor]

    def __init__(
        self,
        num_tasks: int = 6,
        task_names: Sequence[str] | None = None,
        group_names: Sequence[str] = ("low", "mid", "high"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_tasks < 1:
            raise ValueError(f"GroupedAUC: num_tasks must be >= 1, got {num_tasks}")
        if task_names is not None and len(task_names) != num_tasks:
            raise ValueError(f"GroupedAUC: {len(task_names)} task_names for {num_tasks} tasks")
        if "full" in group_names:
            raise ValueError("GroupedAUC: 'full' is always computed; do not list it in group_names")
        self.num_tasks = num_tasks
        self.task_names = tuple(task_names) if task_names is not None else None
        self.group_names = tuple(group_names)
        for name in ("scores", "labels", "user_ids", "group_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor, user_ids: Tensor, group_ids: Tensor | None = None) -> None:
        """Append a batch: scores/labels [B, T] (or [B] when T = 1), user_ids [B], group_ids [B] or None.

        ``group_ids`` are int indices into ``group_names``; -1 (or None for the whole batch) means the
        sample belongs to no group and only counts in ``"full"``.
        """
        if scores.dim() == 1:
            scores = scores.unsqueeze(1)
        if labels.dim() == 1:
            labels = labels.unsqueeze(1)
        b = scores.shape[0]
        if scores.shape != (b, self.num_tasks) or labels.shape != scores.shape or user_ids.shape != (b,):
            raise ValueError(
                f"GroupedAUC.update: want scores/labels [B, {self.num_tasks}] and user_ids [B], got "
                f"{tuple(scores.shape)}, {tuple(labels.shape)}, {tuple(user_ids.shape)}"
            )
        if group_ids is None:
            group_ids = torch.full((b,), -1, dtype=torch.int64, device=scores.device)
        elif group_ids.shape != (b,):
            raise ValueError(f"GroupedAUC.update: group_ids has shape {tuple(group_ids.shape)}, want ({b},)")
        self.scores.append(scores.detach())
        # uint8 labels: 1/8 of the memory of int64, and all-gather (gloo/nccl) supports it, unlike bool.
        self.labels.append(_as_bool_labels(labels.detach()).to(torch.uint8))
        self.user_ids.append(user_ids.detach().to(torch.int64))
        self.group_ids.append(group_ids.detach().to(torch.int64))

    def compute(self) -> dict[str, dict[Any, dict[str, Any]]]:
        names = self.task_names if self.task_names is not None else tuple(range(self.num_tasks))
        groups = ("full", *self.group_names)
        # Before a DDP sync the states are lists of batches; after it, already-concatenated tensors.
        if isinstance(self.scores, list) and not self.scores:
            return {g: {t: _empty_result() for t in names} for g in groups}
        scores = dim_zero_cat(self.scores)
        labels = dim_zero_cat(self.labels)
        users = dim_zero_cat(self.user_ids)
        gids = dim_zero_cat(self.group_ids)
        masks: dict[str, Tensor | None] = {"full": None}
        for i, g in enumerate(self.group_names):
            masks[g] = gids == i
        res = grouped_auc_multi(scores.reshape(-1, self.num_tasks), labels.reshape(-1, self.num_tasks), users, masks)
        return {g: {names[t]: res[g][t] for t in range(self.num_tasks)} for g in groups}
