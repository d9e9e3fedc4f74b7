"""`farm tune`: an Optuna study scored on the validation split only, resumable after a kill (Optuna's journal
in OUT keeps finished trials; the interrupted one runs again); writes the trials table and best.yaml, the best
trial's whole run config for `farm train --config`.

The grid is the default sampler because the paper (Sec. 4.1.3) picks c, lambda and the MLP depth from grids;
``tpe`` samples lists and ranges. Users read trial numbers from 1: Optuna's number + 1.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from farmcli import locks
from farmcli.config import RunConfig, pairs_of, resolve
from farmcli.errors import UserError
from farmcli.interrupts import stopped_by_signal
from farmcli.io import atomic_path, read_record, write_json, write_text
from farmcli.tables_io import csv_text, markdown, write_table
from farmcli.tune.space import Dimension, as_overrides, corners, grid, is_scalar, label
from farmcli.tune.stores import Stores

STUDY = "farm-tune"
SAMPLERS = ("grid", "tpe")
JOURNAL = "study.journal"


@dataclass
class TuneSettings:
    variant: str = "farm"
    data: str = "small"
    space: list[Dimension] = field(default_factory=list)
    config_files: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # fixed for every trial (e.g. trainer.max_epochs=4)
    seeds: list[int] = field(default_factory=lambda: [0])  # a trial's score is the mean over these
    sampler: str = "grid"
    trials: int | None = None  # for tpe; the grid runs every combination
    prune: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["space"] = [s.to_dict() for s in self.space]
        return d


@dataclass
class TrialRow:
    number: int  # from 1 (Optuna's number + 1)
    state: str
    params: dict[str, Any]
    score: float | None  # mean over seeds of the best val/auc_mean, in percent
    seeds: list[dict[str, Any]]
    seconds: float


@dataclass
class TuneResult:
    out: Path
    rows: list[TrialRow]
    best: TrialRow | None
    files: list[Path]


# ("start", {number, index, total, params}) and ("end", {row, best, index, total}); index = trials finished before
Event = Callable[[str, dict[str, Any]], None]


def check(settings: TuneSettings, out: Path | None = None) -> list[dict[str, Any]]:
    """Every trial's config resolves and ``out`` is usable, before any data is built (no half-made study).

    Returns the grid's combinations in order (for ``tpe``: each listed value and range bound once)."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(
            "farm tune needs Optuna, an optional extra: pip install -e '.[tune]' (or pip install optuna)."
        ) from None
    _check_settings(settings)
    combos = list(grid(settings.space)) if settings.sampler == "grid" else corners(settings.space)
    for params in combos:
        _check_params(settings, params)
    if out is not None:
        check_out(out, settings)
    if settings.sampler == "grid" and settings.trials is not None:
        combos = combos[: settings.trials]
    return combos


def _check_settings(settings: TuneSettings) -> None:
    """The options agree, and leave alone what a study fixes itself: data, seeds, and the monitor (it sets the
    study's direction)."""
    if not settings.space:
        raise UserError("farm tune needs at least one --space KEY=V1,V2,...; e.g. --space model.cl_weight=0.1,0.3,0.5")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"--sampler {settings.sampler}: choose {' or '.join(SAMPLERS)}.")
    ranges = [d for d in settings.space if d.is_range]
    if ranges and settings.sampler == "grid":
        d = ranges[0]
        raise UserError(
            f"--space {d.key}={d.text()} is a range, and the grid sampler runs listed values only: sample it with "
            f"--sampler tpe --trials N, or list the values for the grid (e.g. --space {d.key}={_listed(d)})."
        )
    if settings.sampler == "tpe" and (settings.trials is None or settings.trials < 1):
        raise UserError("--sampler tpe needs --trials N (N >= 1).")
    if settings.trials is not None and settings.trials < 1:
        raise UserError(f"--trials must be >= 1, got {settings.trials}.")
    if not settings.seeds:
        raise UserError("--seeds must be >= 1.")
    fixed = {key for key, _ in pairs_of(settings.overrides)}
    for key, option in {"data.source": "--data", "seed": "--seeds"}.items():
        if key in fixed or any(d.key == key for d in settings.space):
            raise UserError(f"farm tune sets {key} itself ({option}); do not tune or override it.")
    if any(d.key == "fit.monitor" for d in settings.space):
        raise UserError(
            "--space fit.monitor: the monitor is what trials are ranked by, one for the whole study; fix it "
            "with --fit.monitor NAME (e.g. val/auc_mean) and tune other settings."
        )


