"""Model-quality experiments on the validation split (docs/QUALITY.md records what they showed).

Each experiment is a variant plus overrides, trained on one shared sample store with the config's early
stopping; only validation metrics are read (farmcli.tune.trial never touches the test split). Results are
appended as JSON lines, so a killed sweep continues where it stopped.

    python benchmarks/quality_sweep.py --data small --seeds 0 --epochs 4 --out q.jsonl \
        "base" "farm" "farm:model.cl_weight=0.1"
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="VARIANT[:KEY=VALUE[,KEY=VALUE...]]; ';' also separates")
    ap.add_argument("--data", default="small")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default="quality.jsonl")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FARM_THREADS", "2")))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from farmcli.config import resolve
    from farmcli.sources import sample_store
    from farmcli.tune.trial import run_trial

    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["experiment"], r["seed"], r["data"]) for r in map(json.loads, out.read_text().splitlines())}
    store = None
    for exp in args.experiments:
        variant, _, rest = exp.partition(":")
        overrides = [kv for kv in rest.replace(";", ",").split(",") if kv]
        for seed in [int(s) for s in args.seeds.split(",")]:
            if (exp, seed, args.data) in done:
                continue
            cfg = resolve(
                variant=variant,
                overrides=[f"data.source={args.data}", f"seed={seed}", f"trainer.max_epochs={args.epochs}", *overrides],
            )
            store = store or sample_store(cfg.data)
            t0 = time.time()

            def show(epoch: int, value: float, _exp=exp, _seed=seed) -> bool:
                print(f"  {_exp} s{_seed} epoch {epoch}: val mean AUC {100 * value:.3f}", flush=True)
                return False

            r = run_trial(cfg, store, on_epoch=show)
            row = {
                "experiment": exp,
                "seed": seed,
                "data": args.data,
                "epochs_max": args.epochs,
                "val_auc_mean": round(100 * r.score, 3),
                "best_epoch": r.best_epoch,
                "history": [round(100 * h, 3) for h in r.history],
                "tasks": {k: round(100 * v, 2) for k, v in r.tasks.items()},
                "uauc": {k: round(100 * v, 2) for k, v in r.uauc.items()},
                "val_cl": [round(c, 3) for c in r.cl],
                "seconds": round(time.time() - t0),
            }
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{exp:60s} s{seed} val mean AUC {row['val_auc_mean']:.3f} UAUC {row['uauc']['mean']:.2f} "
                f"(epoch {r.best_epoch}) "
                f"{row['history']} cl {row['val_cl']} {row['seconds']}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
