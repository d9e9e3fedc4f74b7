"""Model-quality experiments on the validation split (docs/notebook/QUALITY.md records what they showed).

Each experiment is a variant plus overrides, trained on one shared sample store with the config's early
stopping; only validation metrics are read (farmcli.tune.trial never touches the test split). Results are
appended as JSON lines, so a killed sweep continues where it stopped.

Besides the score (mean validation AUC) each row keeps, at the best epoch: the per-task AUC, UAUC and GAUC and
their means; the AUC per activity group (low / mid / high, the model's own ``GroupedAUC`` tables, as Table 4
groups the test split); and readings of the model on 2,048 fixed validation samples (``FARM(batch,
return_aux=True)``): the mean frequency gates, and how much more the live target attention weighs the events
whose author is the candidate's than the others (``live_match``, 1 = no preference; docs/notebook/QUALITY.md).

The research components of experiments/plugins are registered first, so an experiment may name them
(``model.fuse.name=cross_attention_null``, ``model.live_frequency.name=dft_window``).

    python experiments/quality_sweep.py --data small --seeds 0 --epochs 4 --out q.jsonl \
        "base" "farm" "farm:model.cl_weight=0.1"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # the repository root: experiments.plugins importable when run as a script
    sys.path.insert(0, ROOT)


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


def parse_args(argv: Sequence[str] | None = None, description: str | None = __doc__) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="VARIANT[:KEY=VALUE[,KEY=VALUE...]]; ';' also separates")
    ap.add_argument("--data", default="small")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default="quality.jsonl")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FARM_THREADS", "2")))
    return ap.parse_args(argv)


def run(args: argparse.Namespace, extra_callbacks: Sequence[Any] = ()) -> None:
    """Each experiment and seed of ``args`` trained once, its row appended to ``args.out``; ``extra_callbacks``
    (Lightning callbacks) go to every trial's Trainer."""
    import torch

    torch.set_num_threads(args.threads)
    import experiments.plugins  # noqa: F401  (registers the research components by name)
    from farmcli.config import resolve
    from farmcli.sources import sample_store
    from farmcli.tune.trial import run_trial

    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["experiment"], r["seed"], r["data"]) for r in map(json.loads, out.read_text().splitlines())}
    stores: dict = {}  # one sample store per data setting (data.min_count overrides build their own)
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
            key = (cfg.data.source, cfg.data.history_len, cfg.data.min_count)  # what the store is built from
            if key not in stores:
                stores[key] = sample_store(cfg.data)
            store = stores[key]
            t0 = time.time()

            def show(epoch: int, value: float, _exp=exp, _seed=seed) -> bool:
                print(f"  {_exp} s{_seed} epoch {epoch}: val mean AUC {100 * value:.3f}", flush=True)
                return False

            probe = _probe(store)
            r = run_trial(cfg, store, on_epoch=show, extra_callbacks=[probe, *extra_callbacks])
            at_best = probe.epochs[r.best_epoch] if len(probe.epochs) > r.best_epoch else {}
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
                "gauc": at_best.get("gauc", {}),
                "groups": at_best.get("groups", {}),
                "readings": at_best.get("readings", {}),
                "by_live": at_best.get("by_live", {}),
                "val_cl": [round(c, 3) for c in r.cl],
                "seconds": round(time.time() - t0),
            }
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            low = row["groups"].get("low", {})
            print(
                f"{exp:60s} s{seed} val mean AUC {row['val_auc_mean']:.3f} UAUC {row['uauc']['mean']:.2f} "
                f"GAUC {row['gauc'].get('mean', float('nan')):.2f} low click {low.get('click', float('nan')):.2f} "
                f"low mean {low.get('mean', float('nan')):.2f} {row['readings']} "
                f"(epoch {r.best_epoch}) "
                f"{row['history']} cl {row['val_cl']} {row['seconds']}s",
                flush=True,
            )


