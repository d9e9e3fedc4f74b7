"""A run directory's lifecycle: the checks before a new or resumed run touches it, its records (config.yaml,
run.json; paths relative to the run) and checkpoints. Training writes them; eval, predict and the report read them."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farmcli import locks
from farmcli.errors import UserError
from farmcli.io import load_yaml, read_json, write_json, write_text

if TYPE_CHECKING:
    from farmcli.config import RunConfig

CKPT_STORE_KEY = "farm_store_key"
"""Written into every checkpoint: the key of the sample store it was trained on (its vocabularies)."""
RUN_DIR_ENV = "FARM_RUN_DIR"
"""Set by rank 0 so the other DDP ranks (re-launched copies of the command) share its run directory."""


def stored_path(run: Path, path: str | Path) -> str:
    """How a run records ``path``: relative to the run directory where it lies inside it, else absolute."""
    path, root = Path(path).resolve(), run.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def recorded_path(run: Path, value: str) -> Path:
    """A path a run recorded, read against the run directory. An absolute one (runs before relative paths)
    outside the run, e.g. /old/RUN/checkpoints/best.ckpt of a copied run, is read as RUN/checkpoints/best.ckpt."""
    path = Path(value)
    if not path.is_absolute():
        return run / path
    if path.is_relative_to(run.resolve()):
        return path
    mine = run / path.parent.name / path.name
    return mine if mine.exists() else path


def alive(info: dict) -> bool | None:
    """Whether the process run.json names still runs; None where it cannot tell (an older run, another host)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def status_note(run: Path) -> str | None:
    """One line for a reader of a run that did not end normally (killed, still training), else None."""
    info = read_json(run / "run.json")
    if info.get("status") not in ("running", "evaluating"):
        return None
    where = f"process {info.get('pid')} on {info.get('host')}"
    running = alive(info)
    if running is False:
        return (
            f"{run} was killed before it finished (run.json says {info['status']}, but its {where} is gone): "
            f"its checkpoints are the last ones it saved; `farm train --resume {run}` continues it."
        )
    if running:
        return f"{run} is still training ({where}): its checkpoints may still change."
    return (
        f"{run}: run.json says {info['status']}, which cannot be checked from here (an older run, or another "
        f"machine's); if it was stopped, `farm train --resume {run}` continues it."
    )


def new_run_dir(cfg: RunConfig) -> Path:
    """The directory a new run of ``cfg`` writes; an existing non-empty one is refused, saying what it holds."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    data = Path(cfg.data.source).name if Path(cfg.data.source).is_dir() else cfg.data.source
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run = Path(cfg.fit.runs_dir) / (cfg.fit.name or f"{cfg.variant}-{data}-s{cfg.seed}-{stamp}")
    locks.check_free(run, "the run", "--fit.name")  # another farm command writing it (a train, an ablate)
    if run.exists() and any(run.iterdir()):
        if (run / "checkpoints" / "last.ckpt").is_file():
            raise UserError(
                f"{run} already exists and is not empty. Pick another --fit.name, or continue it with "
                f"`farm train --resume {run}`."
            )
        raise UserError(
            f"{run} already exists but holds no checkpoint (a run stopped before its first epoch ended, or "
            f"not a run): there is nothing to resume. Pick another --fit.name, or remove {run} to reuse the name."
        )
    return run


def run_of_checkpoint(ckpt_path: str, config_files: Sequence[Path] = ()) -> Path:
    """The run directory LightningCLI's ``ckpt_path`` resumes: the run itself, or its checkpoints/last.ckpt."""
    path = Path(ckpt_path)
    if not ckpt_path or not path.exists():
        raise UserError(f"ckpt_path = {ckpt_path!r}: no such file or directory. Give RUN/checkpoints/last.ckpt or RUN.")
    run = path.parent.parent if path.suffix == ".ckpt" else path
    if path.suffix == ".ckpt" and path.name != "last.ckpt" and (run / "config.yaml").is_file():
        raise UserError(
            f"ckpt_path = {ckpt_path}: farm resumes a run from its last checkpoint (RUN/checkpoints/last.ckpt). To "
            f"continue from {path.name}, copy it over {run}/checkpoints/last.ckpt; to score it, `farm eval {path}`."
        )
    if not (run / "config.yaml").is_file():
        raise UserError(
            f"ckpt_path = {ckpt_path}: not a checkpoint of a farm run (no {run / 'config.yaml'}). farm resumes the "
            f"run directories `farm train` writes: --ckpt_path RUN/checkpoints/last.ckpt or --resume RUN."
        )
    return run


