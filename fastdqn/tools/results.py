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
from fastdqn.run.logger import METRICS_NAME

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

    @property
    def final_eval(self) -> float | None:
        """The mean score of the last evaluation, or None if the run has none."""
        return float(self.eval_means[-1]) if self.eval_means.size else None


def load_run(run_dir: str | os.PathLike) -> RunResult:
    """Read one run folder; ``ConfigError`` naming the folder if it is not one."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / CONFIG_NAME).read_text())
        env_id, seed, total = config["env_id"], int(config["seed"]), int(config["total_timesteps"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"run folder {str(run_dir)!r}: no readable {CONFIG_NAME} ({type(exc).__name__}); "
                          "pass folders written by fastdqn train or fastdqn sweep") from None
    episodes, evals, last = [], [], 0
    path = run_dir / METRICS_NAME
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                    step = int(record["global_step"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by a kill
                last = max(last, step)
                if record.get("episodic_return") is not None:
                    episodes.append((step, record["episodic_return"]))
                if record.get("eval_return_mean") is not None:
                    evals.append((step, record["eval_return_mean"]))
    ep = np.array(sorted(episodes), dtype=np.float64).reshape(-1, 2)
    ev = np.array(sorted(evals), dtype=np.float64).reshape(-1, 2)
    return RunResult(run_dir, env_id, seed, total, ep[:, 0], ep[:, 1], ev[:, 0], ev[:, 1], last)


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
        try:
            return int(json.loads(line)["global_step"])
        except (ValueError, KeyError, TypeError):
            continue
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