def _listed(d: Dimension) -> str:
    """A range's bounds and midpoint as a list, for the message that sends a range to the grid."""
    assert d.low is not None and d.high is not None
    mid = (d.low * d.high) ** 0.5 if d.log else (d.low + d.high) / 2
    mid = round(mid) if d.is_int else float(f"{mid:.3g}")
    values = [d.low, mid, d.high] if mid not in (d.low, d.high) else [d.low, d.high]
    return ",".join(str(v) for v in values)


def _check_params(settings: TuneSettings, params: dict[str, Any]) -> None:
    """One trial's config, monitor and memory pass `farm train`'s checks; a mistake outside the space is named so."""
    from farmcli.machine import check_memory
    from farmcli.training import check_monitor

    def check(cfg: RunConfig) -> None:
        check_monitor(cfg)
        check_memory(cfg)

    try:
        check(trial_config(settings, params, settings.seeds[0]))
    except UserError as e:
        try:  # the space's value, or --variant / --config / --set, wrong whatever the space says?
            check(trial_config(settings, {}, settings.seeds[0]))
        except UserError as fixed:
            raise fixed from None
        raise UserError(f"--space {label(params)}: {e}") from None


def trial_config(settings: TuneSettings, params: dict[str, Any], seed: int) -> RunConfig:
    """What `farm train --print-config` prints for one trial and seed."""
    return resolve(
        settings.config_files,
        variant=settings.variant,
        overrides=[*settings.overrides, *as_overrides(params), f"--data.source={settings.data}", f"--seed={seed}"],
    )


# every name farm tune writes in OUT (and its temporaries)
OWN_NAMES = re.compile(r"(study\.journal|tune\.json|best\.yaml|trials\.(md|csv|json)|\..+\.[0-9]+\.[^.]+\.tmp)")


def check_out(out: Path, settings: TuneSettings) -> None:
    """``out`` is new, empty, or the study of these same settings (continued); anything else is left alone.
    Another farm tune writing it is refused: two studies appending to one journal fail each other's trials."""
    locks.check_free(out, "the tuning study", "--out")
    marker = out / "tune.json"
    if marker.is_file():
        earlier = read_record(
            marker,
            f"farm cannot tell which settings the study in {out} was run with. It is farm tune's record of them: "
            f"delete it (rm {marker}) and run the same command again; farm tune writes it again from that "
            f"command's settings and continues the trials of {out / JOURNAL}.",
        )
        if earlier.get("settings") != json.loads(json.dumps(settings.to_dict())):
            raise UserError(
                f"{out} holds a tuning study with other settings (see {marker}); resume it with the same "
                f"command, or choose another --out."
            )
    elif out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the study (its trials and best.yaml).")
    elif out.is_dir() and any(out.iterdir()) and not _only_ours(out):
        raise UserError(
            f"--out {out} holds files that farm tune did not write (no tune.json); they are left alone. Choose a "
            f"new or empty directory for --out, or the directory of an earlier farm tune to continue it."
        )
    check_journal(out / JOURNAL, out)


def _only_ours(out: Path) -> bool:
    """OUT holds nothing but what farm tune writes, with its journal: a study whose tune.json was deleted."""
    names = [p.name for p in out.iterdir()]
    return JOURNAL in names and all(OWN_NAMES.fullmatch(n) for n in names)


def check_journal(path: Path, out: Path) -> None:
    """Name the journal line that is not a JSON record (Optuna would stop with a JSONDecodeError) and the fix."""
    if not path.is_file():
        return
    lines = path.read_bytes().split(b"\n")
    for i, line in enumerate(lines[:-1]):  # the last item: bytes after the last newline (_repair_tail's)
        try:
            json.loads(line)
        except ValueError:
            raise UserError(
                f"{path}: line {i + 1} of the study's journal is not a whole record (the file was cut short or "
                f"overwritten while a trial was being recorded). To keep the {i} records before it, and the "
                f"trials they finished, cut the file there and run the same command again (the trials after it "
                f"run again): head -n {i} {path} > {path}.tmp && mv {path}.tmp {path}. "
                f"Or remove {out} to start the study over."
            ) from None


