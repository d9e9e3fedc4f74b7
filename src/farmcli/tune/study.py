"""`farm tune`: an Optuna study over a search space, every trial on one shared sample store, scored on the
validation split only, resumable after a kill; the results table and the best settings as a config YAML.

The paper (Sec. 4.1.3) picks the DFT cut-off c, lambda and the MLP depth from grids, so the grid is the
default sampler (every combination once, in order); ``tpe`` samples a fixed number of trials instead.
Optuna keeps the trials in a journal file in the output directory: run the same command again after a
kill and the finished trials are kept, the interrupted one is run again, and the rest follow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from farmcli.config import merge, parse_overrides, resolve
from farmcli.errors import UserError
from farmcli.io import read_json, write_json, write_text
from farmcli.tune.space import Dimension, as_overrides, grid, label

STUDY = "farm-tune"
SAMPLERS = ("grid", "tpe")


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
        d["space"] = [{"key": s.key, "values": list(s.values)} for s in self.space]
        return d


@dataclass
class TrialRow:
    number: int
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
"""Progress callback: ("start", {number, index, total, params}) and ("end", {row, best})."""


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(
            "farm tune needs Optuna, an optional extra: pip install -e '.[tune]' (or pip install optuna)."
        ) from None


def check(settings: TuneSettings, out: Path | None = None) -> list[dict[str, Any]]:
    """Resolve the config of every trial the search can make and check ``out``, so a bad key, value or output
    directory stops before any data is built or any trial trained."""
    require_optuna()
    if not settings.space:
        raise UserError("farm tune needs at least one --space KEY=V1,V2,...; e.g. --space model.cl_weight=0.1,0.3,0.5")
    if settings.sampler not in SAMPLERS:
        raise UserError(f"--sampler {settings.sampler}: choose {' or '.join(SAMPLERS)}.")
    if settings.sampler == "tpe" and (settings.trials is None or settings.trials < 1):
        raise UserError("--sampler tpe needs --trials N (N >= 1).")
    if settings.trials is not None and settings.trials < 1:
        raise UserError(f"--trials must be >= 1, got {settings.trials}.")
    if not settings.seeds:
        raise UserError("--seeds must be >= 1.")
    fixed = parse_overrides(settings.overrides)
    owned = {"data.source": "--data", "seed": "--seeds"}
    for key, option in owned.items():
        head, _, tail = key.partition(".")
        given = head in fixed and (not tail or tail in (fixed[head] or {}))
        if given or any(d.key == key for d in settings.space):
            raise UserError(f"farm tune sets {key} itself ({option}); do not tune or override it.")
    combos = list(grid(settings.space))
    if settings.sampler == "tpe":  # every value once is enough to check the space
        combos = [{d.key: v} for d in settings.space for v in d.values]
    for params in combos:
        try:
            trial_config(settings, params, settings.seeds[0])
        except UserError as e:
            try:  # the space's value, or --variant / --config / --set, wrong whatever the space says?
                trial_config(settings, {}, settings.seeds[0])
            except UserError as fixed:
                raise fixed from None
            raise UserError(f"--space {label(params)}: {e}") from None
    if out is not None:
        check_out(out, settings)
    if settings.sampler == "grid" and settings.trials is not None:
        combos = combos[: settings.trials]
    return combos


def trial_config(settings: TuneSettings, params: dict[str, Any], seed: int):
    return resolve(
        settings.config_files,
        variant=settings.variant,
        overrides=[*settings.overrides, *as_overrides(params), f"data.source={settings.data}", f"seed={seed}"],
    )


def check_out(out: Path, settings: TuneSettings) -> None:
    """``out`` is new, empty, or the study of these same settings (continued); anything else is left alone."""
    marker = out / "tune.json"
    if marker.is_file():
        earlier = read_json(marker)
        if earlier.get("settings") != json.loads(json.dumps(settings.to_dict())):
            raise UserError(
                f"{out} holds a tuning study with other settings (see {marker}); resume it with the same "
                f"command, or choose another --out."
            )
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the study (its trials and best.yaml).")
    if out.is_dir() and any(out.iterdir()):
        raise UserError(
            f"--out {out} holds files that farm tune did not write (no tune.json); they are left alone. Choose a "
            f"new or empty directory for --out, or the directory of an earlier farm tune to continue it."
        )


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
    """ "min" when the trials' monitor is a loss, "max" for an AUC (``farmcli.train.monitor_mode``)."""
    from farmcli.train import monitor_mode

    return monitor_mode(trial_config(settings, {}, settings.seeds[0]).fit.monitor)


