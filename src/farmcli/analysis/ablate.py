"""`farm ablate`: every variant x seed on one shared sample store, then Table 1 and Table 4.

Resumable: each run lives in OUT/runs/VARIANT-sSEED; a finished one (run.json finished, eval-test.json there) is
skipped, an interrupted one continues from its last checkpoint. OUT's ablation.json marks a directory to continue.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from farmcli import locks
from farmcli.analysis import tables
from farmcli.config import RunConfig, resolve
from farmcli.errors import UserError
from farmcli.io import read_json, read_record, write_json
from farmcli.tables_io import write_table

ABLATION_FORMAT = "farm-ablation/1"  # OUT/ablation.json's format
MAX_SEED = 2**32 - 1  # Lightning's and numpy's range (farmcli.config.Seed)
MAX_COUNT = 1000  # the largest count --seeds takes: a larger one is a typo that would plan millions of runs
SEEDS_FIX = (
    "Give a count (--seeds 3 = seeds 0, 1, 2) or a comma-separated list of distinct seeds "
    "(--seeds 0,1,2 or --seeds 5,7; one given seed: --seeds 7,)."
)


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: a count (``3`` = seeds 0, 1, 2) or a list that adds to or repeats an ablation (``3,4``; one
    seed: ``7,``)."""
    text = text.strip()
    if "," not in text:
        if not text:
            raise UserError(f"--seeds is empty. {SEEDS_FIX}")
        if not re.fullmatch(r"[0-9]+", text):
            raise UserError(
                f"--seeds {text!r} is neither a count nor a list of seeds (whole numbers >= 0). {SEEDS_FIX}"
            )
        if not 1 <= int(text) <= MAX_COUNT:
            raise UserError(f"--seeds {text}: a count of seeds is 1 .. {MAX_COUNT}. {SEEDS_FIX}")
        return list(range(int(text)))
    items = [t.strip() for t in text.split(",") if t.strip()]  # a trailing comma marks one given seed
    bad = [t for t in items if not re.fullmatch(r"[0-9]+", t)]
    if bad:
        raise UserError(f"--seeds {text!r}: {bad[0]!r} is not a seed (whole numbers 0 .. {MAX_SEED}). {SEEDS_FIX}")
    seeds = [int(t) for t in items]
    check_seeds(seeds, text)
    return seeds


def check_seeds(seeds: Sequence[int], given: str) -> None:
    """Every seed once, each in Lightning's range: a seed given twice would train OUT/runs/VARIANT-sSEED twice."""
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad or not seeds:
        what = f"{bad[0]!r} is not a seed (whole numbers 0 .. {MAX_SEED})" if bad else "no seed given"
        raise UserError(f"--seeds {given!r}: {what}. {SEEDS_FIX}")
    twice = sorted(s for s, n in Counter(seeds).items() if n > 1)
    if twice:
        raise UserError(
            f"--seeds {given!r} names seed {', '.join(map(str, twice))} twice: each seed is one run per variant. "
            f"{SEEDS_FIX}"
        )


@dataclass(frozen=True)
class AblationVariant:
    name: str  # OUT/runs/NAME-sSEED and the tables' key: a built-in name or a variant file's stem
    source: str  # what resolve reads: the built-in name or the file's absolute path (workers may not share the cwd)
    label: str  # its row in Table 1


def plan_variants(specs: Sequence[str]) -> list[AblationVariant]:
    """Every ``--variants`` entry read before any work; two naming one variant would share runs: refused."""
    from farmcli.variants import VARIANTS_DIR, load_variant

    chosen: dict[str, tuple[str, Path, AblationVariant]] = {}
    for spec in specs:
        try:
            v = load_variant(spec)
        except OSError as e:  # a directory named x.yaml, a file without read permission
            raise UserError(
                f"--variants {spec}: cannot read the variant file ({e.strerror or e}). Give a built-in variant "
                f"name (see `farm variants`) or the path of a readable variant YAML file."
            ) from None
        source = spec if v.path == VARIANTS_DIR / f"{spec}.yaml" else str(v.path.resolve())
        if v.name in chosen:
            earlier, earlier_file, _ = chosen[v.name]
            both = "" if earlier == spec else f" ({earlier} and {spec})"
            fix = (
                "give it once"
                if earlier_file == v.path.resolve()
                else "rename one of the files (a variant file's runs and row take the file's name)"
            )
            raise UserError(
                f"--variants names the variant '{v.name}' twice{both}: both would train into "
                f"OUT/runs/{v.name}-sSEED. Nothing was trained; {fix}."
            )
        chosen[v.name] = (spec, v.path.resolve(), AblationVariant(v.name, source, v.label))
    variants = [v for _, _, v in chosen.values()]
    labels = [v.label for v in variants]
    return [  # two files copied from one built-in keep its label: tell their rows apart
        AblationVariant(v.name, v.source, f"{v.label} ({v.name})" if labels.count(v.label) > 1 else v.label)
        for v in variants
    ]


