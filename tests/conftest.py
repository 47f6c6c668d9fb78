import os

import pytest
import torch

# Tests share two cores; keep intra-op threads low so parallel test processes don't thrash.
torch.set_num_threads(int(os.environ.get("SYMCLONE_TEST_THREADS", "1")))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def fashion_mnist_available() -> bool:
    from symclone.data import FASHION_MNIST_DIRS
    return any(os.path.isdir(d) for d in FASHION_MNIST_DIRS)
