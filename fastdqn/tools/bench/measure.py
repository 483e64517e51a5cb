"""Measurement core of the benchmarks: medians with spread, the table, the JSON, the machine.

Kept free of torch and envpool so the helpers can be tested (and imported) cheaply.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from fastdqn.errors import ConfigError


@dataclass(frozen=True)
class Stat:
    """Median and spread (half of max - min) of repeated measurements."""

    median: float
    spread: float
    samples: tuple[float, ...]


def median_spread(samples: Sequence[float]) -> Stat:
    """The median of ``samples`` and half their range; needs at least one sample."""
    if len(samples) == 0:
        raise ConfigError("samples: expected at least one measurement, got none; repeat >= 1")
    values = tuple(float(s) for s in samples)
    return Stat(statistics.median(values), (max(values) - min(values)) / 2.0, values)


@dataclass(frozen=True)
class Case:
    """One thing to time: ``run()`` does ``units`` of work; ``setup()`` runs untimed before it."""

    run: Callable[[], object]
    units: float
    setup: Callable[[], object] | None = None


def measure_interleaved(cases: dict[str, Case], repeats: int, warmup: int = 1) -> dict[str, Stat]:
    """Units per second of each case, their repeats taken in turn (a, b, a, b, ...).

    Cases compared in one run see the same machine load that way, so their ratio holds
    up on a busy machine better than either figure alone.
    """
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(warmup + repeats):
        for name, case in cases.items():
            if case.setup is not None:
                case.setup()
            start = time.perf_counter()
            case.run()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                rates[name].append(case.units / elapsed)
    return {name: median_spread(r) for name, r in rates.items()}


def measure_rate(run: Callable[[], object], units: float, repeats: int, warmup: int = 1,
                 setup: Callable[[], object] | None = None) -> Stat:
    """Units per second of ``run()`` (which does ``units`` of work), over ``repeats`` timed calls.

    ``setup()``, when given, runs untimed before every call (warm-up calls included).
    """
    return measure_interleaved({"": Case(run, units, setup)}, repeats, warmup)[""]


def paired_ratio(a: Stat, b: Stat) -> Stat:
    """Median and spread of a/b taken repeat by repeat (for interleaved measurements)."""
    return median_spread([x / y for x, y in zip(a.samples, b.samples)])


@dataclass(frozen=True)
class Figure:
    """One row of the table: a measured value and, when there is one, what it is set against."""

    name: str
    unit: str
    value: float
    spread: float
    ceiling: float | None = None
    ceiling_name: str = ""
    note: str = ""
    samples: tuple[float, ...] = field(default=(), repr=False)

    @property
    def ratio(self) -> float | None:
        if self.ceiling is None or self.ceiling == 0:
            return None
        return self.value / self.ceiling

    @classmethod
    def of(cls, name: str, unit: str, stat: Stat, **kw) -> Figure:
        return cls(name, unit, stat.median, stat.spread, samples=stat.samples, **kw)


def format_number(x: float | None) -> str:
    """Three significant digits, thousands separated: 1234.5 -> '1,234', 0.01234 -> '0.0123'."""
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def format_table(figures: Sequence[Figure]) -> str:
    """A plain-text table: figure, unit, value, spread, ceiling (and what it is), ratio, note."""
    header = ("figure", "unit", "value", "spread", "ceiling/ref", "ratio", "note")
    rows = [header]
    for f in figures:
        ceiling = "-" if f.ceiling is None else f"{format_number(f.ceiling)} {f.ceiling_name}".strip()
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        rows.append((f.name, f.unit, format_number(f.value), f"±{format_number(f.spread)}",
                     ceiling, ratio, f.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    right = {2, 3, 5}
    lines = []
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def figure_record(f: Figure) -> dict:
    """The JSON form of a figure: every field plus the ratio."""
    record = asdict(f)
    record["samples"] = list(f.samples)
    record["ratio"] = f.ratio
    return record


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    """What the figures were measured on: CPU, cores, GPU, library versions and date (UTC)."""
    import psutil

    gpu = None
    if device.startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(torch.device(device))
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("fastdqn", "torch", "envpool", "numba", "numpy")},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str | os.PathLike, figures: Sequence[Figure], machine: dict, settings: dict) -> None:
    """Write the run (machine, settings, figures) as one JSON document."""
    doc = {"machine": machine, "settings": settings, "figures": [figure_record(f) for f in figures]}
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def memcpy_gbps(nbytes: int, repeats: int, chunk: int | None = None) -> Stat:
    """This machine's copy bandwidth in GB/s (1e9 bytes copied per second).

    Without ``chunk``: one ``np.copyto`` of ``nbytes`` (memory to memory). With ``chunk``:
    consecutive ``chunk``-byte blocks of an ``nbytes`` source copied into one reused
    ``chunk``-byte destination, the way a sampled batch is written: the ceiling for
    replay sampling, whose output stays in cache.
    """
    src = np.ones(nbytes, dtype=np.uint8)
    if chunk is None:
        dst = np.empty_like(src)
        return measure_rate(lambda: np.copyto(dst, src), nbytes / 1e9, repeats)
    blocks = src[: nbytes // chunk * chunk].reshape(-1, chunk)
    dst = np.empty(chunk, dtype=np.uint8)

    def run():
        for block in blocks:
            np.copyto(dst, block)

    return measure_rate(run, blocks.size / 1e9, repeats)
