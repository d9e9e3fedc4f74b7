"""Benchmark: training throughput, FLOPs per sample and model FLOP utilisation of FARM variants.

    python benchmarks/bench_train.py [--data default] [--variants base,farm] [--steps 30] [--batch-size 1024]

For each variant: samples/s of full training steps (forward, six BCE + InfoNCE, backward, Adam) on batches
gathered from the sample store (the gather is included, as in training), FLOPs per sample of one training
step counted by torch.utils.flop_counter, and the share of this machine's measured float32 matmul peak that
training reaches (MFU). Peak RSS is the process's (resource.getrusage), which includes the sample store's
touched pages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 GEMM rate of this machine with the current thread count, in FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="default", help="dataset directory or simulator preset")
    ap.add_argument("--variants", default="base,farm")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    args = ap.parse_args()

    from farmcli.config import resolve
    from farmcli.model.module import FarmModule
    from farmcli.sources import sample_store

    device = torch.device(args.device)
    store = sample_store(resolve(overrides={"data": {"source": args.data}}).data)
    n = store.n("train")
    peak = matmul_peak() if device.type == "cpu" else None
    print(f"data {args.data}: {n:,} training samples; device {device}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; batch {args.batch_size}")
    if peak:
        print(f"measured float32 matmul peak: {peak / 1e9:.1f} GFLOP/s")
    results = {}
    rng = np.random.default_rng(0)
    for variant in args.variants.split(","):
        cfg = resolve(variant=variant)
        module = FarmModule(vocab=store.vocab_sizes, model=cfg.model, optim=cfg.optim).to(device)
        opt = module.configure_optimizers()

        def step(batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                out = module(batch)
                loss, _ = module.compute_loss(out, batch["labels"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def next_batch():
            idx = rng.choice(n, size=args.batch_size, replace=False)
            return {k: v.to(device, non_blocking=True) for k, v in store.batch("train", idx).items()}

        batch = next_batch()
        with FlopCounterMode(display=False) as fc:
            step(batch)
        flops_per_sample = fc.get_total_flops() / args.batch_size
        for _ in range(args.warmup):
            step(next_batch())
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.steps):
            step(next_batch())
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
        sps = args.steps * args.batch_size / secs
        r = {"samples_per_s": round(sps), "step_ms": round(1000 * secs / args.steps, 1),
             "params": sum(p.numel() for p in module.parameters()),
             "train_mflops_per_sample": round(flops_per_sample / 1e6, 2),
             "achieved_gflops": round(sps * flops_per_sample / 1e9, 2)}
        if peak:
            r["mfu"] = round(sps * flops_per_sample / peak, 3)
        if device.type == "cuda":
            r["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        results[variant] = r
        print(f"{variant:>6}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in r.items()))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
