"""How much of a run's AUC comes from telling users apart, and how much from ranking one user's impressions.

    python benchmarks/user_split.py RUN [RUN ...] [--split valid] [--tasks click,effective_view,long_view]

Per run and task: the AUC; the *between-user* AUC, that of each user's mean logit given to all their samples
(what a model knowing only who the user is would score); and the UAUC (per-user AUC averaged over users:
the ranking within one user). Two models with the same AUC can differ a lot in how they reach it; FARM's
modules mostly encode the user, so this is the split to look at when its AUC and UAUC move apart
(docs/QUALITY.md). The validation split by default: the test split is for the final tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="valid", choices=("valid", "test"))
    ap.add_argument("--tasks", default="click,effective_view,long_view")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from farmcli.config import resolve
    from farmcli.data.schema import TASKS
    from farmcli.evaluation import load_module, locate, predict, run_store
    from farmcli.metrics.grouped_auc import grouped_auc

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    print(f"split: {args.split}\n")
    print("| run | task | AUC | between-user AUC | UAUC |\n|---|---|---:|---:|---:|")
    for target in args.runs:
        run, ckpt = locate(target)
        cfg = resolve([run / "config.yaml"])
        module = load_module(ckpt).eval()
        with torch.no_grad():
            pred = predict(module, run_store(run, cfg), args.split, cfg.data.eval_batch_size)
        users = torch.as_tensor(pred.user_id, dtype=torch.int64)
        _, inverse = torch.unique(users, return_inverse=True)
        for task in tasks:
            t = TASKS.index(task)
            scores = torch.as_tensor(pred.logits[:, t], dtype=torch.float64)
            labels = torch.as_tensor(pred.labels[:, t])
            user_mean = torch.zeros(int(inverse.max()) + 1, dtype=torch.float64).index_add_(0, inverse, scores)
            user_mean /= torch.bincount(inverse).to(torch.float64)
            full = grouped_auc(scores, labels, users)
            between = grouped_auc(user_mean[inverse], labels, users)["auc"]
            print(f"| {run.name} | {task} | {100 * full['auc']:.2f} | {100 * between:.2f} | {100 * full['uauc']:.2f} |")


if __name__ == "__main__":
    main()
