"""Turn ``--data DIR|PRESET`` into a checked dataset directory and its sample store (made on first use)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from farmcli.config import PRESETS, DataConfig
from farmcli.errors import UserError
from farmcli.paths import preset_data, sample_cache

Progress = Callable[[str, int, int | None], None]


def dataset_dir(data: DataConfig, progress: Progress | None = None, *, training: bool = True) -> Path:
    """A preset name means simulated data under $FARM_HOME (synthesised once); anything else is a directory that
    passes `farm data validate` (with ``training=False``, scoring, errors that only stop training are let through)."""
    src = Path(data.source).expanduser()
    if src.is_dir():
        from farmcli.data.validate import validate

        errors = validate(src).blocking(training)
        if errors:
            lines = "\n".join(f"  {e}" for e in errors)
            hint = ""
            if data.source in PRESETS and not Path(data.source).is_absolute():
                hint = (
                    f"\nA directory named '{data.source}' in {Path.cwd()} takes precedence over the simulator "
                    f"preset of that name: run from another directory, or rename that directory, to use the "
                    f"preset."
                )
            raise UserError(f"{src} is not a valid farm-events/1 dataset:\n{lines}{hint}")
        return src
    if data.source in PRESETS:
        path = preset_data(data.source, data.seed)
        damage = preset_damage(path) if path.exists() else None
        if damage is not None:
            logging.getLogger("farmcli").warning(
                "note: farm's simulated %s data at %s is damaged (%s); it is farm's cache, so it is simulated again.",
                data.source,
                path,
                damage,
            )
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if not path.exists():
            from farmcli.data.simulator import sim_config, synthesize

            cfg = sim_config(data.source, seed=data.seed)
            done = (lambda d, t: progress(f"simulating {data.source} data", d, t)) if progress else None
            synthesize(cfg, path, on_progress=done)
        return path
    if src.exists() or src.is_symlink():
        from farmcli.data.dataset import not_a_dataset_dir

        message, fix = not_a_dataset_dir(src)
        raise UserError(
            f"--data '{data.source}' {message.removesuffix('.')} (nor a simulator preset: {', '.join(PRESETS)}). "
            f"{fix[0].upper()}{fix[1:]}"
        )
    raise UserError(
        f"--data '{data.source}' is neither a dataset directory nor a simulator preset ({', '.join(PRESETS)})."
    )


def preset_damage(path: Path) -> str | None:
    """Why farm's simulated data at ``path`` is not as farm wrote it, or None (cheap: file names and sizes only)."""
    from farmcli.data.dataset import manifest_problems, table_files, table_path
    from farmcli.data.schema import REQUIRED_TABLES, TABLES
    from farmcli.io import WRITTEN_BY

    manifest = path / "manifest.json"
    problems = manifest_problems(manifest)
    if problems:
        return problems[0].removeprefix(f"{manifest}: ").rstrip(".") if manifest.exists() else "manifest.json missing"
    files = json.loads(manifest.read_text()).get(WRITTEN_BY, {})
    files = files.get("files") if isinstance(files, dict) else None
    if not isinstance(files, dict):
        missing = [t for t in REQUIRED_TABLES if not table_files(table_path(path, t))]
        return f"{missing[0]}.parquet has no data" if missing else None
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} changed since farm wrote it"
    for table in TABLES:  # a shard added would be read as data; any other file added is left alone
        for f in table_files(table_path(path, table)):
            if f.relative_to(path).as_posix() not in files:
                return f"{f.relative_to(path).as_posix()} is not a file farm wrote"
    return None


def sample_store(data: DataConfig, progress: Progress | None = None):
    """The sample store of ``data`` (reused when its inputs and settings are unchanged)."""
    from farmcli.data.build import build_samples

    root = dataset_dir(data, progress)
    done = (lambda step, d, t: progress(f"building samples: {step}", d, t)) if progress else None
    return build_samples(
        root,
        Path(data.cache_dir) if data.cache_dir else sample_cache(),
        history_len=data.history_len,
        min_count=data.min_count,
        on_progress=done,
    )