def resume_config(run: str | Path, overrides=()) -> RunConfig:
    """The config of an existing run (its config.yaml), with optional overrides (e.g. more epochs)."""
    from farmcli.config import resolve

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run}: not a run directory (no config.yaml). Runs are made by `farm train`.")
    return resolve([run / "config.yaml"], overrides=overrides)


RESUME_KEEPS = ("seed", "variant", "model", "optim", "optimizer", "lr_scheduler", "data.batch_size")
"""Settings a resumed run keeps (they say how its weights were trained); its data is checked by its sample store's
key (``check_resume``); the rest (trainer.*, fit.*, other data.*) may change, e.g. --trainer.max_epochs 20."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``model.fuse.params.heads``)."""
    if not isinstance(d, dict) or not d:
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _as_typed(key: str) -> str:
    """A dotted key as the user types it: a slot's parameters without ``params`` (model.fuse.heads)."""
    return key.replace(".params.", ".").replace(".init_args.", ".")


def check_resume_settings(run: Path, cfg: RunConfig) -> None:
    """Refuse, before anything is touched, a resume whose ``cfg`` changes a ``RESUME_KEEPS`` setting of the run."""
    import shlex

    from farmcli.config import resolve

    was, now = _flat(resolve([run / "config.yaml"]).to_dict()), _flat(cfg.to_dict())
    changed = [
        k
        for k in sorted(was.keys() | now.keys())
        if any(k == p or k.startswith(f"{p}.") for p in RESUME_KEEPS) and was.get(k) != now.get(k)
    ]
    if not changed:
        return
    shown = ", ".join(f"{_as_typed(k)} {was.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
    again = " ".join(f"--{_as_typed(k)} {shlex.quote(str(now.get(k)))}" for k in changed[:4] if k != "variant")
    raise UserError(
        f"--resume {run}: {shown}{'; ...' if len(changed) > 4 else ''} would make it another run than the one its "
        f"checkpoint continues (its config.yaml would no longer say how its weights were trained). The run is left "
        f"as it was. A resumed run keeps its seed, model, optimiser and data: drop those settings (--trainer.* "
        f"ones such as --trainer.max_epochs may change), or train a new run with them: `farm train --config "
        f"{run}/config.yaml --fit.name NEW {again}`."
    )


def check_resume(run: Path, cfg: RunConfig, data_key: bool = True) -> str | None:
    """Check, before anything is built or written, that RUN can resume: not training now, a readable last
    checkpoint and (with ``data_key``) ``cfg.data`` giving the samples it was trained on. Returns their store key."""
    run = Path(run)
    info = read_json(run / "run.json")
    ours = info.get("pid") == os.getpid() or os.environ.get(RUN_DIR_ENV)  # this process, or one of its DDP ranks
    if not ours:
        locks.check_free(run, "the run", "--fit.name")
    if info.get("status") in ("running", "evaluating") and alive(info) and not ours:
        raise UserError(
            f"{run} is still training (process {info.get('pid')} on {info.get('host')}). Wait for it to end, "
            f"or stop it, before resuming it."
        )
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        again = f"farm train --config {run}/config.yaml" + (f" --fit.name {cfg.fit.name}-2" if cfg.fit.name else "")
        raise UserError(
            f"{run}: no checkpoints/last.ckpt to resume from (the run stopped before its first epoch ended), "
            f"so there is nothing to continue. Start it again as a new run: `{again}` (or remove {run} and "
            f"repeat your first command)."
        )
    fresh = f"`farm train --config {run}/config.yaml --fit.name NEW` starts a new run"
    key = read_checkpoint(
        last,
        f"The run cannot continue from it: copy {run}/checkpoints/best.ckpt over it to continue from the "
        f"best epoch, or {fresh}.",
    ).get(CKPT_STORE_KEY) or info.get("store_key")
    best = run / "checkpoints" / "best.ckpt"
    if best.is_file():  # evaluated when the resumed run ends
        read_checkpoint(best, f"Remove it (the resumed run is then evaluated with its last checkpoint), or {fresh}.")
    if key and data_key:
        _check_resume_data(run, cfg, key)
    return key


def _check_resume_data(run: Path, cfg: RunConfig, key: str) -> None:
    from farmcli.data.build import sample_store_path
    from farmcli.paths import sample_cache
    from farmcli.sources import dataset_dir

    d = cfg.data
    trained = (load_yaml(run / "config.yaml").get("data") or {}) if (run / "config.yaml").is_file() else {}
    gone = run_data_gone(run, cfg) if trained.get("source") == d.source else None
    if gone:
        raise UserError(gone)
    cache = Path(d.cache_dir) if d.cache_dir else sample_cache()
    path = sample_store_path(dataset_dir(d), cache, history_len=d.history_len, min_count=d.min_count)
    if path.name != f"samples-{key[:16]}":
        raise UserError(other_data(run, cfg, key, path.name.removeprefix("samples-")))


def run_data_gone(run: Path, cfg: RunConfig, store: str | None = None) -> str | None:
    """Why a run's own data cannot be read any more (its dataset directory is gone; ``store``: the sample store
    run.json names, gone too), or None where it is there: said as the run's data, which the user did not type."""
    from farmcli.config import PRESETS

    source = cfg.data.source
    if source in PRESETS or Path(source).expanduser().is_dir():
        return None
    relative = "" if Path(source).is_absolute() else f", read from the current directory {Path.cwd()}"
    also = f", and its sample store {store} is gone too" if store else ""
    return (
        f"{run}: the data it was trained on is gone: {source} (data.source in {run}/config.yaml{relative}) is not a "
        f"dataset directory any more{also}. Put the dataset back at {source} (or run this from the directory "
        f"the run was trained from), or train a new run on data that exists: `farm train --config "
        f"{run}/config.yaml --data DIR --fit.name NEW`."
    )


def other_data(run: Path, cfg: RunConfig, key: str, other: str) -> str:
    trained = (load_yaml(run / "config.yaml").get("data") or {}) if (run / "config.yaml").is_file() else {}
    was, now = str(trained.get("source", "?")), cfg.data.source
    settings = [k for k in ("seed", "history_len", "min_count") if k in trained and trained[k] != getattr(cfg.data, k)]

    def named(source: str, values) -> str:
        return source + (" with " + ", ".join(f"data.{k} {values(k)}" for k in settings) if settings else "")

    why = (
        f"its data {now} changed since the run was trained"
        if was == now and not settings
        else f"this command names other data ({named(now, lambda k: getattr(cfg.data, k))}, sample store "
        f"{other[:16]}) than the run was trained on ({named(was, trained.get)})"
    )
    return (
        f"--resume {run}: {why}, so its checkpoint (sample store {key[:16]}) does not fit: other samples, other "
        f"vocabularies. The run is left as it was. Resume without --data or --data.* settings, or train a new "
        f"run on that data: `farm train --config {run}/config.yaml --fit.name NEW` with the same data options."
    )


def check_fits(run: Path, module, last: Path) -> None:
    """The resumed run's checkpoint fits the model these settings build (same weights, same shapes)."""
    saved = {k: tuple(v.shape) for k, v in read_checkpoint(last)["state_dict"].items()}
    built = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    differ = sorted(k for k in saved.keys() | built.keys() if saved.get(k) != built.get(k))
    if differ:
        shown = "; ".join(
            f"{k}: {saved.get(k, 'absent')} in the checkpoint, {built.get(k, 'absent')} now" for k in differ[:3]
        )
        raise UserError(
            f"--resume {run}: its checkpoint does not fit the model these settings build ({shown}"
            f"{'; ...' if len(differ) > 3 else ''}). A resumed run keeps its model: drop the --model.* settings, "
            f"or train a new run. The run is left as it was."
        )


def read_checkpoint(ckpt: Path, advice: str | None = None) -> dict:
    """A checkpoint's contents, its tensors memory-mapped (cheap to read before the work); a truncated or
    foreign file is a user error (``advice``: what to do instead, by default another checkpoint of its run)."""
    import pickle
    import zipfile

    import torch

    try:
        obj = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, KeyError, ValueError) as e:
        raise UserError(unreadable(ckpt, e, advice)) from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise UserError(f"{ckpt}: not a readable checkpoint of `farm train` (no model weights in it). Train again.")
    return obj


