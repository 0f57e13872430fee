import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: thread fan-out costs more than it saves (and the suite runs in parallel)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
