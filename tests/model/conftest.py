import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The model tests use tiny tensors, where intra-op threads only add overhead; on a busy CI box
    oversubscribed threads made a 30-step training test take 20 s instead of 1 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
