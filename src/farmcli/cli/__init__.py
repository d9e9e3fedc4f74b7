"""The `farm` command: a Typer app of thin commands over the farmcli library."""

from __future__ import annotations

from farmcli.cli import ablate as _ablate  # noqa: F401  (registers ablate)
from farmcli.cli import data as _data  # noqa: F401  (registers `farm data ...`)
from farmcli.cli import importers as _importers  # noqa: F401  (registers `farm data import ...`)
from farmcli.cli import report as _report  # noqa: F401  (registers `farm report`)
from farmcli.cli import serve as _serve  # noqa: F401  (registers predict, export)
from farmcli.cli import train as _train  # noqa: F401  (registers train, eval, variants)
from farmcli.cli import tune as _tune  # noqa: F401  (registers tune)
from farmcli.cli.app import app

__all__ = ["app"]
