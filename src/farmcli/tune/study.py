"""`farm tune`: an Optuna study over a search space, scored on the validation split only, resumable after a
kill; the results table and the best trial's whole run config as a YAML that `farm train --config` repeats.

The paper (Sec. 4.1.3) picks the DFT cut-off c, lambda and the MLP depth from grids, so the grid is the
default sampler (every combination once, in order); ``tpe`` samples a fixed number of trials instead, from
lists and from ranges (``LO:HI``, ``LO:HI:log``). Trials share a sample store unless they tune a setting the
store is built with (``data.history_len``, ``data.min_count``): each such setting gets its own
(farmcli/tune/stores.py). Optuna keeps the trials in a journal file in the output directory: run the same
command again after a kill and the finished trials are kept, the interrupted one is run again, and the rest
follow.

Trials are numbered from 1 everywhere a user reads them (messages, tables, best.yaml): Optuna's number + 1.
"""

from __future__ import annotations

import json
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
from farmcli.tune.space import Dimension, as_overrides, corners, grid, label
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
    overrides: list[str] = field(default_factory=list)
    """Fixed settings for every trial (e.g. ``trainer.max_epochs=4``)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """A trial's score is the mean over these training seeds of the best validation mean AUC."""
    sampler: str = "grid"
    trials: int | None = None
    """Number of trials for ``tpe``; the grid runs every combination."""
    prune: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["space"] = [s.to_dict() for s in self.space]
        return d


@dataclass
class TrialRow:
    number: int
    """The trial's number as users read it: from 1 (Optuna's own number + 1)."""
    state: str
    params: dict[str, Any]
    score: float | None
    """Mean over seeds of the best val/auc_mean, in percent."""
    seeds: list[dict[str, Any]]
    seconds: float


@dataclass
class TuneResult:
    out: Path
    rows: list[TrialRow]
    best: TrialRow | None
    files: list[Path]


Event = Callable[[str, dict[str, Any]], None]
"""Progress callback: ("start", {number, index, total, params}) and ("end", {row, best, index, total}); numbers
from 1, ``index`` the trials finished before this one."""


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(
            "farm tune needs Optuna, an optional extra: pip install -e '.[tune]' (or pip install optuna)."
        ) from None


# ------------------------------------------------------------------------------------------ checks


def check(settings: TuneSettings, out: Path | None = None) -> list[dict[str, Any]]:
    """Resolve the config of every trial the search can make and check ``out``, so a bad key, value, monitor or
    output directory stops before any data is built or any trial trained (no half-made study is left).

    Returns the grid's combinations in order (for ``tpe``: each listed value and range bound once)."""
    require_optuna()
    _check_options(settings)
    _check_owned(settings)
    combos = list(grid(settings.space)) if settings.sampler == "grid" else corners(settings.space)
    for params in combos:
        _check_params(settings, params)
    if out is not None:
        check_out(out, settings)
    if settings.sampler == "grid" and settings.trials is not None:
        combos = combos[: settings.trials]
    return combos


def _check_options(settings: TuneSettings) -> None:
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


def _listed(d: Dimension) -> str:
    """A range's bounds and midpoint as a list, for the message that sends a range to the grid."""
    assert d.low is not None and d.high is not None
    mid = (d.low * d.high) ** 0.5 if d.log else (d.low + d.high) / 2
    mid = round(mid) if d.is_int else float(f"{mid:.3g}")
    values = [d.low, mid, d.high] if mid not in (d.low, d.high) else [d.low, d.high]
    return ",".join(str(v) for v in values)


def _check_owned(settings: TuneSettings) -> None:
    """Settings a study fixes itself: the data (--data), the seeds (--seeds), and the monitor, which fixes the
    study's direction (maximise an AUC, minimise a loss) and so cannot change from trial to trial."""
    fixed = {key for key, _ in pairs_of(settings.overrides)}
    owned = {"data.source": "--data", "seed": "--seeds"}
    for key, option in owned.items():
        if key in fixed or any(d.key == key for d in settings.space):
            raise UserError(f"farm tune sets {key} itself ({option}); do not tune or override it.")
    if any(d.key == "fit.monitor" for d in settings.space):
        raise UserError(
            "--space fit.monitor: the monitor is what trials are ranked by, one for the whole study; fix it "
            "with --fit.monitor NAME (e.g. val/auc_mean) and tune other settings."
        )


