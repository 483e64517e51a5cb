"""``PhaseTimer``: seconds spent in each named phase of a loop, as ``with timer("env"):``."""

from __future__ import annotations

import time


class _Phase:
    __slots__ = ("seconds", "name", "start")

    def __init__(self, seconds: dict, name: str) -> None:
        self.seconds, self.name, self.start = seconds, name, 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.seconds[self.name] += time.perf_counter() - self.start


class PhaseTimer:
    """Accumulates wall time per phase in ``seconds`` (name -> s); one object per phase,
    made up front, so timing a block allocates nothing."""

    def __init__(self, names) -> None:
        self.seconds = dict.fromkeys(names, 0.0)
        self._phases = {name: _Phase(self.seconds, name) for name in names}

    def __call__(self, name: str) -> _Phase:
        return self._phases[name]


def next_multiple(step: int, every: int) -> int | None:
    """The first multiple of ``every`` after ``step`` (None when ``every`` is 0: never)."""
    return (step // every + 1) * every if every else None
