"""Helpers shared by the bench/ suites (imported by name: pytest puts bench/ on sys.path)."""

from __future__ import annotations


def record_rate(benchmark, units: int, key: str, nbytes: int | None = None) -> None:
    """Put units/s (and GB/s) of the median round into extra_info; only sizes when disabled."""
    benchmark.extra_info["units_per_round"] = units
    if nbytes is not None:
        benchmark.extra_info["bytes_per_round"] = nbytes
    if benchmark.stats is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info[key] = units / median
    if nbytes is not None:
        benchmark.extra_info["GB_per_s"] = nbytes / median / 1e9
