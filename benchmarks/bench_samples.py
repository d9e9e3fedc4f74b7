"""Benchmark: build the sample store of a dataset, then gather batches from it.

    python benchmarks/bench_samples.py [DATASET_DIR] [--preset small] [--history-len 50] [--partitions N]

Without DATASET_DIR, the simulator's preset (default `small`) is synthesized into a temporary directory
first, in a child process, so the peak RSS printed is the build's own. Prints event rows/s and samples/s of
the build, the time to reuse the cached store (input hashing), batch-gathering throughput and peak RSS
(resource.getrusage, which on Linux reports kilobytes).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _synth(preset: str, out: str) -> None:
    from farmcli.data.simulator import sim_config, synthesize

    synthesize(sim_config(preset), out)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", nargs="?", help="a farm-events/1 directory (default: synthesize --preset)")
    ap.add_argument("--preset", default="small", help="simulator preset when no dataset is given")
    ap.add_argument("--history-len", type=int, default=50)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--cache", help="cache directory (default: a temporary one)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="bench-samples-")
    if args.dataset is None:
        try:
            import farmcli.data.simulator  # noqa: F401
        except ImportError:
            ap.error("no dataset given and farmcli.data.simulator is not available")
        data = Path(tmp.name) / "data"
        t = time.perf_counter()
        p = mp.get_context("spawn").Process(target=_synth, args=(args.preset, str(data)))
        p.start()
        p.join()
        if p.exitcode != 0:
            print("synthesis failed", file=sys.stderr)
            return 1
        synth_s = time.perf_counter() - t
    else:
        data, synth_s = Path(args.dataset), None
    cache = Path(args.cache) if args.cache else Path(tmp.name) / "cache"

    import polars as pl

    from farmcli.data.build import build_samples
    from farmcli.data.dataset import Dataset
    from farmcli.data.store import store_summary

    ds = Dataset(data)
    rows = {t: int(ds.scan(t).select(pl.len()).collect().item()) for t in ("live", "video")}
    input_mb = sum(f.stat().st_size for t in ("live", "video", "users") for f in ds.files(t)) / 2**20
    rss0 = _rss_mb()

    t = time.perf_counter()
    store = build_samples(data, cache, history_len=args.history_len, partitions=args.partitions)
    build_s = time.perf_counter() - t
    rss_build = _rss_mb()
    t = time.perf_counter()
    again = build_samples(data, cache, history_len=args.history_len, partitions=args.partitions)
    reuse_s = time.perf_counter() - t
    assert again.reused

    n_train = store.n("train")
    rng = np.random.default_rng(0)
    n_batches = max(1, min(200, n_train // args.batch_size))
    idx = [rng.integers(0, n_train, args.batch_size) for _ in range(n_batches)]
    store.batch("train", idx[0])  # warm the page cache
    t = time.perf_counter()
    for i in idx:
        store.batch("train", i)
    gather_s = time.perf_counter() - t
    store_mb = sum(f.stat().st_size for f in store.path.iterdir()) / 2**20

    n_samples = sum(store.manifest["splits"].values())
    figures = {
        "dataset": str(data),
        "synth_s": None if synth_s is None else round(synth_s, 2),
        "input_rows": rows,
        "input_mb": round(input_mb, 1),
        "samples": store.manifest["splits"],
        "partitions": store.manifest["settings"]["partitions"],
        "history_len": args.history_len,
        "build_s": round(build_s, 2),
        "event_rows_per_s": round(sum(rows.values()) / build_s),
        "samples_per_s": round(n_samples / build_s),
        "reuse_s": round(reuse_s, 3),
        "store_mb": round(store_mb, 1),
        "batch_size": args.batch_size,
        "batch_samples_per_s": round(n_batches * args.batch_size / gather_s),
        "peak_rss_mb_before_build": round(rss0),
        "peak_rss_mb": round(rss_build),
        "summary": store_summary(store)["history_length"],
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>26}: {v}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
