"""Turn ``--data DIR|PRESET`` into a checked dataset directory and its sample store (made on first use)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from farmcli.config import PRESETS, DataConfig
from farmcli.errors import UserError
from farmcli.paths import preset_data, sample_cache

Progress = Callable[[str, int, int | None], None]


def dataset_dir(data: DataConfig, progress: Progress | None = None, *, training: bool = True) -> Path:
    """A preset name means simulated data under $FARM_HOME (synthesised once); anything else is a directory.

    A directory must pass `farm data validate`; with ``training=False`` (scoring with a trained run) the
    errors that only stop training (no training rows, nothing to learn) are let through.
    """
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
        if not (path / "manifest.json").is_file():
            from farmcli.data.simulator import sim_config, synthesize

            cfg = sim_config(data.source, seed=data.seed)
            done = (lambda d, t: progress(f"simulating {data.source} data", d, t)) if progress else None
            synthesize(cfg, path, overwrite=path.exists(), on_progress=done)
        return path
    raise UserError(
        f"--data '{data.source}' is neither a dataset directory nor a simulator preset ({', '.join(PRESETS)})."
    )


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
