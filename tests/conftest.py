import os

import pytest
import torch

# Intra-op threads: SYMCLONE_TEST_THREADS, else OMP_NUM_THREADS, else 1 (tiny models run fastest on one).
# The suite must pass under both `OMP_NUM_THREADS=1` and `OMP_NUM_THREADS=2`: reductions then happen in
# different orders, so no test may expect bit-identical float32 results across thread counts.
TEST_THREADS = int(os.environ.get("SYMCLONE_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1)
torch.set_num_threads(TEST_THREADS)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def fashion_mnist_available() -> bool:
    from symclone.data import FASHION_MNIST_DIRS
    return any(os.path.isdir(d) for d in FASHION_MNIST_DIRS)
