"""`farm ablate`: every variant x seed on one shared sample store, then Table 1 and Table 4.

Resumable by construction: each run lives in OUT/runs/VARIANT-sSEED; a finished run (its run.json says
finished and its test evaluation exists) is skipped, an interrupted one continues from its last checkpoint,
and the tables are written atomically at the end from whatever evaluations exist.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from farmcli.analysis import tables
from farmcli.config import RunConfig, resolve
from farmcli.errors import UserError
from farmcli.io import read_json, write_json, write_text


@dataclass
class RunState:
    variant: str
    seed: int
    path: Path
    state: str  # "done" (skipped), "trained", "resumed", "failed", "pending" (not finished, not trained here)
    error: str = ""


@dataclass
class AblationResult:
    out: Path
    runs: list[RunState] = field(default_factory=list)
    table1: dict | None = None
    table4: dict | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[RunState]:
        return [r for r in self.runs if r.state == "failed"]

    @property
    def pending(self) -> list[RunState]:
        return [r for r in self.runs if r.state == "pending"]


def run_config(
    variant: str, seed: int, data: str, runs_dir: Path, config_files: Sequence[Path] = (), overrides: Sequence[str] = ()
) -> RunConfig:
    return resolve(
        config_files,
        variant=variant,
        overrides=[
            *overrides,
            f"data.source={data}",
            f"seed={seed}",
            f"fit.runs_dir={runs_dir}",
            f"fit.name={variant}-s{seed}",
        ],
    )


def _finished(run: Path) -> bool:
    return read_json(run / "run.json").get("status") == "finished" and (run / "eval-test.json").is_file()


def _same_config(run: Path, cfg: RunConfig) -> bool:
    try:
        return resolve([run / "config.yaml"]).to_dict() == cfg.to_dict()
    except UserError:
        return False


def run_ablation(
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    data: str = "default",
    groups: Sequence[str] = ("low", "mid", "high"),
    out: str | Path = "farm-ablations/default",
    config_files: Sequence[Path] = (),
    overrides: Sequence[str] = (),
    on_run: Callable[[int, int, RunState, str], None] | None = None,
    show_bar: bool = True,
    tables_only: bool = False,
    jobs: int = 1,
) -> AblationResult:
    """Train what is missing, skip what is done, then write Table 1 and Table 4 (Markdown, CSV, JSON).

    ``variants``: names or YAML files; None = the built-in variants with an ``ablation_order`` (Table 1's rows).
    ``tables_only``: train nothing, write the tables of the runs finished so far (a long ablation's interim
    result, also while another process is training it). ``jobs``: runs trained at once, each in its own
    process (``_train_in_parallel``).
    """
    from farmcli.sources import dataset_dir, sample_store
    from farmcli.train import train
    from farmcli.variants import ablation_variants

    variants = ablation_variants() if variants is None else list(variants)

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the ablation (its runs and tables).")
    runs_dir = out / "runs"
    plan = [(v, s) for v in variants for s in seeds]
    configs = {(v, s): run_config(v, s, data, runs_dir, config_files, overrides) for v, s in plan}
    if plan and not tables_only:
        dataset_dir(configs[plan[0]].data)  # a missing or invalid dataset stops here, before anything is written
    for (v, s), cfg in configs.items():  # refuse before training anything, never after an hour
        run = runs_dir / f"{v}-s{s}"
        if (run / "config.yaml").is_file() and not _same_config(run, cfg):
            raise UserError(
                f"{run} was trained with other settings than this ablation asks for. Use another --out "
                f"(or delete that run) so no result is overwritten."
            )
    result = AblationResult(out)
    if tables_only:
        result.runs = [
            RunState(v, s, runs_dir / f"{v}-s{s}", "done" if _finished(runs_dir / f"{v}-s{s}") else "pending")
            for v, s in plan
        ]
        write_tables(result, variants, groups, data)
        return result
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "ablation.json",
        {
            "variants": list(variants),
            "seeds": list(seeds),
            "data": data,
            "groups": list(groups),
            "config_files": [str(c) for c in config_files],
            "overrides": list(overrides),
        },
    )
    todo: list[tuple[int, RunState]] = []
    for i, (v, s) in enumerate(plan):
        run = runs_dir / f"{v}-s{s}"
        if _finished(run):
            _ensure_groups(run, groups)
            result.runs.append(RunState(v, s, run, "done"))
            if on_run:
                on_run(i, len(plan), result.runs[-1], "end")
            continue
        resume = (run / "checkpoints" / "last.ckpt").is_file()
        if run.exists() and not resume:
            shutil.rmtree(run)  # started but never reached a checkpoint: nothing to keep
        result.runs.append(RunState(v, s, run, "resumed" if resume else "trained"))
        todo.append((i, result.runs[-1]))
    # every run shares the data settings: one store, built (or opened) once, here, before any worker starts
    store = sample_store(configs[plan[0]].data) if todo else None
    if jobs <= 1:
        for i, state in todo:
            if on_run:
                on_run(i, len(plan), state, "start")
            try:
                train(configs[(state.variant, state.seed)], resume=_resume(state), show_bar=show_bar, store=store)
            except UserError as e:
                state.state, state.error = "failed", str(e)
            if on_run:
                on_run(i, len(plan), state, "end")
    else:
        _train_in_parallel(todo, len(plan), jobs, (data, runs_dir, config_files, overrides), on_run)
    write_tables(result, variants, groups, data)
    return result


def _resume(state: RunState) -> Path | None:
    return state.path if state.state == "resumed" else None


def _train_in_parallel(
    todo: Sequence[tuple[int, RunState]],
    total: int,
    jobs: int,
    settings: tuple[str, Path, Sequence[Path], Sequence[str]],
    on_run: Callable[[int, int, RunState, str], None] | None,
) -> None:
    """Up to ``jobs`` runs at once, each in its own process with an equal share of torch's threads
    (analysis/workers.py). Each run is seeded as in a sequential ablation; float rounding may differ with the
    thread count."""
    import torch

    from farmcli.analysis.workers import Job, run_jobs

    def start(job: Job) -> None:
        if on_run:
            on_run(job.key[0], total, job.key[1], "start")

    def end(job: Job, error: str) -> None:
        i, state = job.key
        if error:
            state.state, state.error = "failed", error
        if on_run:
            on_run(i, total, state, "end")

    run_jobs(
        _train_one,
        [
            Job(f"{state.variant}-s{state.seed}", (state.variant, state.seed, *settings, _resume(state)), (i, state))
            for i, state in todo
        ],
        parallel=jobs,
        threads=max(1, torch.get_num_threads() // jobs),
        on_start=start,
        on_end=end,
    )


def _train_one(
    variant: str,
    seed: int,
    data: str,
    runs_dir: Path,
    config_files: Sequence[Path],
    overrides: Sequence[str],
    resume: Path | None,
) -> None:
    """One run of a parallel ablation, in a worker process."""
    from farmcli.train import train

    train(run_config(variant, seed, data, runs_dir, config_files, overrides), resume=resume, show_bar=False)


def _ensure_groups(run: Path, groups: Sequence[str]) -> None:
    """A finished run whose test table lacks a group (a later `farm eval --groups ...` rewrote it) is
    evaluated again, so Table 4 never quietly loses a seed."""
    table = read_json(run / "eval-test.json").get("model") or {}
    if all(g in table for g in ("full", *groups)):
        return
    from farmcli.evaluate import evaluate_run

    evaluate_run(run, split="test", groups=tuple(groups))


def collect(runs_dir: Path, variants: Sequence[str]) -> dict[str, dict[int, dict]]:
    """{variant: {seed: eval-test.json}} of the finished runs."""
    evals: dict[str, dict[int, dict]] = {}
    for v in variants:
        for run in sorted(runs_dir.glob(f"{v}-s*")):
            seed = run.name[len(v) + 2 :]
            if seed.isdigit() and _finished(run):
                evals.setdefault(v, {})[int(seed)] = read_json(run / "eval-test.json")
    return evals


def write_tables(result: AblationResult, variants: Sequence[str], groups: Sequence[str], data: str) -> None:
    from farmcli import __version__
    from farmcli.variants import load_variant

    out = result.out
    evals = collect(out / "runs", variants)
    if not evals:
        return
    labels = {v: load_variant(v).label for v in evals}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def header(seeds: str) -> str:
        return f"Data: `{data}`; {seeds}; test split. farmcli {__version__}, {stamp}."

    def seed_list(seeds: Iterable[int]) -> str:
        return ", ".join(map(str, sorted(seeds)))

    per_variant = {v: seed_list(runs) for v, runs in evals.items()}
    if len(set(per_variant.values())) == 1:
        seeds_text = f"seeds {next(iter(per_variant.values()))}"
    else:  # an unfinished ablation (--tables-only): say which seeds each row has
        seeds_text = "seeds per row: " + "; ".join(f"{labels[v]} {s}" for v, s in per_variant.items())
    result.table1 = tables.table1(evals, labels)
    result.table4 = tables.table4(evals, groups)
    write_json(out / "table1.json", result.table1)
    write_text(out / "table1.csv", tables.table1_csv(result.table1))
    write_text(out / "table1.md", tables.table1_markdown(result.table1, f"## Table 1 shape\n\n{header(seeds_text)}"))
    result.files += [out / "table1.md", out / "table1.csv", out / "table1.json"]
    if result.table4:
        paired = seed_list(set(evals["farm"]) & set(evals["base"]))
        write_json(out / "table4.json", result.table4)
        write_text(out / "table4.csv", tables.table4_csv(result.table4))
        write_text(
            out / "table4.md", tables.table4_markdown(result.table4, f"## Table 4 shape\n\n{header(f'seeds {paired}')}")
        )
        result.files += [out / "table4.md", out / "table4.csv", out / "table4.json"]