def _repair_tail(path: Path) -> None:
    """Drop a last line without newline (a kill mid-append): Optuna would append the next record to it, making a
    line no reader parses. Its trial runs again."""
    data = path.read_bytes() if path.is_file() else b""
    if data and not data.endswith(b"\n"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data[: data.rfind(b"\n") + 1])


def _mode(settings: TuneSettings) -> str:
    from farmcli.training import monitor_mode

    return monitor_mode(trial_config(settings, {}, settings.seeds[0]).fit.monitor)


def _failed_trial(record) -> bool:
    return not re.match(r"Trial \d+ failed", str(record.msg))


def _study(out: Path, settings: TuneSettings):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Optuna logs a failed trial with its traceback; farm reports what failed it (Ctrl-C, SIGTERM, a user error) once
    failures = logging.getLogger("optuna.study._optimize")
    if _failed_trial not in failures.filters:
        failures.addFilter(_failed_trial)
    _repair_tail(out / JOURNAL)
    median = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.create_study(
        study_name=STUDY,
        storage=JournalStorage(JournalFileBackend(str(out / JOURNAL))),
        direction="minimize" if _mode(settings) == "min" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=settings.seeds[0]) if settings.sampler == "tpe" else None,
        pruner=median if settings.prune else optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def _text(v: Any) -> str:
    """A value as farm train's KEY=VALUE text (``[128, 64]``, ``0.1``)."""
    return as_overrides({"v": v})[0].split("=", 1)[1]


def _choices(dim: Dimension) -> list[Any]:
    """Optuna's categorical choices: a value Optuna can store as itself, a list or mapping as its KEY=VALUE text."""
    return [v if is_scalar(v) else _text(v) for v in dim.values]


def _index(dim: Dimension, stored: Any) -> int:
    """Which listed value a stored choice is; older studies stored every value as text (``'0.1'``) and still resume."""
    for i, c in enumerate(_choices(dim)):
        if type(c) is type(stored) and c == stored:
            return i
    legacy = [_text(v) for v in dim.values]
    if isinstance(stored, str) and stored in legacy:
        return legacy.index(stored)
    raise UserError(f"the study's journal holds {dim.key}={stored!r}, which --space {dim.key}={dim.text()} lacks.")


def _decode(settings: TuneSettings, stored: dict[str, Any]) -> dict[str, Any]:
    return {
        d.key: stored[d.key] if d.is_range else d.values[_index(d, stored[d.key])]
        for d in settings.space
        if d.key in stored
    }


def _encode(settings: TuneSettings, params: dict[str, Any]) -> dict[str, Any]:
    return {d.key: _choices(d)[[repr(v) for v in d.values].index(repr(params[d.key]))] for d in settings.space}


def _suggest(trial, dim: Dimension) -> Any:
    """A value of ``dim`` for ``trial``: a listed one, or one of the range (an int range gives ints)."""
    if not dim.is_range:
        return dim.values[_index(dim, trial.suggest_categorical(dim.key, _choices(dim)))]
    assert dim.low is not None and dim.high is not None
    if dim.is_int:
        return trial.suggest_int(dim.key, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.key, float(dim.low), float(dim.high), log=dim.log)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(as_overrides(dict(sorted(params.items()))))


def prepare_stores(settings: TuneSettings, combos: Sequence[dict[str, Any]], stores: Stores, progress=None) -> Stores:
    """Build and check the stores known up front: each of the grid's; for ``tpe`` the first combination's (others
    are built when a trial first needs them)."""
    if settings.sampler == "tpe":
        combos = [{d.key: d.low if d.is_range else d.values[0] for d in settings.space}]
    for params in combos:
        stores.get(trial_config(settings, params, settings.seeds[0]), progress)
    return stores