MARKER = "ablation.json"
# every name farm ablate writes in OUT (and its temporaries): a directory holding only these is an ablation's
OWN_NAMES = re.compile(
    r"(runs|ablation\.json|table1(-(low|mid|high))?\.(md|csv|json)|table4\.(md|csv|json)|\..+\.[0-9]+\.[^.]+\.tmp)"
)


def is_ablation_dir(path: Path) -> bool:
    """A directory farm ablate wrote (older versions wrote ablation.json without a ``format``)."""
    marker = read_json(path / MARKER)
    return marker.get("format") == ABLATION_FORMAT or ("format" not in marker and {"variants", "seeds"} <= set(marker))


def check_out(out: Path) -> None:
    """Before any work, refuse an --out that is a file or a non-empty directory no farm ablation wrote, and name an
    unreadable ablation.json with the fix."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the ablation (its runs and tables).")
    marker = out / MARKER
    if marker.is_file():
        read_record(
            marker,
            f"farm cannot tell which ablation {out} holds. It is farm ablate's record of the ablation's settings: "
            f"delete it (rm {marker}) and run the same command again; farm ablate writes it again, and keeps and "
            f"continues the runs in {out / 'runs'}.",
        )
    if out.is_dir() and any(out.iterdir()) and not is_ablation_dir(out) and not _only_ours(out):
        raise UserError(
            f"--out {out} holds files that farm ablate did not write (no ablation.json of a farm ablation); "
            f"they are left alone. Choose a new or empty directory for --out, or the directory of an earlier "
            f"farm ablate to continue it."
        )


def _only_ours(out: Path) -> bool:
    """OUT holds only farm ablate's files and runs, without ablation.json: an ablation whose marker was deleted."""
    names = [p.name for p in out.iterdir()]
    if MARKER in names or "runs" not in names or not all(OWN_NAMES.fullmatch(n) for n in names):
        return False
    runs = out / "runs"
    return runs.is_dir() and all(
        (p.is_dir() and re.fullmatch(r".+-s[0-9]+", p.name)) or p.name.endswith(locks.SUFFIX) for p in runs.iterdir()
    )


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
    other_seeds: list[int] = field(default_factory=list)  # finished runs' seeds not asked for: kept, not in tables

    @property
    def failed(self) -> list[RunState]:
        return [r for r in self.runs if r.state == "failed"]

    @property
    def pending(self) -> list[RunState]:
        return [r for r in self.runs if r.state == "pending"]


def run_config(
    variant: AblationVariant,
    seed: int,
    data: str,
    runs_dir: Path,
    config_files: Sequence[Path] = (),
    overrides: Sequence[str] = (),
) -> RunConfig:
    """The run's settings; the ablation's own go in as values, not KEY=VALUE text, so a path reading as YAML
    (``a: b``, ``#1``) stays what it is."""
    fit = {"runs_dir": str(runs_dir), "name": f"{variant.name}-s{seed}"}
    values = {"data": {"source": data}, "seed": seed, "fit": fit}
    return resolve(config_files, variant=variant.source, overrides=list(overrides), values=values)


def _finished(run: Path) -> bool:
    return read_json(run / "run.json").get("status") == "finished" and (run / "eval-test.json").is_file()


