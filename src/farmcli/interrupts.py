"""Ctrl-C and SIGTERM end any command the same way: a KeyboardInterrupt, which the CLI reports with exit 130.

Light on purpose (no torch): every command wraps its work in ``interruptible()`` after its checks.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def stopped_by_signal(e: BaseException) -> bool:
    """Ctrl-C, or SIGTERM (the CLI turns it into SystemExit(143), farmcli/cli/app.py)."""
    return isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and e.code == 128 + signal.SIGTERM)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM ends the work as Ctrl-C does: a KeyboardInterrupt, which the CLI reports and exits 130 with;
    temporaries are removed on the way out (atomic writes)."""
    try:
        yield
    except SystemExit as e:
        if stopped_by_signal(e):
            raise KeyboardInterrupt from None
        raise
