"""Where farm keeps data it makes for you: FARM_HOME (default ~/.cache/farmcli) holds simulated data and sample stores."""

from __future__ import annotations

import os
from pathlib import Path

from farmcli.errors import UserError


def farm_home() -> Path:
    value = os.environ.get("FARM_HOME")
    if value is None:
        return Path.home() / ".cache" / "farmcli"
    if not value.strip():
        raise UserError(
            "FARM_HOME is set but empty. Unset it (`unset FARM_HOME`) to use the default ~/.cache/farmcli, or set "
            "it to the directory where farm keeps simulated data and sample stores."
        )
    return Path(value)


def sample_cache() -> Path:
    return farm_home() / "samples"


def preset_data(preset: str, seed: int) -> Path:
    return farm_home() / "data" / f"{preset}-seed{seed}"