def _probe(store, n: int = 2048):
    """A Lightning callback that keeps, after each validation epoch, the GAUC, the AUC per activity group (from
    the module's ``val_auc``: the same ``GroupedAUC`` that early stopping reads) and the model readings."""
    import lightning as L
    import numpy as np

    from farmcli.batch import ACTIVITY_LEVELS
    from farmcli.data.schema import TASKS

    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(store.n("valid"), size=min(n, store.n("valid")), replace=False))
    batch = store.batch("valid", idx)

    def pct(x: float) -> float:
        return round(100 * float(x), 2)

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.epochs: list[dict] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            tables = pl_module.val_auc.compute()
            row: dict = {"gauc": {t: pct(tables["full"][t]["gauc"]) for t in TASKS}}
            row["gauc"]["mean"] = round(sum(row["gauc"][t] for t in TASKS) / len(TASKS), 2)
            row["groups"] = {}
            for g in ACTIVITY_LEVELS:
                aucs = {t: pct(tables[g][t]["auc"]) for t in TASKS}
                finite = [aucs[t] for t in TASKS if aucs[t] == aucs[t]]  # a group may lack a task's positives
                aucs["mean"] = round(sum(finite) / len(finite), 2) if finite else float("nan")
                aucs["mean_of"] = len(finite)
                aucs["uauc_click"] = pct(tables[g]["click"]["uauc"])
                aucs["n_samples"] = int(tables[g]["click"]["n_samples"])
                row["groups"][g] = aucs
            row["readings"] = _readings(pl_module, batch)
            row["by_live"] = by_live_history(pl_module, store)
            self.epochs.append(row)

    return Probe()


def by_live_history(pl_module, store, batch_size: int = 4096) -> dict:
    """AUC per task over the validation split, by the length of the live history (0, 1-3, 4+ events) and, for
    low-active users, with and without any live event: FARM's cross-domain modules (eq. 13-17) take their
    queries from the live history, so a user without one gets nothing from them."""
    import numpy as np
    import torch
    from torchmetrics.functional.classification import binary_auroc

    from farmcli.batch import ACTIVITY_LEVELS
    from farmcli.data.schema import TASKS

    n = store.n("valid")
    logits, labels, live_len, activity = [], [], [], []
    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                b = store.batch("valid", np.arange(start, min(n, start + batch_size)))
                b = {k: v.to(pl_module.device) for k, v in b.items()}
                logits.append(pl_module.farm(b, with_cl=False).logits.float().cpu())
                labels.append(b["labels"].cpu())
                live_len.append(b["l_mask"].sum(1).cpu())
                activity.append(b["activity"].cpu())
    finally:
        pl_module.train(was_training)
    scores, y, length, act = (torch.cat(x) for x in (logits, labels, live_len, activity))
    low = act == ACTIVITY_LEVELS.index("low")
    subsets = {
        "live 0": length == 0,
        "live 1-3": (length >= 1) & (length <= 3),
        "live 4+": length >= 4,
        "low, live 0": low & (length == 0),
        "low, live 1+": low & (length >= 1),
    }
    out: dict = {}
    for name, rows in subsets.items():
        aucs = {}
        for t, task in enumerate(TASKS):
            target = y[rows, t].long()
            if 0 < int(target.sum()) < len(target):
                aucs[task] = round(100 * float(binary_auroc(scores[rows, t], target)), 2)
        aucs["mean"] = round(sum(aucs.values()) / len(aucs), 2) if aucs else float("nan")
        aucs["mean_of"] = len(aucs) - 1
        aucs["n_samples"] = int(rows.sum())
        out[name] = aucs
    return out


def _readings(pl_module, batch) -> dict:
    """Mean gates over rows with a live event; the live target attention's weight on events of the candidate's
    author over its weight on the other events (mean over rows that have both, heads averaged)."""
    import torch

    was_training = pl_module.training
    pl_module.eval()
    try:
        with torch.no_grad():
            b = {k: v.to(pl_module.device) for k, v in batch.items()}
            aux = pl_module.farm(b, return_aux=True, with_cl=False).aux
    finally:
        pl_module.train(was_training)
    live = b["l_mask"].bool()
    has_live = live.any(1)
    out: dict = {}
    for name in ("alpha", "beta", "gamma", "delta"):
        if name in aux:
            g = aux[name].float()
            g = g.mean(-1) if g.dim() > 1 else g  # per-channel gates: their mean
            rows = has_live if name in ("gamma", "delta") else b["v_mask"].bool().any(1)
            out[name] = round(float(g[rows].mean()), 3)
            if name in ("gamma", "delta"):  # short and long live histories apart (the window-mean gate's point)
                length = live.sum(1)
                for label, part in (("1-3", (length >= 1) & (length <= 3)), ("4+", length >= 4)):
                    if bool(part.any()):
                        out[f"{name} {label}"] = round(float(g[part].mean()), 3)
    w = aux.get("live_target_attention")
    if w is not None:
        w = w.float().mean(1)  # [B, L], heads averaged
        match = live & (b["l_author"] == b["author"][:, None])
        other = live & ~match
        both = match.any(1) & other.any(1)
        if bool(both.any()):
            on = (w * match).sum(1) / match.sum(1).clamp(min=1)
            off = (w * other).sum(1) / other.sum(1).clamp(min=1)
            out["live_match"] = round(float((on / off.clamp(min=1e-12))[both].mean()), 2)
    return out


if __name__ == "__main__":
    main()