def _same_config(run: Path, cfg: RunConfig) -> bool:
    """The run's settings are these, wherever OUT is reached from (fit.runs_dir is OUT/runs as given)."""

    def settings(c: RunConfig) -> dict:
        d = c.to_dict()
        d["fit"].pop("runs_dir")
        return d

    try:
        return settings(resolve([run / "config.yaml"])) == settings(cfg)
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

    The tables cover ``seeds`` alone (recorded in ablation.json), so continuing OUT with other seeds neither mixes
    in nor deletes earlier runs. ``variants`` None: the built-in ones with an ``ablation_order``. ``tables_only``:
    train nothing, tabulate the runs finished so far (also while another process trains them). ``jobs``: runs
    trained at once, each in its own process.
    """
    from farmcli.sources import dataset_dir, sample_store
    from farmcli.training import train
    from farmcli.variants import ablation_variants

    seeds = list(seeds)
    check_seeds(seeds, ",".join(map(str, seeds)))
    chosen = plan_variants(ablation_variants() if variants is None else variants)
    out = Path(out)
    if not tables_only:  # another farm ablate training into OUT: refused before any work (--tables-only reads)
        locks.check_free(out, "the ablation", "--out")
    check_out(out)
    runs_dir = out / "runs"
    plan = [(v, s) for v in chosen for s in seeds]
    configs = {(v.name, s): run_config(v, s, data, runs_dir, config_files, overrides) for v, s in plan}
    if plan and not tables_only:
        dataset_dir(next(iter(configs.values())).data)  # a missing or invalid dataset stops here, before any write
    for (name, s), cfg in configs.items():  # refuse before training anything, never after an hour
        run = runs_dir / f"{name}-s{s}"
        if (run / "config.yaml").is_file() and not _same_config(run, cfg):
            raise UserError(
                f"{run} was trained with other settings than this ablation asks for. Use another --out "
                f"(or delete that run) so no result is overwritten."
            )
    result = AblationResult(out)
    if tables_only:
        for v, s in plan:
            run = runs_dir / f"{v.name}-s{s}"
            result.runs.append(RunState(v.name, s, run, "done" if _finished(run) else "pending"))
        write_tables(result, chosen, groups, data, seeds)
        return result
    out.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(out, "the ablation", "--out"):
        for v, s in plan:  # a run that an earlier farm ablate's worker still trains (its parent was killed)
            _check_not_training(runs_dir / f"{v.name}-s{s}")
        out.mkdir(parents=True, exist_ok=True)
        record = {"format": ABLATION_FORMAT, "variants": [v.source for v in chosen], "seeds": seeds, "data": data}
        record.update(groups=list(groups), config_files=[str(c) for c in config_files], overrides=list(overrides))
        write_json(out / MARKER, record)
        todo: list[tuple[int, RunState]] = []
        for i, (v, s) in enumerate(plan):
            run = runs_dir / f"{v.name}-s{s}"
            if _finished(run):
                _ensure_groups(run, groups)
                result.runs.append(RunState(v.name, s, run, "done"))
                if on_run:
                    on_run(i, len(plan), result.runs[-1], "end")
                continue
            resume = (run / "checkpoints" / "last.ckpt").is_file()
            if run.exists() and not resume:
                shutil.rmtree(run)  # started but never reached a checkpoint: nothing to keep
            result.runs.append(RunState(v.name, s, run, "resumed" if resume else "trained"))
            todo.append((i, result.runs[-1]))
        runs_dir.mkdir(parents=True, exist_ok=True)  # where the runs' locks go
        # every run shares the data settings: one store, built (or opened) once, here, before any worker starts
        store = sample_store(next(iter(configs.values())).data) if todo else None
        if jobs <= 1:
            for i, state in todo:
                if on_run:
                    on_run(i, len(plan), state, "start")
                try:
                    with locks.hold(state.path, "the run", "--out"):
                        cfg = configs[(state.variant, state.seed)]
                        train(cfg, resume=_resume(state), show_bar=show_bar, store=store)
                except UserError as e:
                    state.state, state.error = "failed", str(e)
                if on_run:
                    on_run(i, len(plan), state, "end")
        else:
            by_name = {v.name: v for v in chosen}
            _train_in_parallel(todo, len(plan), jobs, by_name, (data, runs_dir, config_files, overrides), on_run)
        write_tables(result, chosen, groups, data, seeds)
    return result


def _check_not_training(run: Path) -> None:
    """Refuse a run another process trains now: its lock is held, or its run.json names a live process."""
    from farmcli.runs import alive

    info = locks.holder(run)
    if info is None:
        record = read_json(run / "run.json")
        if record.get("status") in ("running", "evaluating") and alive(record):
            info = record
    if info is not None:
        pid = info.get("pid")
        raise UserError(
            f"{run} is being trained by another process now (process {pid}: a worker of an earlier farm ablate "
            f"whose main process was killed, or a farm train); training it here too would spoil both. Wait for it "
            f"to end (or stop it: kill {pid}), then run this command again: it continues from the run's last "
            f"checkpoint. Nothing was trained."
        )


def _resume(state: RunState) -> Path | None:
    return state.path if state.state == "resumed" else None


def _train_in_parallel(
    todo: Sequence[tuple[int, RunState]],
    total: int,
    jobs: int,
    variants: dict[str, AblationVariant],
    settings: tuple[str, Path, Sequence[Path], Sequence[str]],
    on_run: Callable[[int, int, RunState, str], None] | None,
) -> None:
    """Up to ``jobs`` runs at once, each process with an equal share of torch's threads; seeded as in a
    sequential ablation (float rounding may differ with the thread count)."""
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

    work = [
        Job(f"{s.variant}-s{s.seed}", (variants[s.variant], s.seed, *settings, _resume(s)), (i, s)) for i, s in todo
    ]
    run_jobs(_train_one, work, jobs, max(1, torch.get_num_threads() // jobs), on_start=start, on_end=end)


def _train_one(
    variant: AblationVariant,
    seed: int,
    data: str,
    runs_dir: Path,
    config_files: Sequence[Path],
    overrides: Sequence[str],
    resume: Path | None,
) -> None:
    """One run in a worker process, under the run's lock: an orphaned worker keeps it, so a re-run refuses the run."""
    from farmcli.training import train

    runs_dir.mkdir(parents=True, exist_ok=True)
    with locks.hold(runs_dir / f"{variant.name}-s{seed}", "the run", "--out"):
        train(run_config(variant, seed, data, runs_dir, config_files, overrides), resume=resume, show_bar=False)


