"""What finished runs learned, read back from their folders (``config.json``, ``metrics.jsonl``).

One reader for ``fastdqn plot`` and the summary that ``fastdqn sweep`` writes at the end.
Needs NumPy only (no torch, no envpool), so results can be read on any machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastdqn.util.atomic import atomic_write
from fastdqn.errors import ConfigError
from fastdqn.run.config import CLEANRL, EVAL_PROTOCOLS
from fastdqn.run.logger import METRICS_NAME
from fastdqn.util.checks import is_int, is_number

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class RunResult:
    """The logged points of one run, each series sorted by env step."""

    path: Path
    env_id: str
    seed: int
    total_timesteps: int
    episode_steps: np.ndarray  # env step at which each training game ended
    episode_returns: np.ndarray  # its score, summed over all lives
    eval_steps: np.ndarray
    eval_means: np.ndarray  # mean score of the evaluation games at that step
    last_step: int  # the latest env step any record names
    skipped: tuple = ()  # (line number, why) of each metrics line that was not a readable record
    eval_protocol: str = CLEANRL  # config.json's (runs written before it was a field evaluated this way)

    @property
    def final_eval(self) -> float | None:
        """The mean score of the last evaluation, or None if the run has none."""
        return float(self.eval_means[-1]) if self.eval_means.size else None


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read one run folder; ``ConfigError`` naming the folder and the field if it is not one.
    Unreadable metrics lines are skipped and listed in ``skipped`` by line number."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / CONFIG_NAME).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run folder {str(run_dir)!r}: no readable {CONFIG_NAME} ({type(exc).__name__}); "
                          "pass folders written by fastdqn train or fastdqn sweep") from None
    env_id, seed, total = (_config_field(run_dir, config, name, check) for name, check in (
        ("env_id", lambda v: isinstance(v, str) and v != ""), ("seed", lambda v: is_int(v) and v >= 0),
        ("total_timesteps", lambda v: is_int(v) and v >= 1)))
    episodes, evals, skipped, last = [], [], [], 0
    path = run_dir / METRICS_NAME
    if path.exists():
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                record, why = _record(line)
                if record is None:
                    if why:
                        skipped.append((number, why))
                    continue
                step = record["global_step"]
                last = max(last, step)
                if record.get("episodic_return") is not None:
                    episodes.append((step, record["episodic_return"]))
                if record.get("eval_return_mean") is not None:
                    evals.append((step, record["eval_return_mean"]))
    ep = np.array(sorted(episodes), dtype=np.float64).reshape(-1, 2)
    ev = np.array(sorted(evals), dtype=np.float64).reshape(-1, 2)
    protocol = config.get("eval_protocol", CLEANRL)
    if protocol not in EVAL_PROTOCOLS:
        raise ConfigError(f"run folder {str(run_dir)!r}: {CONFIG_NAME} field 'eval_protocol' is {protocol!r}, not a "
                          "valid value; pass folders written by fastdqn train or fastdqn sweep")
    return RunResult(run_dir, env_id, seed, total, ep[:, 0], ep[:, 1], ev[:, 0], ev[:, 1], last, tuple(skipped),
                     protocol)


MAX_STEP = 2**62
"""The largest env step a record may name."""


def _config_field(run_dir: Path, config, name: str, check):
    value = config.get(name) if isinstance(config, dict) else None
    if not check(value):
        raise ConfigError(f"run folder {str(run_dir)!r}: {CONFIG_NAME} field {name!r} is {value!r}, not a "
                          f"valid value; pass folders written by fastdqn train or fastdqn sweep")
    return value


def _record(line: bytes) -> tuple[dict | None, str]:
    """A metrics line as a record with an int ``global_step`` and finite scores, or (None, why);
    a blank line is (None, "")."""
    if not line.strip():
        return None, ""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError:
        return None, "not JSON (cut off by a kill?)"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    step = record.get("global_step")
    if not is_int(step) or not 0 <= step <= MAX_STEP:
        return None, f"global_step is {step!r}, expected an int in [0, 2**62]"
    for key in ("episodic_return", "eval_return_mean"):
        value = record.get(key)
        if value is not None and not is_number(value):
            return None, f"{key} is {value!r}, expected a finite number"
    return record, ""


def find_runs(paths: Iterable[str | os.PathLike]) -> list[RunResult]:
    """Every run folder given, or found below a given folder (a sweep), sorted by env and seed."""
    runs = []
    for given in paths:
        given = Path(given)
        if (given / CONFIG_NAME).exists():
            runs.append(load_run(given))
            continue
        found = sorted(p.parent for p in given.rglob(CONFIG_NAME)) if given.is_dir() else []
        if not found:
            raise ConfigError(f"{str(given)!r}: not a run folder and no run folder below it; pass folders "
                              "written by fastdqn train or fastdqn sweep")
        runs.extend(load_run(p) for p in found)
    return sorted(runs, key=lambda r: (r.env_id, r.seed, str(r.path)))


def last_step(run_dir: str | os.PathLike) -> int:
    """The env step of the last complete record in a run's ``metrics.jsonl`` (0 if none).

    Reads only the file's tail, so it is cheap to call on a live run every second.
    """
    path = Path(run_dir) / METRICS_NAME
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        record, _ = _record(line)
        if record is not None:
            return record["global_step"]
    return 0


# ---- the summary of a sweep ------------------------------------------------------------------

SUMMARY_FIELDS = ("env_id", "runs", "evaluated", "eval_mean", "eval_std", "eval_per_seed")


def sweep_summary(runs: Sequence[RunResult]) -> list[dict]:
    """Per env: the final evaluation's mean score, its mean and std (ddof 0) over seeds."""
    rows = []
    for env_id in sorted({r.env_id for r in runs}):
        of_env = [r for r in runs if r.env_id == env_id]
        per_seed = {r.seed: r.final_eval for r in of_env if r.final_eval is not None}
        values = np.array(list(per_seed.values()), dtype=np.float64)
        rows.append({"env_id": env_id, "runs": len(of_env), "evaluated": len(per_seed),
                     "eval_mean": float(values.mean()) if values.size else None,
                     "eval_std": float(values.std()) if values.size else None,
                     "eval_per_seed": {str(seed): value for seed, value in sorted(per_seed.items())}})
    return rows


def format_summary(rows: Sequence[dict]) -> str:
    """The summary as an aligned text table."""
    lines = [f"{'env':<24} {'runs':>4} {'evaluated':>9}  final eval (mean ± std over seeds)"]
    for row in rows:
        score = "-" if row["eval_mean"] is None else f"{row['eval_mean']:.2f} ± {row['eval_std']:.2f}"
        lines.append(f"{row['env_id']:<24} {row['runs']:>4} {row['evaluated']:>9}  {score}")
    return "\n".join(lines)


def write_summary(folder: str | os.PathLike, rows: Sequence[dict]) -> None:
    """``summary.json`` and ``summary.csv`` (per-seed scores as ``seed:score`` pairs) in ``folder``."""
    folder = Path(folder)
    atomic_write(folder / "summary.json",
                 lambda tmp: Path(tmp).write_text(json.dumps({"envs": list(rows)}, indent=2) + "\n"))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(dict(row, eval_per_seed=" ".join(f"{s}:{v}" for s, v in row["eval_per_seed"].items())))
    atomic_write(folder / "summary.csv", lambda tmp: Path(tmp).write_text(text.getvalue()))
