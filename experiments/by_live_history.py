"""FARM's gain by the length of the user's live history, from finished runs (validation split, no choice made).

FARM's cross-domain modules take their queries from the live history (eq. 13-17): a user without a live event
gets nothing from them. This reads each run's best checkpoint, scores the validation split, and prints the AUC
per task for samples with 0, 1-3 and 4+ live events and for low-active users with and without one; with
``--base NAME`` also each variant minus that variant, paired by seed (docs/notebook/QUALITY.md, issue 27).

    python experiments/by_live_history.py farm-ablations/default/runs --base base --out by_live.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # the repository root: experiments.* importable when run as a script
    sys.path.insert(0, ROOT)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, help="a folder of runs named VARIANT-sSEED (farm ablate's OUT/runs)")
    ap.add_argument("--base", default="base", help="the variant the others are compared with")
    ap.add_argument("--out", type=Path, help="write the readings as JSON here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import experiments.plugins  # noqa: F401  (runs of the research components load by their names)
    from experiments.quality_sweep import by_live_history
    from farmcli.config import resolve
    from farmcli.evaluation import load_module, locate, run_store

    readings: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        m = re.fullmatch(r"(.+)-s(\d+)", run.name)
        if not m:
            continue
        run_dir, ckpt = locate(run)
        store = run_store(run_dir, resolve([run_dir / "config.yaml"]))
        readings[m.group(1)][int(m.group(2))] = by_live_history(load_module(ckpt, store), store)
        print(f"{run.name}: {json.dumps(readings[m.group(1)][int(m.group(2))])}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(readings, indent=1))
    base = readings.get(args.base, {})
    print(f"\nAUC minus {args.base}'s, paired by seed, mean over seeds (click / six-task mean):")
    for name, by_seed in readings.items():
        if name == args.base:
            continue
        seeds = sorted(set(by_seed) & set(base))
        if not seeds:
            continue
        cells = []
        for subset in by_seed[seeds[0]]:
            diffs = [tuple(by_seed[s][subset][k] - base[s][subset][k] for k in ("click", "mean")) for s in seeds]
            click, mean = (sum(x) / len(seeds) for x in zip(*diffs))
            cells.append(f"{subset}: {click:+.2f} / {mean:+.2f}")
        print(f"  {name} (seeds {','.join(map(str, seeds))}): " + "; ".join(cells))


if __name__ == "__main__":
    main()