def _ensure_groups(run: Path, groups: Sequence[str]) -> None:
    """Evaluate again a finished run whose test table lacks a group (a later `farm eval --groups` rewrote it), so
    Table 4 never quietly loses a seed."""
    table = read_json(run / "eval-test.json").get("model") or {}
    if all(g in table for g in ("full", *groups)):
        return
    from farmcli.evaluation import evaluate_run

    evaluate_run(run, split="test", groups=tuple(groups))


def collect(
    runs_dir: Path, names: Sequence[str], seeds: Collection[int] | None = None, strict: bool = False
) -> dict[str, dict[int, dict]]:
    """{variant name: {seed: eval-test.json}} of the finished runs of ``seeds`` (None: all); ``strict``: an unreadable
    eval-test.json is an error naming it, else that run is left out."""
    evals: dict[str, dict[int, dict]] = {}
    for name, seed, run in _finished_runs(runs_dir, names):
        if seeds is None or seed in seeds:
            table = read_eval(run, strict)
            if table:
                evals.setdefault(name, {})[seed] = table
    return evals


def read_eval(run: Path, strict: bool = True) -> dict:
    """RUN/eval-test.json; one cut short or overwritten is named with the fix (``strict``), or read as {}."""
    path = run / "eval-test.json"
    try:
        table = json.loads(path.read_bytes())
        if not isinstance(table, dict) or not isinstance(table.get("model"), dict):
            raise ValueError("not the test table farm eval writes (no 'model' table)")
    except (OSError, ValueError) as e:
        if not strict:
            return {}
        raise UserError(
            f"{path} is unreadable ({getattr(e, 'strerror', None) or e}), so the run's row cannot be made and no "
            f"table was written. `farm eval {run} --split test` writes it again from the run's best checkpoint "
            f"(or run farm ablate without --tables-only, which evaluates such a run again)."
        ) from None
    return table


def _finished_runs(runs_dir: Path, names: Sequence[str]) -> Iterator[tuple[str, int, Path]]:
    """(name, seed, run) of each finished NAME-sSEED in OUT/runs (the name matched as text, not a glob)."""
    found = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    for name in names:
        for run in found:
            seed = run.name.removeprefix(f"{name}-s")
            if seed != run.name and re.fullmatch(r"[0-9]+", seed) and _finished(run):
                yield name, int(seed), run


def write_tables(
    result: AblationResult,
    variants: Sequence[AblationVariant],
    groups: Sequence[str],
    data: str,
    seeds: Collection[int] | None = None,
    strict: bool = True,
) -> None:
    """The tables of the finished runs of ``seeds`` (None: every seed in OUT/runs): an ablation continued with other
    seeds has its own command's tables, the other finished runs named in ``result.other_seeds``."""
    from farmcli._version import __version__

    out = result.out
    names = [v.name for v in variants]
    evals = collect(out / "runs", names, seeds, strict)
    if seeds is not None:
        result.other_seeds = sorted({seed for _, seed, _ in _finished_runs(out / "runs", names)} - set(seeds))
    if not evals:
        return
    labels = {v.name: v.label for v in variants}
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
    for group in (None, *groups):  # and Table 1 per activity group: which module carries the gain for whom
        t1 = tables.table1(evals, labels, group=group) if group else result.table1
        name, title = (f"table1-{group}", f", {group}-active users") if group else ("table1", "")
        md = tables.table1_markdown(t1, f"## Table 1 shape{title}\n\n{header(seeds_text)}")
        result.files += write_table(out / name, md=md, csv=tables.table1_csv(t1), json=t1)
    if result.table4:
        paired = seed_list(set(evals["farm"]) & set(evals["base"]))
        md = tables.table4_markdown(result.table4, f"## Table 4 shape\n\n{header(f'seeds {paired}')}")
        result.files += write_table(out / "table4", md=md, csv=tables.table4_csv(result.table4), json=result.table4)