def run_tune(
    settings: TuneSettings,
    out: str | Path,
    *,
    on_event: Event | None = None,
    show_bar: bool = True,
    progress=None,
    stores: Stores | None = None,
) -> TuneResult:
    """Run (or resume) the study in ``out`` under its lock; writes the tables and best.yaml. ``stores``: already
    built by the caller (with a progress bar)."""
    out = Path(out)
    combos = check(settings, out)
    stores = prepare_stores(settings, combos, stores if stores is not None else Stores(), progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with locks.hold(out, "the tuning study", "--out"):
        return _run_study(settings, out, combos, stores, on_event, show_bar)


def _run_study(
    settings: TuneSettings,
    out: Path,
    combos: list[dict[str, Any]],
    stores: Stores,
    on_event: Event | None,
    show_bar: bool,
) -> TuneResult:
    import optuna
    from optuna.trial import TrialState

    from farmcli.tune.trial import run_trial

    check_out(out, settings)
    if not (out / "tune.json").is_file():
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(out / "tune.json", {"format": "farm-tune/1", "settings": settings.to_dict(), "created": created})
    study = _study(out, settings)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)  # killed mid-trial: it runs again below

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if settings.sampler == "grid":
        seen = {
            _params_key(_decode(settings, t.params or t.system_attrs.get("fixed_params", {})))  # WAITING: fixed
            for t in study.get_trials(deepcopy=False, states=(*finished, TrialState.WAITING))
        }
        for params in combos:
            if _params_key(params) not in seen:
                study.enqueue_trial(_encode(settings, params))
        todo = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        total = len(combos)
    else:
        total = int(settings.trials or 0)
        todo = max(0, total - len(study.get_trials(deepcopy=False, states=finished)))

    stopped: list[SystemExit] = []

    def objective(trial: optuna.Trial) -> float:
        params = {d.key: _suggest(trial, d) for d in settings.space}
        done = len(study.get_trials(deepcopy=False, states=finished))
        if on_event:
            on_event("start", {"number": trial.number + 1, "index": done, "total": total, "params": params})
        per_seed: list[dict[str, Any]] = []
        for i, seed in enumerate(settings.seeds):
            cfg = trial_config(settings, params, seed)

            def report(epoch: int, value: float, _first: bool = i == 0) -> bool:
                if not _first or not math.isfinite(value):
                    return False
                trial.report(value, epoch)
                return trial.should_prune()

            try:
                r = run_trial(cfg, stores.get(cfg), on_epoch=report, show_bar=show_bar)
            except SystemExit as e:  # SIGTERM, or Lightning's exit after Ctrl-C: the trial fails, the study stops
                if stopped_by_signal(e):
                    stopped.append(e)
                    raise KeyboardInterrupt from None  # what Optuna records as a failed trial
                raise
            per_seed.append(_seed_record(seed, r))
            trial.set_user_attr("seeds", per_seed)
            if r.pruned:
                raise optuna.TrialPruned()
        score = sum(p["value"] for p in per_seed) / len(per_seed)
        if not math.isfinite(score):
            raise UserError(
                f"trial {trial.number + 1} ({label(params)}): the validation metric is undefined "
                f"(a task with one class only in the validation split?)."
            )
        return score

    def after(study_: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        if on_event:
            rows = _rows(settings, study_)
            index = len([r for r in rows if r.state in ("COMPLETE", "PRUNED")])
            on_event(
                "end", {"row": _row(settings, frozen), "best": _best(settings, rows), "index": index, "total": total}
            )

    if todo:
        try:
            study.optimize(objective, n_trials=todo, callbacks=[after], catch=())
        except KeyboardInterrupt:
            if stopped:
                raise stopped[0] from None  # the signal as it came (SIGTERM: the CLI says so)
            raise
    rows = _rows(settings, study)
    best = _best(settings, rows)
    files = _write_results(out, settings, rows, best)
    return TuneResult(out, rows, best, files)


def _seed_record(seed: int, r) -> dict[str, Any]:
    """One seed in trials.json: percent to read, and ``value`` unrounded, the score best.yaml must reproduce."""
    return {
        "seed": seed,
        "score": round(100 * r.score, 6),
        "value": r.score,
        "best_epoch": r.best_epoch,
        "epochs": r.epochs,
        "history": [round(100 * h, 4) for h in r.history],
        "tasks": {k: round(100 * v, 3) for k, v in r.tasks.items()},
        "seconds": r.fit_seconds,
    }


def _row(settings: TuneSettings, t) -> TrialRow:
    seeds = t.user_attrs.get("seeds", [])
    score = None if t.value is None else round(100 * t.value, 6)
    seconds = round(sum(s.get("seconds", 0.0) for s in seeds), 1)
    return TrialRow(t.number + 1, t.state.name, _decode(settings, t.params), score, seeds, seconds)


def _rows(settings: TuneSettings, study) -> list[TrialRow]:
    return [_row(settings, t) for t in study.get_trials(deepcopy=False)]


def _best(settings: TuneSettings, rows: Sequence[TrialRow]) -> TrialRow | None:
    done = [r for r in rows if r.state == "COMPLETE" and r.score is not None]
    pick = min if done and _mode(settings) == "min" else max
    return pick(done, key=lambda r: r.score or 0.0) if done else None


def _best_header(settings: TuneSettings, rows: Sequence[TrialRow], best: TrialRow, path: Path) -> str:
    complete = len([r for r in rows if r.state == "COMPLETE"])
    first = best.seeds[0] if best.seeds else {}
    seeds = ""
    if len(settings.seeds) > 1:
        seeds = (
            f"# Its score is the mean over seeds {', '.join(map(str, settings.seeds))}; this config trains seed "
            f"{settings.seeds[0]}, which scored {first.get('score', float('nan')):.4f}.\n"
        )
    return (
        f"# farm tune: best of {complete} complete trials on the validation split of {settings.data} "
        f"(val mean AUC {best.score:.4f}, trial {best.number}): the trial's whole run config.\n{seeds}"
        f"# Use: farm train --config {path}\n"
    )


def _write_results(out: Path, settings: TuneSettings, rows: list[TrialRow], best: TrialRow | None) -> list[Path]:
    ordered = sorted(rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.number))
    payload = {
        "format": "farm-tune/1",
        "settings": settings.to_dict(),
        "split": "valid",
        "metric": "mean over tasks of the validation AUC at the best epoch, percent (mean over seeds)",
        "best": asdict(best) if best else None,
        "trials": [asdict(r) for r in ordered],
    }
    lines, csv = _tables(settings, ordered)
    if best is not None:
        path = out / "best.yaml"
        # the whole resolved config (first seed), so `farm train --config best.yaml` trains exactly that trial
        config = trial_config(settings, best.params, settings.seeds[0]).to_yaml()
        write_text(path, _best_header(settings, rows, best, path) + config)
        lines += [
            "",
            f"Best: trial {best.number} ({label(best.params)}), val mean AUC {best.score:.2f}; "
            f"`farm train --config {path}` trains it again.",
        ]
    md, csv_path, json_ = write_table(out / "trials", md="\n".join(lines) + "\n", csv=csv, json=payload)
    return [md, json_, csv_path, *([out / "best.yaml"] if best is not None else [])]


