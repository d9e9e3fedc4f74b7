"""Analysis of trained runs: ablation tables (:mod:`.ablate`, :mod:`.tables`) and the paper's figures (``farm report``)."""

from __future__ import annotations


def build_report(*args, **kwargs):
    """See :func:`farmcli.analysis.report.build_report` (imported lazily: torch and matplotlib are heavy)."""
    from farmcli.analysis.report import build_report as _build

    return _build(*args, **kwargs)


__all__ = ["build_report"]
