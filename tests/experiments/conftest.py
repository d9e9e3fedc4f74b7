"""tests/experiments: the repository's experiments/ (research scripts and plugins beside the library).

``experiments`` is not installed with farmcli: the repository root goes on ``sys.path`` here (pytest's rootdir
insertion puts it there too, as for ``tests.*``). Each test imports the research plugins afresh and leaves the
registry with the library's own components, which other tests list (tests/model/test_registry.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from farmcli import registry

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _forget_experiments() -> None:
    for name in [m for m in sys.modules if m == "experiments" or m.startswith("experiments.")]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def library_registry_only():
    registry.load_plugins()
    saved = {slot: dict(names) for slot, names in registry._components.items()}
    _forget_experiments()
    yield
    for slot, names in saved.items():
        registry._components[slot].clear()
        registry._components[slot].update(names)
    _forget_experiments()