def unreadable(ckpt: Path, e: Exception, advice: str | None = None) -> str:
    other = "last.ckpt" if ckpt.name == "best.ckpt" else "best.ckpt"
    advice = advice or f"Use the run's other checkpoint ({ckpt.parent / other}) if it is whole, or train again."
    first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")[:200]
    return f"{ckpt}: not a readable checkpoint of `farm train` ({type(e).__name__}: {first}). {advice}"


def log_version(run: Path) -> str:
    """A resumed run logs to logs/resumeN/ so the first leg's logs/metrics.csv is never overwritten."""
    n = 0
    while (run / "logs" / ("" if n == 0 else f"resume{n}") / "metrics.csv").exists():
        n += 1
    return "" if n == 0 else f"resume{n}"


def relocated(state: dict[str, Any], dirpath: str) -> dict[str, Any]:
    """A ModelCheckpoint state saved in another directory (a copied or moved run) with its paths moved into
    ``dirpath``, so the resumed run keeps its best-so-far and never names the old directory's files."""
    old = state.get("dirpath")
    if not old or old == dirpath:
        return state

    def move(p):
        return str(Path(dirpath) / Path(p).relative_to(old)) if p and Path(p).is_relative_to(old) else p

    state = dict(state, dirpath=dirpath)
    for k in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if k in state:
            state[k] = move(state[k])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(p): v for p, v in state["best_k_models"].items()}
    return state


