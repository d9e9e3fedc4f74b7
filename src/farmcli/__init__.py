"""farmcli: FARM (Frequency-Aware Model) for cross-domain live-streaming recommendation.

The entry points a notebook needs (docs/API.md), imported on first use so that ``import farmcli`` stays light:
``synth``, ``build``, ``resolve``, ``train``, ``evaluate``, ``predict``, ``export`` (farm's commands as functions),
``FARM`` (the model, eq. 8-18), ``FarmModule`` (its LightningModule), ``FarmDataModule``, ``SampleStore``,
``RunConfig`` and ``UserError`` (every bad input).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from farmcli._version import __version__
from farmcli.errors import UserError

_EXPORTS = {
    "synth": "farmcli.api",
    "build": "farmcli.api",
    "train": "farmcli.api",
    "evaluate": "farmcli.api",
    "predict": "farmcli.api",
    "export": "farmcli.api",
    "TrainResult": "farmcli.api",
    "resolve": "farmcli.config",
    "RunConfig": "farmcli.config",
    "FARM": "farmcli.model.farm",
    "FarmModule": "farmcli.model.module",
    "FarmDataModule": "farmcli.data.module",
    "SampleStore": "farmcli.data.store",
}

__all__ = [
    "FARM",
    "FarmDataModule",
    "FarmModule",
    "RunConfig",
    "SampleStore",
    "TrainResult",
    "UserError",
    "__version__",
    "build",
    "evaluate",
    "export",
    "predict",
    "resolve",
    "synth",
    "train",
]

if TYPE_CHECKING:
    from farmcli.api import TrainResult, build, evaluate, export, predict, synth, train
    from farmcli.config import RunConfig, resolve
    from farmcli.data.module import FarmDataModule
    from farmcli.data.store import SampleStore
    from farmcli.model.farm import FARM
    from farmcli.model.module import FarmModule


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'farmcli' has no attribute {name!r}")
