"""Which test samples the report looks at: each user's last one, the Fig. 3 users and the Fig. 4 user."""

from __future__ import annotations

import numpy as np

from farmcli.analysis.report.runs import SPLIT
from farmcli.data.schema import ACTIVITY_LEVELS
from farmcli.errors import UserError

SAMPLE_SEED = 0  # of the user sample drawn when a split has more than max_users eligible users


def last_sample_per_user(store, split: str = SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """(user ids ascending, index of each user's last sample of ``split``: latest ts, the later row on ties)."""
    s = store.split(split)
    if s.n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    users = np.asarray(s.user_id, dtype=np.int64)
    order = np.lexsort((np.arange(s.n), np.asarray(s.ts, dtype=np.int64), users))
    last = np.append(users[order][1:] != users[order][:-1], True)
    idx = order[last]
    return users[idx], idx


def history_lengths(store, split: str, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real (non-padding) video and live history lengths of samples ``idx`` (each at most L)."""
    s = store.split(split)
    idx = np.asarray(idx, dtype=np.int64)
    nv = np.asarray(s.v_end[idx], np.int64) - np.asarray(s.v_start[idx], np.int64)
    nl = np.asarray(s.l_end[idx], np.int64) - np.asarray(s.l_start[idx], np.int64)
    return np.clip(nv, 0, store.history_len), np.clip(nl, 0, store.history_len)


def alignment_users(store, split: str = SPLIT, max_users: int = 10_000) -> tuple[np.ndarray, np.ndarray, int]:
    """(user ids, sample index, number eligible): each user's last sample with both histories non-empty, at most
    ``max_users`` of them (a seeded sample, in user order)."""
    users, idx = last_sample_per_user(store, split)
    nv, nl = history_lengths(store, split, idx)
    keep = (nv > 0) & (nl > 0)
    users, idx = users[keep], idx[keep]
    eligible = len(users)
    if max_users is not None and eligible > max_users:
        pick = np.sort(np.random.default_rng(SAMPLE_SEED).choice(eligible, size=int(max_users), replace=False))
        users, idx = users[pick], idx[pick]
    return users, idx, eligible


def choose_user(store, user: int | None = None, split: str = SPLIT) -> tuple[int, int, str]:
    """(user id, sample index, why) of the Figure 4 user: ``user`` (raw id), else the low-active user with both
    histories and the longest live history (then video history, then smaller id); mid / high only failing that."""
    users, idx = last_sample_per_user(store, split)
    if user is not None:
        where = np.flatnonzero(users == int(user))
        if not len(where):
            known = np.isin(int(user), np.asarray(store.vocab("user")))
            raise UserError(
                f"--user {user}: "
                + (
                    f"this user has no samples in the {split} split, so there is no history to show; pick a user "
                    f"with {split} samples, or leave out --user to pick a low-active one."
                    if known
                    else f"unknown user id (not in the data this run was trained on). Give a raw user_id with {split} "
                    f"samples, or leave out --user to pick a low-active one."
                )
            )
        i = int(idx[where[0]])
        nv, nl = history_lengths(store, split, np.array([i]))
        if nv[0] == 0 or nl[0] == 0:
            empty = " and ".join(d for d, n in (("video", nv[0]), ("live", nl[0])) if n == 0)
            raise UserError(
                f"--user {user}: the {empty} history of this user's last {split} sample is empty, so "
                f"there is no cross-attention to show; pick another user or leave out --user."
            )
        return int(user), i, "chosen with --user"
    nv, nl = history_lengths(store, split, idx)
    act = np.asarray(store.split(split).activity, dtype=np.int64)[idx]
    ok = (nv > 0) & (nl > 0)
    for level, name in enumerate(ACTIVITY_LEVELS):
        cand = np.flatnonzero(ok & (act == level))
        if len(cand):
            best = cand[np.lexsort((users[cand], -nv[cand], -nl[cand]))[0]]
            why = (
                f"the {name}-active user with the longest live history"
                if level == 0
                else f"no low-active user has both histories non-empty; the {name}-active user with the longest "
                f"live history"
            )
            return int(users[best]), int(idx[best]), why
    raise UserError(f"no user in the {split} split has both a video and a live history; nothing for Figure 4.")
