"""Plain-Python references for the statistics in fastdqn.tools.stats, shared by its tests and the plot's."""

from __future__ import annotations


def reference_iqm(values) -> float:
    """Mean of the sorted values with floor(n/4) dropped at each end."""
    xs = sorted(float(v) for v in values)
    k = len(xs) // 4
    kept = xs[k: len(xs) - k]
    return sum(kept) / len(kept)


def reference_percentile(values, q: float) -> float:
    """Linear-interpolation percentile (NumPy's default method)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
