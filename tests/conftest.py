import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # reference_cd and the models of the tests
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/

from captum_cd.compat import declare_missing_torchvision_ops  # noqa: E402

declare_missing_torchvision_ops()  # before anything imports torchvision (timm, transformers do)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """Tiny tensors on a busy 2-core machine: intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
