"""Shared fixtures of the data tests: the ``tiny`` simulator preset's sample store, built once per session."""

from __future__ import annotations

import pytest

from farmcli.data.build import build_samples
from farmcli.data.simulator import sim_config, synthesize
from farmcli.data.store import SampleStore


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> SampleStore:
    """The sample store of the ``tiny`` preset (seed 0, L = 50): a few thousand samples, most of them with an
    empty live history."""
    root = tmp_path_factory.mktemp("tiny-preset")
    synthesize(sim_config("tiny"), root / "data")
    return build_samples(root / "data", root / "samples")
