"""How much of a run's AUC comes from telling users apart, and how much from ranking one user's impressions.

    python experiments/user_split.py RUN [RUN ...] [--split valid] [--tasks click,effective_view,long_view]

Per run and task: the AUC; the *between-user* AUC, that of each user's mean logit given to all their samples
(what a model knowing only who the user is would score); and the UAUC (per-user AUC averaged over users:
the ranking within one user). Two models with the same AUC can differ a lot in how they reach it; FARM's
modules mostly encode the user, so this is the split to look at when its AUC and UAUC move apart
(docs/notebook/QUALITY.md). The validation split by default: the test split is for the final tables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # the repository root: experiments.plugins importable when run as a script
    sys.path.insert(0, ROOT)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="valid", choices=("valid", "test"))
    ap.add_argument("--tasks", default="click,effective_view,long_view")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import experiments.plugins  # noqa: F401  (runs of the research components load by their names)
    from farmcli.config import resolve
    from farmcli.data.module import FarmDataModule
    from farmcli.data.schema import TASKS
    from farmcli.evaluation import load_module, locate, run_store, score
    from farmcli.metrics.grouped_auc import grouped_auc

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    print(f"split: {args.split}\n")
    print("| run | task | AUC | between-user AUC | UAUC |\n|---|---|---:|---:|---:|")
    for target in args.runs:
        run, ckpt = locate(target)
        cfg = resolve([run / "config.yaml"])
        module = load_module(ckpt).eval()
        store = run_store(run, cfg)
        data = FarmDataModule(store, eval_batch_size=cfg.data.eval_batch_size, test_split=args.split)
        with torch.no_grad():
            pred = score(module, store, data, "cpu", False, keep_predictions=True)[1]
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
