"""Where farm keeps data it makes for you: FARM_HOME (default ~/.cache/farmcli) holds simulated data and sample stores."""

from __future__ import annotations

import os
from pathlib import Path


def farm_home() -> Path:
    return Path(os.environ.get("FARM_HOME") or Path.home() / ".cache" / "farmcli")


def sample_cache() -> Path:
    return farm_home() / "samples"


def preset_data(preset: str, seed: int) -> Path:
    return farm_home() / "data" / f"{preset}-seed{seed}"
