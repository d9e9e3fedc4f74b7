"""Every test writes generated data and sample stores under one temporary FARM_HOME, never ~/.cache."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def farm_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("farm-home")
    old = os.environ.get("FARM_HOME")
    os.environ["FARM_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("FARM_HOME", None)
    else:
        os.environ["FARM_HOME"] = old