def _study(out: Path, settings: TuneSettings):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
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


def _choices(dim: Dimension) -> list[str]:
    """Optuna's categorical choices must be scalars; a value is stored as its KEY=VALUE text."""
    return [as_overrides({dim.key: v})[0].split("=", 1)[1] for v in dim.values]


def _decode(settings: TuneSettings, stored: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for d in settings.space:
        if d.key in stored:
            out[d.key] = d.values[_choices(d).index(stored[d.key])]
    return out


def _encode(settings: TuneSettings, params: dict[str, Any]) -> dict[str, str]:
    return {d.key: _choices(d)[[repr(v) for v in d.values].index(repr(params[d.key]))] for d in settings.space}


def run_tune(
    settings: TuneSettings, out: str | Path, *, on_event: Event | None = None, show_bar: bool = True, progress=None
) -> TuneResult:
    """Run (or resume) the study in ``out``; returns every trial and the best; writes the tables and best.yaml."""
    import optuna
    from optuna.trial import TrialState

    from farmcli.sources import sample_store
    from farmcli.tune.trial import run_trial

    out = Path(out)
    combos = check(settings, out)
    first = trial_config(settings, combos[0], settings.seeds[0])
    store = sample_store(first.data, progress)  # built once, shared by every trial
    if store.n("valid") == 0:
        raise UserError(
            f"{settings.data}: the validation split is empty; farm tune scores on it only. "
            f"Check the manifest's train_end / valid_end."
        )
    _prepare_out(out, settings)
    study = _study(out, settings)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)  # killed mid-trial: it runs again below

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if settings.sampler == "grid":
        seen = {
            json.dumps(t.params or t.system_attrs.get("fixed_params", {}), sort_keys=True)  # WAITING: fixed
            for t in study.get_trials(deepcopy=False, states=(*finished, TrialState.WAITING))
        }
        for params in combos:
            encoded = _encode(settings, params)
            if json.dumps(encoded, sort_keys=True) not in seen:
                study.enqueue_trial(encoded)
        todo = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        total = len(combos)
    else:
        total = int(settings.trials or 0)
        todo = max(0, total - len(study.get_trials(deepcopy=False, states=finished)))

    def objective(trial: optuna.Trial) -> float:
        stored = {d.key: trial.suggest_categorical(d.key, _choices(d)) for d in settings.space}
        params = _decode(settings, stored)
        done = len(study.get_trials(deepcopy=False, states=finished))
        if on_event:
            on_event("start", {"number": trial.number, "index": done, "total": total, "params": params})
        per_seed: list[dict[str, Any]] = []
        for i, seed in enumerate(settings.seeds):
            cfg = trial_config(settings, params, seed)

            def report(epoch: int, value: float, _first: bool = i == 0) -> bool:
                if not _first or not math.isfinite(value):
                    return False
                trial.report(value, epoch)
                return trial.should_prune()

            r = run_trial(cfg, store, on_epoch=report, show_bar=show_bar)
            per_seed.append(
                {
                    "seed": seed,
                    "score": round(100 * r.score, 4),
                    "best_epoch": r.best_epoch,
                    "epochs": r.epochs,
                    "history": [round(100 * h, 4) for h in r.history],
                    "tasks": {k: round(100 * v, 3) for k, v in r.tasks.items()},
                    "seconds": r.fit_seconds,
                }
            )
            trial.set_user_attr("seeds", per_seed)
            if r.pruned:
                raise optuna.TrialPruned()
        score = sum(float(p["score"]) for p in per_seed) / len(per_seed)
        if not math.isfinite(score):
            raise UserError(
                f"trial {trial.number} ({label(params)}): the validation metric is undefined "
                f"(a task with one class only in the validation split?)."
            )
        return score / 100

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
        study.optimize(objective, n_trials=todo, callbacks=[after], catch=())
    rows = _rows(settings, study)
    best = _best(settings, rows)
    files = _write_results(out, settings, rows, best)
    return TuneResult(out, rows, best, files)