def _check_params(settings: TuneSettings, params: dict[str, Any]) -> None:
    """One trial's config resolves, its fit.monitor is a metric it logs and its batches fit this machine's memory
    (as `farm train` checks them); a mistake that is not the space's (--variant, --config, --set) is reported as
    such."""
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
    """The resolved run config of one trial and seed: what `farm train --print-config` prints for it."""
    return resolve(
        settings.config_files,
        variant=settings.variant,
        overrides=[*settings.overrides, *as_overrides(params), f"--data.source={settings.data}", f"--seed={seed}"],
    )


OWN_NAMES = re.compile(r"(study\.journal|tune\.json|best\.yaml|trials\.(md|csv|json)|\..+\.[0-9]+\.[^.]+\.tmp)")
"""Every name farm tune writes in OUT (and its temporaries)."""


def check_out(out: Path, settings: TuneSettings) -> None:
    """``out`` is new, empty, or the study of these same settings (continued); anything else is left alone.

    Another farm tune writing ``out`` now is refused at once (farmcli/locks.py): two studies appending to one
    journal fail each other's trials."""
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
        check_journal(out / JOURNAL, out)
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the study (its trials and best.yaml).")
    if out.is_dir() and any(out.iterdir()) and not _only_ours(out):
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
    """Every whole line of Optuna's journal is one JSON record; Optuna stops with a JSONDecodeError at one that
    is not (the file cut or overwritten mid-record). Say which line, and how to keep the trials before it."""
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
    """A kill while Optuna appends a record leaves a last line with no newline. Optuna skips it when reading,
    but appends the next record to it, which makes a line no reader can parse: drop it before the study opens
    (it is the record that was being written, of a trial that runs again)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data[: data.rfind(b"\n") + 1])


# ------------------------------------------------------------------------------------------ the study


def _prepare_out(out: Path, settings: TuneSettings) -> None:
    check_out(out, settings)
    marker = out / "tune.json"
    if marker.is_file():
        return
    write_json(
        marker,
        {
            "format": "farm-tune/1",
            "settings": settings.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def _mode(settings: TuneSettings) -> str:
    """ "min" when the trials' monitor is a loss, "max" for an AUC (``farmcli.training.monitor_mode``)."""
    from farmcli.training import monitor_mode

    return monitor_mode(trial_config(settings, {}, settings.seeds[0]).fit.monitor)


def _failed_trial(record) -> bool:
    return not re.match(r"Trial \d+ failed", str(record.msg))


def _quiet_failed_trials() -> None:
    """Optuna logs a failed trial with its traceback; the error that failed it (Ctrl-C, SIGTERM, a user error)
    stops the study and is reported by farm itself, once and without a traceback."""
    import logging

    logger = logging.getLogger("optuna.study._optimize")  # where optuna logs a failed trial
    if _failed_trial not in logger.filters:
        logger.addFilter(_failed_trial)


def _study(out: Path, settings: TuneSettings):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_failed_trials()
    _repair_tail(out / JOURNAL)
    storage = JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    sampler = optuna.samplers.TPESampler(seed=settings.seeds[0]) if settings.sampler == "tpe" else None
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if settings.prune
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=STUDY,
        storage=storage,
        direction="minimize" if _mode(settings) == "min" else "maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _text(v: Any) -> str:
    """A value as farm train's KEY=VALUE text (``[128, 64]``, ``0.1``)."""
    return as_overrides({"v": v})[0].split("=", 1)[1]


def _choices(dim: Dimension) -> list[Any]:
    """Optuna's categorical choices: each value itself where Optuna can store it (None, bool, int, float, str),
    a list or mapping as its KEY=VALUE text."""
    return [v if _is_scalar(v) else _text(v) for v in dim.values]


def _index(dim: Dimension, stored: Any) -> int:
    """Which listed value a stored choice is. Studies made before values were stored typed hold every value as
    its text (``'0.1'``); those are matched by that text, so they still resume."""
    for i, c in enumerate(_choices(dim)):
        if type(c) is type(stored) and c == stored:
            return i
    legacy = [_text(v) for v in dim.values]
    if isinstance(stored, str) and stored in legacy:
        return legacy.index(stored)
    raise UserError(f"the study's journal holds {dim.key}={stored!r}, which --space {dim.key}={dim.text()} lacks.")


