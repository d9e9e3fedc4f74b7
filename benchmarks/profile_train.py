"""Where a training step's time goes: data gather, each FARM part's forward, loss, backward, optimizer.

    python benchmarks/profile_train.py [--data default] [--variant farm] [--steps 20] [--threads N]

Forward time per top-level part of FARM (embedding layer, the two frequency modules, the two target
attentions, the preference encoder of eq. 12, the align, the fuse, the head) is measured with forward hooks
(wall clock; CPU kernels are synchronous); the CPU backend (``--backend auto`` on a CPU) runs most parts' pieces
as functions, which no hook sees: ``--backend reference`` times every part. Backward is one figure: autograd interleaves the parts. With
``--ops`` the top torch.profiler operators follow. With ``--parts`` each part's forward + backward follows,
timed alone on the inputs it got in one training forward (detached copies, a fixed random output gradient;
the median of seven runs): the backward split by part, which the step's own timing cannot give. A part that
returns its input (a ``none`` component) shows only the cost of storing that input's gradient.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="default")
    ap.add_argument("--variant", default="farm")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--backend", default="auto", choices=["auto", "reference", "cpu"], help="fit.backend")
    ap.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is (training tells it to keep freed memory: farmcli/allocator.py)",
    )
    ap.add_argument("--ops", action="store_true", help="also print the top operators (torch.profiler)")
    ap.add_argument("--parts", action="store_true", help="also time each part's forward + backward alone")
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
    from farmcli.model.module import FarmModule
    from farmcli.sources import sample_store

    store = sample_store(resolve(overrides={"data": {"source": args.data}}).data)
    cfg = resolve(variant=args.variant)
    torch.manual_seed(0)
    module = FarmModule(vocab=store.model_shapes, model=cfg.model, optim=cfg.optim, backend=args.backend)
    opt = module.configure_optimizers()
    rng = np.random.default_rng(0)
    n = store.n("train")
    seconds: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}

    def pre(name):
        return lambda mod, inp: started.__setitem__(name, time.perf_counter())

    def post(name):
        return lambda mod, inp, out: seconds.__setitem__(
            f"forward: {name}", seconds[f"forward: {name}"] + time.perf_counter() - started[name]
        )

    hooks = []
    for name, child in module.farm.named_children():
        hooks += [child.register_forward_pre_hook(pre(name)), child.register_forward_hook(post(name))]

    def step(timed: bool) -> None:
        t0 = time.perf_counter()
        batch = store.batch("train", rng.choice(n, size=args.batch_size, replace=False))
        t1 = time.perf_counter()
        out = module(batch)
        t2 = time.perf_counter()
        loss, _ = module.compute_loss(out, batch["labels"])
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if timed:
            for key, dt in (
                ("data gather", t1 - t0),
                ("forward (all)", t2 - t1),
                ("loss", t3 - t2),
                ("backward", t4 - t3),
                ("optimizer (Adam)", t5 - t4),
                ("step", t5 - t0),
            ):
                seconds[key] += dt

    for _ in range(3):
        step(False)
    seconds.clear()
    for _ in range(args.steps):
        step(True)
    for h in hooks:
        h.remove()
    total = seconds.pop("step")
    print(
        f"{args.variant} on {args.data}: batch {args.batch_size}, {torch.get_num_threads()} threads, malloc {malloc}, "
        f"{args.steps} steps: {1000 * total / args.steps:.0f} ms per step, "
        f"{args.steps * args.batch_size / total:,.0f} samples/s"
    )
    print("| part | ms per step | share |\n|---|---:|---:|")
    order = [
        "data gather",
        *sorted(k for k in seconds if k.startswith("forward: ")),
        "forward (all)",
        "loss",
        "backward",
        "optimizer (Adam)",
    ]
    for key in order:
        if key in seconds:
            print(f"| {key} | {1000 * seconds[key] / args.steps:.1f} | {seconds[key] / total:.1%} |")
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step(False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    if args.parts:
        batch = store.batch("train", rng.choice(n, size=args.batch_size, replace=False))
        print("| part | forward + backward, ms |\n|---|---:|")
        for name, ms in part_times(module, batch):
            print(f"| {name} | {ms:.1f} |")


def part_times(module, batch) -> list[tuple[str, float]]:
    """Forward + backward of each of FARM's parts alone, on the inputs it got in one training forward of the
    reference model (the CPU backend calls its parts' pieces, not the parts)."""
    calls: dict[str, list] = defaultdict(list)

    def keep(name):
        def hook(mod, args, kwargs) -> None:
            calls[name].append((args, kwargs))

        return hook

    hooks = [child.register_forward_pre_hook(keep(n), with_kwargs=True) for n, child in module.farm.named_children()]
    module.farm(batch)  # FARM itself is the reference
    for h in hooks:
        h.remove()

    def fresh(x):  # a leaf copy of every float tensor, so each run has a graph of its own
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.detach().clone().requires_grad_(x.requires_grad)
        return type(x)(fresh(v) for v in x) if isinstance(x, (list, tuple)) else x

    def outputs(x) -> list[torch.Tensor]:
        if isinstance(x, torch.Tensor):
            return [x] if x.requires_grad else []
        if isinstance(x, dict):
            x = list(x.values())
        return [t for v in x for t in outputs(v)] if isinstance(x, (list, tuple)) else []

    def run(part, part_calls, grads: dict) -> float:
        """Seconds of the part's forward + backward, its inputs copied before the clock starts."""
        seconds = 0.0
        for i, (a, kw) in enumerate(part_calls):
            a, kw = fresh(a), {k: fresh(v) for k, v in kw.items()}
            t = time.perf_counter()
            outs = outputs(part(*a, **kw))
            if outs:
                if i not in grads:  # drawn once; the first run is not timed
                    grads[i] = [torch.randn_like(t) for t in outs]
                torch.autograd.backward(outs, grads[i])
            seconds += time.perf_counter() - t
        return seconds

    times = []
    for name, part_calls in calls.items():
        part, grads = getattr(module.farm, name), {}
        run(part, part_calls, grads)
        seconds = [run(part, part_calls, grads) for _ in range(7)]
        times.append((name, 1000 * float(np.median(seconds))))
    return sorted(times, key=lambda nt: -nt[1])


if __name__ == "__main__":
    main()
