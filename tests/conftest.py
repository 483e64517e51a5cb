"""Tests marked ``cuda`` skip without a CUDA device, so ``pytest -m cuda`` on a GPU machine
runs exactly the CUDA checks and a CPU-only run reports them as skipped with a reason."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    import torch  # only when a CUDA test was collected: replay-only runs stay torch-free

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m cuda` on a GPU machine)")
    for item in cuda_items:
        item.add_marker(skip)