def _decode(settings: TuneSettings, stored: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for d in settings.space:
        if d.key in stored:
            out[d.key] = stored[d.key] if d.is_range else d.values[_index(d, stored[d.key])]
    return out


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
    """Build (or reuse) and check the sample stores known before the study starts: every distinct one of the
    grid; for ``tpe`` the first combination's (one sampled from a range of a store setting is built when a
    trial first needs it)."""
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
    """Run (or resume) the study in ``out``; returns every trial and the best; writes the tables and best.yaml.

    ``stores``: the study's sample stores when the caller has built them already (with a progress bar). One
    farm tune at a time writes ``out`` (farmcli/locks.py)."""
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
    """The study in ``out``, under its lock: its trials, then the tables and best.yaml."""
    import optuna
    from optuna.trial import TrialState

    from farmcli.tune.trial import run_trial

    _prepare_out(out, settings)
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
            on_event(
                "end",
                {
                    "row": _row(settings, frozen),
                    "best": _best(settings, rows),
                    "index": len([r for r in rows if r.state in ("COMPLETE", "PRUNED")]),
                    "total": total,
                },
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
    """One seed's result as trials.json keeps it: percent for reading, ``value`` (the monitor, unrounded) for
    the study, so the score `farm train --config best.yaml` must reproduce is not rounded away."""
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


def best_config(settings: TuneSettings, best: TrialRow) -> RunConfig:
    """The best trial's whole resolved config with the first seed: its data, the fixed overrides, the epochs,
    the variant's choices and the best values, so `farm train --config best.yaml` trains exactly that trial."""
    return trial_config(settings, best.params, settings.seeds[0])


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
    lines = _markdown(settings, ordered)
    if best is not None:
        path = out / "best.yaml"
        write_text(path, _best_header(settings, rows, best, path) + best_config(settings, best).to_yaml())
        lines += [
            "",
            f"Best: trial {best.number} ({label(best.params)}), val mean AUC {best.score:.2f}; "
            f"`farm train --config {path}` trains it again.",
        ]
    md, csv, json_ = write_table(out / "trials", md="\n".join(lines) + "\n", csv=_csv(settings, ordered), json=payload)
    return [md, json_, csv, *([out / "best.yaml"] if best is not None else [])]


def _csv(settings: TuneSettings, ordered: Sequence[TrialRow]) -> str:
    keys = [d.key for d in settings.space]
    return csv_text(
        ["trial", "state", *keys, "val_auc_mean", "best_epoch", "epochs", "seconds"],
        (
            [
                r.number,
                r.state,
                *(json.dumps(r.params.get(k)) for k in keys),
                "" if r.score is None else f"{r.score:.4f}",
                _first(r, "best_epoch"),
                _first(r, "epochs"),
                r.seconds,
            ]
            for r in ordered
        ),
    )


def _markdown(settings: TuneSettings, ordered: Sequence[TrialRow]) -> list[str]:
    keys = [d.key for d in settings.space]
    cells = (
        [
            r.number,
            r.state.lower(),
            *(f"`{json.dumps(r.params.get(k))}`" for k in keys),
            "-" if r.score is None else f"{r.score:.2f}",
            _first(r, "best_epoch"),
            f"{r.seconds:.0f}",
        ]
        for r in ordered
    )
    return [
        f"# farm tune: {settings.variant} on {settings.data}",
        "",
        f"Score: mean over the six tasks of the validation AUC at the best epoch (percent), mean over seeds "
        f"{', '.join(map(str, settings.seeds))}. The test split is not read. Sampler: {settings.sampler}.",
        "",
        *markdown(
            ["trial", "state", *(f"`{k}`" for k in keys), "val mean AUC", "best epoch", "seconds"],
            cells,
            "rl" + "l" * len(keys) + "rrr",
        ),
    ]


def _first(row: TrialRow, key: str) -> Any:
    return row.seeds[0].get(key, "") if row.seeds else ""
