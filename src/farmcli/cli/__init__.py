"""The `farm` command: a Typer app of thin commands over the farmcli library."""

from __future__ import annotations

# each module registers its commands on the app: train, eval, variants, predict, export, ablate, tune, report, data
from farmcli.cli import ablate, data, importers, report, serve, train, tune  # noqa: F401
from farmcli.cli.app import app

__all__ = ["app"]
