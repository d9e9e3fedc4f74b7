"""Benchmark: grouped AUC (AUC/UAUC/GAUC) on 1M scores and 50k users vs a scikit-learn loop and torchmetrics.

    python benchmarks/bench_grouped_auc.py [--samples 1000000] [--users 50000] [--loop-users 2000]
                                           [--retrieval-users 0] [--repeats 5] [--threads 0]

Rows:
* farmcli grouped_auc: this project's vectorised rank-sum (median of --repeats runs).
* farmcli GroupedAUC: the torchmetrics wrapper, 6 tasks x 4 groups (full/low/mid/high), for scale.
* sklearn loop: ``roc_auc_score`` per user in a Python loop (plus the global AUC). It takes ~2 ms per
  user, so by default it runs on the first --loop-users users and the time is EXTRAPOLATED linearly to
  all users (the output says so); --loop-users 0 runs all of them.
* torchmetrics RetrievalAUROC(indexes=users): its compute() loops over users in Python and returns the
  mean of per-user AUCs, i.e. UAUC only (no AUC, no GAUC). Conventions differ from the paper: a user
  without positives is handled by ``empty_target_action`` ("skip" here; the default "neg" counts it as
  0), but a user without negatives is NOT skipped: ``retrieval_auroc`` returns 0 for it. Its UAUC
  is therefore compared both raw and against our per-user AUCs re-aggregated its way.

The "max |dUAUC|" column is the largest absolute UAUC difference against ours on the same users.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def make_data(n: int, n_users: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, n_users, (n,), generator=g)
    logit = torch.randn(n, generator=g)
    labels = (torch.rand(n, generator=g) < torch.sigmoid(logit - 1.5)).long()  # ~22% positives
    scores = torch.sigmoid(logit + 0.8 * torch.randn(n, generator=g))  # float32 probabilities, some ties
    return scores, labels, users


def timed(fn, repeats: int):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def sklearn_loop(scores: np.ndarray, labels: np.ndarray, users: np.ndarray, max_users: int):
    """The obvious implementation: group by user, roc_auc_score per user. Returns (seconds, users, aucs, frac)."""
    from sklearn.metrics import roc_auc_score

    t = time.perf_counter()
    roc_auc_score(labels, scores)  # the global AUC, as the metric also reports it
    order = np.argsort(users, kind="stable")
    u_sorted = users[order]
    cuts = np.flatnonzero(np.diff(u_sorted)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(users)]])
    n_total = len(starts)
    if max_users and max_users < n_total:
        starts, ends = starts[:max_users], ends[:max_users]
    ids, aucs = [], []
    for a, b in zip(starts, ends):
        idx = order[a:b]
        y = labels[idx]
        if y.min() == y.max():
            continue
        ids.append(u_sorted[a])
        aucs.append(roc_auc_score(y, scores[idx]))
    seconds = time.perf_counter() - t
    return seconds, np.array(ids), np.array(aucs), len(starts) / n_total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--loop-users", type=int, default=2000, help="users in the timed sklearn loop (0 = all)")
    ap.add_argument(
        "--retrieval-users",
        type=int,
        default=0,
        help="run RetrievalAUROC on the samples of users < this id (0 = all, ~30 s; -1 = skip)",
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from farmcli.metrics import GroupedAUC, grouped_auc, per_user_auc

    scores, labels, users = make_data(args.samples, args.users)
    print(
        f"data: {args.samples:,} samples, {users.unique().numel():,} users, {labels.float().mean():.1%} positive, "
        f"{scores.unique().numel():,} distinct float32 scores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )

    ours_s, ours = timed(lambda: grouped_auc(scores, labels, users), args.repeats)
    threads = torch.get_num_threads()
    ours1_s = None
    if threads > 1:  # also one thread: on a busy machine, 2 OpenMP threads on 2 shared cores can lose
        torch.set_num_threads(1)
        ours1_s, _ = timed(lambda: grouped_auc(scores, labels, users), args.repeats)
        torch.set_num_threads(threads)
    pu = per_user_auc(scores, labels, users)
    pu_ids, pu_auc = pu["users"].numpy(), pu["auc"].numpy()
    n_pos, n_cnt = pu["n_pos"].numpy(), pu["n_samples"].numpy()
    print(
        f"ours: auc={ours['auc']:.6f} uauc={ours['uauc']:.6f} gauc={ours['gauc']:.6f} "
        f"n_users={ours['n_users']:,} n_skipped={ours['n_skipped']:,} "
        f"(no positive: {int((n_pos == 0).sum()):,}, no negative: {int((n_pos == n_cnt).sum()):,})"
    )

    # the Metric, 6 tasks and 4 groups (one full compute, as at the end of an evaluation epoch)
    g = torch.Generator().manual_seed(1)
    s6 = torch.sigmoid(torch.randn(args.samples, 6, generator=g))
    y6 = (torch.rand(args.samples, 6, generator=g) < 0.2).long()
    gid = users % 3

    def metric_run():
        m = GroupedAUC(num_tasks=6)
        for idx in torch.arange(args.samples).split(5000):
            m.update(s6[idx], y6[idx], users[idx], gid[idx])
        return m.compute()

    metric_s, _ = timed(metric_run, max(1, args.repeats // 2))

    # scikit-learn loop
    sk_s, sk_ids, sk_auc, frac = sklearn_loop(scores.numpy(), labels.numpy(), users.numpy(), args.loop_users)
    sk_full_s = sk_s / frac
    ours_on = dict(zip(pu_ids.tolist(), pu_auc.tolist()))
    ours_sub = np.array([ours_on[i] for i in sk_ids.tolist()])
    sk_diff = max(abs(float(np.mean(sk_auc)) - float(np.mean(ours_sub))), float(np.max(np.abs(sk_auc - ours_sub))))
    sk_note = "" if frac == 1 else f"  (extrapolated from {sk_ids.size and int(round(frac * len(pu_ids))):,} users)"

    rows = [
        (f"farmcli grouped_auc ({threads} threads)", ours_s, 0.0, "  AUC+UAUC+GAUC, median of runs"),
        *([("farmcli grouped_auc (1 thread)", ours1_s, 0.0, "")] if ours1_s is not None else []),
        (
            "farmcli GroupedAUC, 6 tasks x 4 groups",
            metric_s,
            None,
            "  (other data: 6 tasks, update in 5k batches + compute; no speed-up: not the same job)",
        ),
        ("sklearn roc_auc_score per-user loop", sk_full_s, sk_diff, sk_note + "; dUAUC also covers every per-user AUC"),
    ]

    if args.retrieval_users >= 0:
        from torchmetrics.retrieval import RetrievalAUROC

        sel = users < args.retrieval_users if args.retrieval_users else torch.ones_like(users, dtype=torch.bool)
        rs, ry, ru = scores[sel], labels[sel], users[sel]
        t = time.perf_counter()
        m = RetrievalAUROC(empty_target_action="skip")
        m.update(rs, ry.bool(), indexes=ru)
        tm_uauc = float(m.compute())
        tm_s = time.perf_counter() - t
        frac_r = float(sel.float().mean())
        keep = np.isin(pu_ids, ru.unique().numpy())
        ours_uauc = float(np.nanmean(pu_auc[keep]))
        # our per-user AUCs aggregated its way: no-positive users skipped, no-negative users count 0
        its_way = np.where(n_pos[keep] == n_cnt[keep], 0.0, pu_auc[keep])[n_pos[keep] > 0]
        d_raw, d_conv = abs(tm_uauc - ours_uauc), abs(tm_uauc - float(np.mean(its_way)))
        note = f"  raw (its single-class rule); {d_conv:.1e} with its rule applied to ours"
        if frac_r < 1:
            note += f"; extrapolated from {frac_r:.0%} of samples"
        rows.append(("torchmetrics RetrievalAUROC (UAUC only)", tm_s / frac_r, d_raw, note))

    print()
    print(f"{'method':42s} {'seconds':>9s} {'speed-up':>9s} {'max |dUAUC|':>12s}")
    for name, sec, diff, note in rows:
        speed = "-" if diff is None else f"{sk_full_s / sec:.1f}x"
        d = "-" if diff is None else f"{diff:.1e}"
        print(f"{name:42s} {sec:9.3f} {speed:>9s} {d:>12s}{note}")
    print()
    best = min(ours_s, ours1_s or ours_s)
    print(
        f"grouped_auc: {best:.3f} s (best thread setting), {sk_full_s / best:,.0f}x the sklearn loop; "
        f"targets < 0.5 s and > 100x: {'met' if best < 0.5 and sk_full_s / best > 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