def best_checkpoint(run: Path, best_model_path: str, last: Path) -> Path:
    """The best checkpoint Lightning chose, always one inside ``run`` (evaluating it writes only there)."""
    best = Path(best_model_path) if best_model_path else last
    if not best.resolve().is_relative_to(run.resolve()) or not best.is_file():
        best = run / "checkpoints" / "best.ckpt"
    return best if best.is_file() else last


class Record:
    """Writes config.yaml and run.json (running, pid, host): a new run before fitting, a resumed one once its
    checkpoint is restored (on_train_start), so a resume that cannot start leaves the run as it was."""

    def __init__(self, run: Path, cfg: RunConfig, store, resume: bool):
        self.run, self.cfg, self.store, self.resume = run, cfg, store, resume
        self.done = False

    def write(self) -> None:
        if self.done:
            return
        self.run.mkdir(parents=True, exist_ok=True)
        write_text(self.run / "config.yaml", self.cfg.to_yaml())
        info = read_json(self.run / "run.json") if self.resume else {}
        for stale in ("error", "ended"):
            info.pop(stale, None)
        info.update(
            {
                "status": "running",
                "variant": self.cfg.variant,
                "store": str(self.store.path),
                "store_key": self.store.manifest["key"],
                "started": info.get("started", time.time()),
                "pid": os.getpid(),
                "host": socket.gethostname(),
            }
        )
        write_json(self.run / "run.json", info)
        self.done = True


def finish(run: Path, **fields) -> None:
    """Record the end of a step in run.json; the process no longer runs the run unless it is evaluating."""
    info = read_json(run / "run.json")
    info.update(fields, ended=time.time())
    if fields.get("status") != "evaluating":
        info.pop("pid", None)
        info.pop("host", None)
    write_json(run / "run.json", info)
