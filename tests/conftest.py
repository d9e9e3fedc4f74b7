"""Session-wide test settings: a private FARM_HOME, and one torch thread.

Every test writes generated data and sample stores under one temporary FARM_HOME, never ~/.cache. The tests
use tiny tensors, where intra-op threads only add overhead; on a busy 2-core CI box oversubscribed threads
made a 30-step training test take 20 s instead of 1 s.
"""

import os

import pytest
import torch


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


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
