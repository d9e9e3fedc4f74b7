"""AUC, UAUC and GAUC (PAPER.md, "Metrics") from vectorised rank sums: no Python loop over users.

``auc`` is the ROC AUC over all samples, ``uauc`` the plain and ``gauc`` the sample-count-weighted mean of the
per-user AUCs. Users with one class have no AUC: left out of both and counted in ``n_skipped``. Values are
fractions in [0, 1], NaN where undefined.

Mann-Whitney form: ``AUC = (R+ - P(P+1)/2) / (P*Q)`` with ``R+`` the 1-based rank sum of the ``P`` positives.
Ties get their run's average rank, which is the trapezoid ``sklearn.metrics.roc_auc_score`` draws. Per user,
the same formula runs on the segments of one sort by ``(user, score)``, summed from cumulative sums.

Twice an average rank is an integer, so rank sums stay exact in int64 (they reach ~1e12 at N = 1e6, beyond
float32 and where float64 sums would round): we agree with scikit-learn to ~1e-12. Float scores become an
order-preserving integer key (IEEE-754 bit trick) because torch radix-sorts integers ~5-8x faster on CPU; the
per-user order is one sort of the int64 ``user << 32 | score_key``.

Only the order of the scores matters: prefer logits, as a float32 sigmoid saturates distinct logits into ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

__all__ = ["GroupedAUC", "grouped_auc", "grouped_auc_multi", "per_user_auc"]

_TWO31 = 1 << 31
Result = dict[str, Any]  # grouped_auc's: auc, uauc, gauc, n_users, n_skipped, n_samples


def _check_scores(scores: Tensor) -> None:
    if scores.is_floating_point() and scores.numel() and bool(torch.isnan(scores).any()):
        raise ValueError("grouped_auc: scores contain NaN; an AUC of NaN scores is undefined")


def _as_bool_labels(labels: Tensor) -> Tensor:
    """Labels as bool; anything but 0/1 is refused (a 0.7 'label' is a bug upstream, not a class)."""
    if labels.dtype == torch.bool:
        return labels
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("grouped_auc: labels must be 0 or 1")
    return labels != 0


def _score_key(scores: Tensor) -> tuple[Tensor, bool]:
    """(integer key with the order and ties of ``scores``, whether it fits in [0, 2**32) after the int32 shift)."""
    if scores.dtype in (torch.float16, torch.bfloat16, torch.float32):
        bits = (scores.to(torch.float32) + 0.0).view(torch.int32)  # + 0.0: -0.0 and +0.0 get one key
        return bits ^ ((bits >> 31) & 0x7FFFFFFF), True  # negative floats order backwards: flip their magnitude
    if scores.dtype == torch.float64:
        bits = (scores + 0.0).view(torch.int64)
        return bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF), False
    if scores.dtype == torch.bool:
        return scores.to(torch.int32), True
    return scores.to(torch.int64), False  # integer scores


def _user_key(users: Tensor) -> tuple[Tensor, Tensor | None, int]:
    """(users as int64 in [0, 2**31), uniques, offset): the id is ``uniques[key]`` if given, else ``key + offset``."""
    users = users.to(torch.int64)
    if users.numel() == 0:
        return users, None, 0
    lo, hi = int(users.min()), int(users.max())
    if 0 <= lo and hi < _TWO31:  # the usual case costs nothing
        return users, None, 0
    if hi - lo < _TWO31:
        return users - lo, None, lo
    uniques, inverse = torch.unique(users, return_inverse=True)
    return inverse, uniques, 0


def _changes(key: Tensor) -> Tensor:
    """True where a sorted key starts a new run (always at 0)."""
    new = torch.ones(key.numel(), dtype=torch.bool, device=key.device)
    torch.ne(key[1:], key[:-1], out=new[1:])
    return new


def _ends(starts: Tensor, n: int) -> Tensor:
    """Exclusive ends of the runs that begin at ``starts`` in an array of length ``n``."""
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1:] = n
    return ends


def _segment_stats(run_key: Tensor, y: Tensor, seg_key: Tensor | None) -> dict[str, Tensor]:
    """Per-segment int64 ``start``, ``count``, ``n_pos`` and ``u2`` (twice the Mann-Whitney U).

    Data sorted by (segment, score): ``run_key`` equal neighbours are ties (the composite key per user, so ties
    never cross users), ``y`` bool labels, ``seg_key`` the segment (user) key or None for one segment.
    """
    n = run_key.numel()
    rs = torch.nonzero(_changes(run_key)).squeeze(1)
    re = _ends(rs, n)
    zero = torch.zeros(1, dtype=torch.int64, device=run_key.device)
    cy = torch.cat([zero, torch.cumsum(y, 0, dtype=torch.int64)])  # positives before position i
    # A run over 0-based positions [s, e) has average 1-based rank (s + 1 + e) / 2: twice it is an integer.
    twice_rank_pos = (rs + re + 1) * (cy[re] - cy[rs])
    if seg_key is None:
        us, ue = zero, zero + n
        twice_r = twice_rank_pos.sum().reshape(1)
    else:
        seg_run = torch.nonzero(_changes(seg_key)[rs]).squeeze(1)  # index of each segment's first run
        ct = torch.cat([zero, torch.cumsum(twice_rank_pos, 0)])
        us = rs[seg_run]
        ue = _ends(us, n)
        twice_r = ct[_ends(seg_run, rs.numel())] - ct[seg_run]
    n_pos = cy[ue] - cy[us]
    twice_r = twice_r - 2 * us * n_pos  # global positions -> 1-based ranks within the segment
    return {"start": us, "count": ue - us, "n_pos": n_pos, "u2": twice_r - n_pos * (n_pos + 1)}


def _auc_of(stats: Mapping[str, Tensor]) -> Tensor:
    """float64 AUC per segment; 0/0 gives NaN for a single-class segment."""
    n_pos = stats["n_pos"]
    return stats["u2"].to(torch.float64) / (2 * n_pos * (stats["count"] - n_pos)).to(torch.float64)


def _empty_result(n_samples: int = 0) -> Result:
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
        else:  # wide keys (float64, int64): the score's dense rank (< N < 2**32) instead
            low = torch.empty_like(g_perm)
            low[g_perm] = torch.cumsum(_changes(self.g_key), 0) - 1
        self.u_key, u_perm = torch.sort((ukey << 32) | low)  # per-user order by (user, score)
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
        """Per-user membership if ``mask`` takes whole users (activity groups do): then no per-user pass is needed."""
        m = mask[self.u_perm]
        seg = self.u_key >> 32
        if bool(((seg[1:] == seg[:-1]) & (m[1:] != m[:-1])).any()):
            return None
        return m[_changes(seg)]

    def result(self, mask: Tensor | None = None, members: Tensor | None = None) -> Result:
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


def _result(g_key: Tensor, g_y: Tensor, user_auc: Tensor, count: Tensor) -> Result:
    """Global AUC from the score-sorted arrays; UAUC/GAUC from per-user AUCs (NaN = single class)."""
    n = g_key.numel()
    if n == 0:
        return _empty_result()
    ok = ~torch.isnan(user_auc)
    n_ok = int(ok.sum())
    auc = float(_auc_of(_segment_stats(g_key, g_y, None))[0])
    out = {**_empty_result(n), "auc": auc, "n_users": n_ok, "n_skipped": int(user_auc.numel()) - n_ok}
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


def _columns(x: Tensor) -> Tensor:
    """[N] as [N, 1]: one task."""
    return x.unsqueeze(1) if x.dim() == 1 else x


def grouped_auc(scores: Tensor, labels: Tensor, users: Tensor) -> Result:
    """AUC, UAUC and GAUC of one task, on the tensors' device.

    ``scores`` [N] float (only their order matters) or integer, ``labels`` [N] 0/1 (bool, int or float),
    ``users`` [N] int64 ids. Returns ``auc``, ``uauc``, ``gauc`` as floats in [0, 1] (NaN when undefined) and
    the ints ``n_users`` (users with an AUC), ``n_skipped`` (single-class users) and ``n_samples``.
    """
    _check_1d(scores, labels, users)
    if scores.numel() == 0:
        return _empty_result()
    _check_scores(scores)
    y = _as_bool_labels(labels)
    ukey, _, _ = _user_key(users)
    return _Sorted(scores, y, ukey).result()


def grouped_auc_multi(
    scores: Tensor, labels: Tensor, users: Tensor, groups: Mapping[str, Tensor | None] | None = None
) -> dict[str, dict[int, Result]]:
    """``{group: {task_index: grouped_auc dict}}`` for scores/labels [N, T] (or [N]), users [N] and
    ``groups`` ``{name: BoolTensor[N] or None (all samples)}``, default ``{"full": None}``.

    Each task is sorted twice once for all groups: a masked sorted array stays sorted, so a group costs a few
    O(N) gathers and cumulative sums. A group of whole users (activity levels) reuses the task's per-user AUCs.
    """
    scores, labels = _columns(scores), _columns(labels)
    if scores.dim() != 2 or labels.shape != scores.shape or users.shape != scores.shape[:1]:
        raise ValueError(
            f"grouped_auc_multi: want scores/labels [N, T] and users [N], got {tuple(scores.shape)}, "
            f"{tuple(labels.shape)}, {tuple(users.shape)}"
        )
    masks: dict[str, Tensor | None] = {}
    for name, m in (groups if groups is not None else {"full": None}).items():
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
    if scores.shape[0] == 0:
        return {name: {t: _empty_result() for t in range(n_tasks)} for name in masks}
    out: dict[str, dict[int, Result]] = {name: {} for name in masks}
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
    """Per distinct user, sorted by id: ``users``, ``auc`` (float64, NaN for one class), ``n_samples``, ``n_pos``."""
    _check_1d(scores, labels, users)
    if scores.numel() == 0:
        e = torch.zeros(0, dtype=torch.int64, device=scores.device)
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


class GroupedAUC(Metric):
    """AUC / UAUC / GAUC per task and user group as a torchmetrics ``Metric``.

    ``update`` appends raw samples to list states (all-gathered under DDP) and ``compute`` runs
    ``grouped_auc_multi`` once: a user's samples may sit on several ranks and batches, and a rank AUC cannot
    be merged from parts. ``compute()`` returns ``{group: {task: grouped_auc dict}}``, ``"full"`` first, every
    ``group_names`` entry present (NaN for a group without samples); tasks are keyed by ``task_names`` or 0..T-1.
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
        """Scores/labels [B, T] (or [B] when T = 1), user_ids [B]; group_ids [B] index ``group_names``, and -1
        (or None for the whole batch) counts a sample in ``"full"`` only."""
        scores, labels = _columns(scores), _columns(labels)
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

    def compute(self) -> dict[str, dict[Any, Result]]:
        names = self.task_names if self.task_names is not None else tuple(range(self.num_tasks))
        groups = ("full", *self.group_names)
        # Before a DDP sync the states are lists of batches; after it, already-concatenated tensors.
        if isinstance(self.scores, list) and not self.scores:
            return {g: {t: _empty_result() for t in names} for g in groups}
        gids = dim_zero_cat(self.group_ids)
        masks: dict[str, Tensor | None] = {"full": None, **{g: gids == i for i, g in enumerate(self.group_names)}}
        res = grouped_auc_multi(
            dim_zero_cat(self.scores).reshape(-1, self.num_tasks),
            dim_zero_cat(self.labels).reshape(-1, self.num_tasks),
            dim_zero_cat(self.user_ids),
            masks,
        )
        return {g: {names[t]: res[g][t] for t in range(self.num_tasks)} for g in groups}
