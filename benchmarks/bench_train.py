"""Benchmark: training throughput, FLOPs per sample and model FLOP utilisation of FARM variants.

    python benchmarks/bench_train.py [--data default] [--variants base,farm] [--steps 30] [--batch-size 1024]
    python benchmarks/bench_train.py --variants farm --compare buckets   # two settings side by side

For each variant: samples/s of full training steps (forward, six BCE + InfoNCE, backward, Adam) on batches
gathered from the sample store (the gather is included, as in training, and its share of the step time is
reported), FLOPs per sample of one training step counted by torch.utils.flop_counter, and the share of this
machine's measured matmul peak in the precision used (float32, or bfloat16 with --bf16) that training reaches
(MFU). Peak RSS is the process's (resource.getrusage), which includes the sample store's touched pages.

Where the batch is gathered: ``--device-store`` (the default with a CUDA device) holds the training split's
arrays on the device and gathers each batch there by index (farmcli/data/device_store.py), as ``farm train``
does on a GPU where the store fits; ``--no-device-store`` gathers on the CPU and copies the batch over. The
sample indices are drawn on the host either way, so both read the same samples; the gather share is the time
from drawing them to the batch being ready on the device.

``--rounds R`` (default 3) splits the steps into R rounds: before each, the matmul peak is measured again and
every variant and setting then takes its share of the round's steps in turn, so each round's samples/s and
its peak see the same machine. Samples/s per peak GFLOP/s and MFU are the median over rounds of the round's
figure: on a shared host whose speed moves by a third within minutes, one peak measured before all the steps
does not describe the steps that follow it.

As ``farm train`` does, glibc's malloc is told to keep freed memory for the next step (farmcli/allocator.py);
``--malloc-defaults`` leaves it as it is. That setting is per process, so it has no ``--compare``: measure it
by alternating runs with and without the flag.

``--compare`` runs every variant under two settings, alternating in one process so both see the same
machine state, and prints the ratio: ``backend`` (the reference model vs ``fit.backend: auto``, which is the
CPU backend on a CPU; model/backends.py), ``compile`` (eager vs torch.compile), ``bf16`` (float32 vs bf16
autocast), and each switch of the CPU backend (model/cpu/options.py) off vs on, the default:
``buckets`` (live rows at full length vs on their own length; model/cpu/ragged.py), ``sort-rows`` (each live
length group gathered from the batch and back vs the batch put in live-span order once, on its ids),
``trim-live`` (V_live embedded and eq. 9-11 run at full length vs on each group's trailing positions),
``video-rows`` (eq. 12-17 on every row vs only on rows with a live event), ``embedding`` (the tables' backward
by ``embedding_dense_backward`` vs ``index_add_``), ``product-tables`` (one lookup per history field vs adjacent
small fields as one product table), ``stacked-head`` (the PLE one module at a time vs a few large products),
``fold-keys`` (keys and values projected vs W_k, W_v folded into few queries), ``key-backward`` (the folded
attention's keys' gradient as autograd writes it vs one product), ``lanes`` (products as the model's widths make
them vs padded with zeros to whole vector lanes).

FLOPs are counted on what each run computes, without the CPU backend's lane padding (``lanes`` off): the CPU
backend computes fewer FLOPs than the reference for the same model (keys folded into few queries, rows without a
live event skipped), so compare samples/s across backends, MFU within one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

SWITCHES = {
    "buckets": "buckets",
    "sort-rows": "sort_rows",
    "trim-live": "trim_live",
    "video-rows": "live_rows_only",
    "embedding": "row_gather",
    "product-tables": "product_tables",
    "stacked-head": "stacked_head",
    "fold-keys": "fold_keys",
    "key-backward": "key_backward",
    "lanes": "lanes",
}
"""``--compare`` names of the CPU backend's switches (model/cpu/options.py)."""
COMPARE = {
    "backend": ("reference", "auto"),
    "compile": ("eager", "compiled"),
    "bf16": ("fp32", "bf16"),
    **{name: (f"no-{name}", name) for name in SWITCHES},
}


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """Best GEMM rate of this machine in ``dtype`` with the current thread count, in FLOP/s."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant and setting, over all rounds")
    ap.add_argument("--rounds", type=int, default=3, help="peak measured again before each round (see above)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast; MFU against the bf16 matmul peak")
    ap.add_argument(
        "--device-store",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gather each batch on the device from the store's arrays held there (farmcli/data/device_store.py), "
        "as `farm train` does on a GPU where they fit; --no-device-store: from the CPU store, then copied "
        "(default: on with a CUDA device, off otherwise)",
    )
    ap.add_argument("--compare", choices=sorted(COMPARE), help="run two settings side by side (see above)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (training tells it to keep freed memory: farmcli/allocator.py)",
    )
    args = ap.parse_args()
    from farmcli.allocator import keep_freed_memory

    # as `farm train` does, unless --malloc-defaults
    malloc = (
        "glibc defaults"
        if args.malloc_defaults
        else ("keeps freed memory" if keep_freed_memory() else "unchanged (not glibc)")
    )
    if args.threads:
        torch.set_num_threads(args.threads)

    from farmcli.config import resolve
    from farmcli.sources import sample_store

    device = torch.device(args.device)
    store = sample_store(resolve(overrides={"data": {"source": args.data}}).data)
    n = store.n("train")
    settings = COMPARE[args.compare] if args.compare else ("bf16" if args.bf16 else "default",)
    precisions = ["fp32", *(["bf16"] if "bf16" in settings else [])]
    on_device = args.device_store if args.device_store is not None else device.type == "cuda"
    if on_device:
        from farmcli.data.device_store import DeviceStore

        Run.device_store = DeviceStore(store, device, splits=("train",))  # one copy, shared by every run
    print(
        f"data {args.data}: {n:,} training samples; device {device}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; batch {args.batch_size}; malloc {malloc}; "
        f"gather {'on the device (DeviceStore)' if on_device else 'from the CPU store, then copied'}"
    )
    runs = {
        (variant, name): Run(variant, name, store, device, args)
        for variant in args.variants.split(",")
        for name in settings
    }
    for run in runs.values():
        run.warm_up(args.warmup)
    rounds = max(1, min(args.rounds, args.steps))
    peaks: dict[str, list[float]] = {p: [] for p in precisions} if device.type == "cpu" else {}
    for i in range(rounds):
        for precision in peaks:  # CPUs without native bf16 run it 30x slower: measured only when used
            peaks[precision].append(matmul_peak() if precision == "fp32" else matmul_peak(1024, 3, torch.bfloat16))
        steps = args.steps // rounds + (i < args.steps % rounds)
        for variant in args.variants.split(","):
            for _ in range(steps):  # alternate, so a change in machine state hits both settings alike
                for name in settings:
                    runs[variant, name].step()
        for run in runs.values():
            run.end_round(peaks.get("bf16" if run.bf16 else "fp32", [None])[-1])
    for precision, values in peaks.items():
        print(
            f"measured matmul peak, {precision}: {statistics.median(values) / 1e9:.1f} GFLOP/s "
            f"(median of {len(values)} rounds; {min(values) / 1e9:.1f} to {max(values) / 1e9:.1f})"
        )
    results: dict[str, dict] = {}
    for variant in args.variants.split(","):
        for name in settings:
            label = variant if len(settings) == 1 else f"{variant}/{name}"
            r = results[label] = runs[variant, name].report()
            print(
                f"{label:>18}: " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in r.items())
            )
        if len(settings) == 2:
            a, b = (results[f"{variant}/{name}"]["samples_per_s"] for name in settings)
            print(f"{variant:>18}: {settings[1]} / {settings[0]} = {b / a:.2f}x samples/s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(json.dumps(results))


class Run:
    """One variant under one setting: its own model, optimizer and batch stream, timed step by step."""

    device_store = None
    """A DeviceStore of the training split (``--device-store``): batches are gathered from it on the device."""

    def __init__(self, variant: str, setting: str, store, device: torch.device, args: argparse.Namespace):
        from farmcli.config import resolve
        from farmcli.model.module import FarmModule

        torch.manual_seed(0)
        backend = "reference" if setting == "reference" else "auto"
        cfg = resolve(variant=variant)
        self.module = FarmModule(vocab=store.model_shapes, model=cfg.model, optim=cfg.optim, backend=backend).to(device)
        self.opt = self.module.configure_optimizers()
        self.store, self.device, self.batch_size = store, device, args.batch_size
        self.bf16 = setting == "bf16"
        switch = SWITCHES.get(setting.removeprefix("no-")) if setting.startswith("no-") else None
        self.cpu_options = {switch: False} if switch else {}
        """The CPU backend's switches this run turns off (a setting of the process: set around each step)."""
        self.loss = torch.compile(self._loss) if setting == "compiled" else self._loss
        self.rng = np.random.default_rng(0)
        self.n = store.n("train")
        self.steps, self.seconds, self.gather_seconds = 0, 0.0, 0.0
        self.round_start = (0, 0.0)
        self.per_round: list[tuple[float, float | None]] = []
        """(samples/s, the peak measured just before) of each round."""

    def _loss(self, batch):
        out = self.module(batch)
        return self.module.compute_loss(out, batch["labels"])[0]

    def _batch(self):
        idx = self.rng.choice(self.n, size=self.batch_size, replace=False)  # the same samples either way
        if self.device_store is not None:
            return self.device_store.batch("train", torch.from_numpy(idx).to(self.device, non_blocking=True))
        return {k: v.to(self.device, non_blocking=True) for k, v in self.store.batch("train", idx).items()}

    def _train(self, batch, count_flops: bool = False) -> None:
        from farmcli.model.cpu.options import options

        switches = {**self.cpu_options, **({"lanes": False} if count_flops else {})}  # FLOPs without the zeros
        with options(**switches), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self._loss(batch) if count_flops else self.loss(batch)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def warm_up(self, steps: int) -> None:
        batch = self._batch()
        with FlopCounterMode(display=False) as fc:
            self._train(batch, count_flops=True)
        self.flops_per_sample = fc.get_total_flops() / self.batch_size
        for _ in range(steps):
            self._train(self._batch())

    def step(self) -> None:
        self._sync()
        t = time.perf_counter()
        batch = self._batch()
        self._sync()
        gathered = time.perf_counter()
        self._train(batch)
        self._sync()
        self.gather_seconds += gathered - t
        self.seconds += time.perf_counter() - t
        self.steps += 1

    def end_round(self, peak: float | None) -> None:
        steps, seconds = self.steps - self.round_start[0], self.seconds - self.round_start[1]
        if steps:
            self.per_round.append((steps * self.batch_size / seconds, peak))
        self.round_start = (self.steps, self.seconds)

    def report(self) -> dict:
        sps = self.steps * self.batch_size / self.seconds
        r = {
            "samples_per_s": round(sps),
            "step_ms": round(1000 * self.seconds / self.steps, 1),
            "gather_share": round(self.gather_seconds / self.seconds, 3),
            "gather": "device" if self.device_store is not None else "cpu",
            "params": sum(p.numel() for p in self.module.parameters()),
            "train_mflops_per_sample": round(self.flops_per_sample / 1e6, 2),
            "achieved_gflops": round(sps * self.flops_per_sample / 1e9, 2),
        }
        ratios = [rate / peak for rate, peak in self.per_round if peak]
        if ratios:
            r["mfu"] = round(statistics.median(ratios) * self.flops_per_sample, 3)
            r["samples_per_s_per_peak_gflops"] = round(statistics.median(ratios) * 1e9, 1)
            r["per_peak_gflops_by_round"] = [round(x * 1e9, 1) for x in ratios]
        if self.device.type == "cuda":
            r["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        return r


if __name__ == "__main__":
    main()
