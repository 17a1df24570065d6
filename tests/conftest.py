"""Shared fixtures: the real data sets in ``../shared/datasets``.

When the data is missing, tests that need it skip on a developer's machine but
fail when the ``CI`` environment variable is set (CI always has the data).
"""
import os
from pathlib import Path

import pytest
import torch

# The suite runs tiny tensors on a 2-core CI machine: one intra-op thread avoids
# thread start-up and contention costs that dominate such small kernels.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get('TAGNN_SHARED_DATASETS',
                                      REPO.parent / 'shared' / 'datasets'))


def require_shared(*parts: str) -> Path:
    """Path of ``../shared/datasets/<parts>``; skip (locally) or fail (CI) if absent."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        msg = f"real data missing: {path}"
        if os.environ.get('CI'):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_datasets() -> Path:
    return require_shared()