def _row(settings: TuneSettings, t) -> TrialRow:
    seeds = t.user_attrs.get("seeds", [])
    score = None if t.value is None else round(100 * t.value, 4)
    seconds = round(sum(s.get("seconds", 0.0) for s in seeds), 1)
    return TrialRow(t.number, t.state.name, _decode(settings, t.params), score, seeds, seconds)


def _rows(settings: TuneSettings, study) -> list[TrialRow]:
    return [_row(settings, t) for t in study.get_trials(deepcopy=False)]


def _best(settings: TuneSettings, rows: Sequence[TrialRow]) -> TrialRow | None:
    done = [r for r in rows if r.state == "COMPLETE" and r.score is not None]
    pick = min if done and _mode(settings) == "min" else max
    return pick(done, key=lambda r: r.score or 0.0) if done else None


def best_config(settings: TuneSettings, best: TrialRow) -> dict[str, Any]:
    """A config file for ``farm train --config``: the variant's slot choices, fixed model/optim settings, the best values."""
    from farmcli.variants import load_variant

    layer: dict[str, Any] = {"variant": load_variant(settings.variant).name}
    merge(layer, {k: v for k, v in load_variant(settings.variant).layer.items() if k in ("model", "optim")})
    fixed = parse_overrides(settings.overrides)
    merge(layer, {k: v for k, v in fixed.items() if k in ("model", "optim")})
    merge(layer, parse_overrides(as_overrides(best.params)))
    return layer


def _write_results(out: Path, settings: TuneSettings, rows: list[TrialRow], best: TrialRow | None) -> list[Path]:
    keys = [d.key for d in settings.space]
    ordered = sorted(rows, key=lambda r: (r.score is None, -(r.score or 0.0), r.number))
    files = []
    payload = {
        "format": "farm-tune/1",
        "settings": settings.to_dict(),
        "split": "valid",
        "metric": "mean over tasks of the validation AUC at the best epoch, percent (mean over seeds)",
        "best": asdict(best) if best else None,
        "trials": [asdict(r) for r in ordered],
    }
    write_json(out / "trials.json", payload)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trial", "state", *keys, "val_auc_mean", "best_epoch", "epochs", "seconds"])
    for r in ordered:
        w.writerow(
            [
                r.number,
                r.state,
                *(json.dumps(r.params.get(k)) for k in keys),
                "" if r.score is None else f"{r.score:.4f}",
                _first(r, "best_epoch"),
                _first(r, "epochs"),
                r.seconds,
            ]
        )
    write_text(out / "trials.csv", buf.getvalue())
    lines = [
        f"# farm tune: {settings.variant} on {settings.data}",
        "",
        f"Score: mean over the six tasks of the validation AUC at the best epoch (percent), mean over seeds "
        f"{', '.join(map(str, settings.seeds))}. The test split is not read. Sampler: {settings.sampler}.",
        "",
        "| trial | state | " + " | ".join(f"`{k}`" for k in keys) + " | val mean AUC | best epoch | seconds |",
        "|---:|---|" + "---|" * len(keys) + "---:|---:|---:|",
    ]
    for r in ordered:
        cells = [
            str(r.number),
            r.state.lower(),
            *(f"`{json.dumps(r.params.get(k))}`" for k in keys),
            "-" if r.score is None else f"{r.score:.2f}",
            str(_first(r, "best_epoch")),
            f"{r.seconds:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    files += [out / "trials.json", out / "trials.csv"]
    if best is not None:
        cfg = best_config(settings, best)
        header = (
            f"# farm tune: best of {len([r for r in rows if r.state == 'COMPLETE'])} complete trials on the "
            f"validation split of {settings.data} (val mean AUC {best.score:.2f}, trial {best.number}).\n"
            f"# Use: farm train --config {out / 'best.yaml'}\n"
        )
        write_text(out / "best.yaml", header + yaml.safe_dump(cfg, sort_keys=False))
        lines += [
            "",
            f"Best: trial {best.number} ({label(best.params)}), val mean AUC {best.score:.2f}; "
            f"`farm train --config {out / 'best.yaml'}` trains with it.",
        ]
        files.append(out / "best.yaml")
    write_text(out / "trials.md", "\n".join(lines) + "\n")
    files.insert(0, out / "trials.md")
    return files


def _first(row: TrialRow, key: str) -> Any:
    return row.seeds[0].get(key, "") if row.seeds else ""
