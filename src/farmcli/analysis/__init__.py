"""Analysis of trained runs: ablation tables (:mod:`.ablate`, :mod:`.tables`) and the paper's figures (``farm report``).

``build_report(run, compare=None, user=None, out=None)`` (:mod:`.report`) writes RUN/report/report.md and its
figures; :mod:`.plots` holds one matplotlib function per figure, taking plain numpy data.
"""

from __future__ import annotations


def build_report(*args, **kwargs):
    """See :func:`farmcli.analysis.report.build_report` (imported lazily: torch and matplotlib are heavy)."""
    from farmcli.analysis.report import build_report as _build

    return _build(*args, **kwargs)


__all__ = ["build_report"]