def _tables(settings: TuneSettings, ordered: Sequence[TrialRow]) -> tuple[list[str], str]:
    """trials.md's lines (up to the best trial's) and trials.csv; the best epoch counted from 1, as the progress bar
    and ``epochs`` count (trials.json keeps Lightning's index, from 0)."""
    keys = [d.key for d in settings.space]
    md_rows: list[list[Any]] = []
    csv_rows: list[list[Any]] = []
    for r in ordered:
        values = [json.dumps(r.params.get(k)) for k in keys]
        first = r.seeds[0] if r.seeds else {}
        best_epoch = first["best_epoch"] + 1 if isinstance(first.get("best_epoch"), int) else ""  # counted from 1
        epochs = first.get("epochs", "")
        score = ("-", "") if r.score is None else (f"{r.score:.2f}", f"{r.score:.4f}")
        md_rows.append(
            [r.number, r.state.lower(), *(f"`{v}`" for v in values), score[0], best_epoch, f"{r.seconds:.0f}"]
        )
        csv_rows.append([r.number, r.state, *values, score[1], best_epoch, epochs, r.seconds])
    lines = [
        f"# farm tune: {settings.variant} on {settings.data}",
        "",
        f"Score: mean over the six tasks of the validation AUC at the best epoch (percent), mean over seeds "
        f"{', '.join(map(str, settings.seeds))}. The test split is not read. Sampler: {settings.sampler}.",
        "",
        *markdown(
            ["trial", "state", *(f"`{k}`" for k in keys), "val mean AUC", "best epoch", "seconds"],
            md_rows,
            "rl" + "l" * len(keys) + "rrr",
        ),
    ]
    columns = ["trial", "state", *keys, "val_auc_mean", "best_epoch", "epochs", "seconds"]
    return lines, csv_text(columns, csv_rows)
