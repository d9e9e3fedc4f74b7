"""The built-in data simulator (SIMULATOR.md): a farm-events/1 dataset with the paper's two phenomena planted.

Every constant of SIMULATOR.md is a field of `SimConfig`, so any of them can be set from the command line
or a config file. Global entities come from the seed; each block of users from (seed, block index), and
blocks are written as parquet shards one at a time, so memory is bounded at any number of users and the
same config always gives byte-identical files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from farmcli.data.schema import (
    ACTIVITY_LEVELS,
    FORMAT,
    LIVE_COLUMNS,
    LIVE_TRUTH_COLUMNS,
    TASKS,
    USERS_COLUMNS,
    VIDEO_COLUMNS,
    VIDEO_FLAGS,
    schema_of,
)
from farmcli.data.sim_block import simulate_block
from farmcli.data.sim_config import PRESETS as PRESETS  # re-exported: callers build configs through here
from farmcli.data.sim_config import SimConfig
from farmcli.data.sim_config import sim_config as sim_config
from farmcli.data.sim_entities import make_entities
from farmcli.errors import UserError
from farmcli.io import atomic_dir, output_dir, seal_dataset


def _frame(cols: dict[str, np.ndarray], columns) -> pl.DataFrame:
    schema = schema_of(columns)
    return pl.DataFrame({n: pl.Series(n, cols[n], dtype=schema[n]) for n in schema})


def _write(df: pl.DataFrame, path: Path) -> None:
    # Fixed codec, level and row-group size: the bytes depend only on the data.
    df.write_parquet(path, compression="zstd", compression_level=3, statistics=True, row_group_size=1 << 20)


def _check_output(tmp: Path) -> None:
    """Settings in range can still make data nothing can train on (e.g. no click at all): refuse to write it."""
    from farmcli.data.validate import validate

    errors = validate(tmp).errors
    if errors:
        lines = "\n".join(f"  {Path(e.where).name}: {e.message}" for e in errors)
        raise UserError(
            f"These simulator settings make a dataset that `farm data validate` rejects, so none was written:\n"
            f"{lines}\nChange the settings named in --set / --config (e.g. more users, or intercepts nearer "
            f"their defaults)."
        )


def synthesize(
    config: SimConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a farm-events/1 dataset simulated from ``config`` to ``out`` (atomically); return a summary."""
    out = output_dir(out, overwrite)
    t0 = time.perf_counter()
    ent = make_entities(config)
    n, bs = config.n_users, config.block_users
    n_blocks = -(-n // bs)
    rows = {"live": 0, "video": 0, "users": 0}
    live_counts = dict.fromkeys(TASKS, 0)
    video_counts = dict.fromkeys(VIDEO_FLAGS, 0)
    levels = np.array(ACTIVITY_LEVELS)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for table in ("live", "video", "users"):
            (tmp / f"{table}.parquet").mkdir()
        for b in range(n_blocks):
            user0 = b * bs
            blk = simulate_block(config, ent, b, user0, min(bs, n - user0))
            name = f"part-{b:05d}.parquet"
            live = _frame(blk.live, LIVE_COLUMNS + LIVE_TRUTH_COLUMNS)
            video = _frame(blk.video, VIDEO_COLUMNS)
            users = _frame({**blk.users, "activity": levels[blk.users["activity"]]}, USERS_COLUMNS)
            del blk
            for table, df in (("live", live), ("video", video), ("users", users)):
                _write(df, tmp / f"{table}.parquet" / name)
                rows[table] += df.height
            for counts, df in ((live_counts, live), (video_counts, video)):
                for c in counts:
                    counts[c] += int(df[c].sum())
            del live, video, users
            if on_progress is not None:
                on_progress(min(n, user0 + bs), n)
        manifest = {
            "format": FORMAT,
            "name": f"synthetic-{config.preset or 'custom'}",
            "source": "synthetic",
            "time_unit": "ms",
            **config.boundaries,
            "description": (
                f"Simulated by farmcli (SIMULATOR.md): {n} users, {config.n_live_authors} live and "
                f"{config.n_video_authors} short-video authors, {config.days_warmup} warm-up + "
                f"{config.days_train} train + {config.days_valid} valid + {config.days_test} test "
                f"days, seed {config.seed}."
            ),
            "simulator": config.to_dict(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _check_output(tmp)
        seal_dataset(tmp, "farm data synth")
    return {
        "out": str(out),
        "name": manifest["name"],
        "users": n,
        "blocks": n_blocks,
        "rows": rows,
        "live_counts": live_counts,
        "video_counts": video_counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }
