"""Shared sizing for the benchmark suites.

With ``--benchmark-disable`` (how CI runs bench/, so the suites cannot rot) every suite
runs once at a small size; timed runs use the full sizes the targets are stated for.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def full_size(request) -> bool:
    """True when benchmarks are timed; False for the quick CI smoke run."""
    return not request.config.getoption("benchmark_disable")
