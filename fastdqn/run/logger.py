"""Run outputs: metrics.jsonl, TensorBoard events and a progress bar.

Every logged point is one JSON line in ``metrics.jsonl`` and the same scalars under
CleanRL's TensorBoard tags (with a tracker, on Weights & Biases too). On resume, records
past the checkpoint's step are dropped (from the JSON file and, via ``purge_step``, from
TensorBoard), so no step is counted twice.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import deque
from pathlib import Path

import numpy as np

METRICS_NAME = "metrics.jsonl"

TAGS = {
    "episodic_return": "charts/episodic_return",
    "episodic_length": "charts/episodic_length",
    "epsilon": "charts/epsilon",
    "sps": "charts/SPS",
    "td_loss": "losses/td_loss",
    "q_values": "losses/q_values",
    "eval_return_mean": "eval/return_mean",
    "eval_return_std": "eval/return_std",
}
ACTOR_TAGS = {
    "updates_per_s": "actors/updates_per_s",
    "ingest_rows_per_s": "actors/ingest_rows_per_s",
    "queue_depth": "actors/queue_depth",
    "replay_ratio": "actors/replay_ratio",
    "actor_restarts": "actors/restarts",
}
"""What runs with ``--actors`` log besides ``TAGS``."""
ACTOR_PREFIX = "actor"
"""Per-actor scalars (``actor0_sps``, ``actor0_return``, ...) go under ``actors/`` in TensorBoard."""


class RunLogger:
    """Writes the records of one run into ``run_dir``; ``resume_step`` appends after it. A
    ``tracker`` (``fastdqn.run.tracking.WandbTracker``) gets the tagged scalars too, and is
    finished by ``close``."""

    def __init__(self, run_dir: str | os.PathLike, *, total_timesteps: int, resume_step: int | None = None,
                 progress: bool = True, tracker=None) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / METRICS_NAME
        if resume_step is not None and path.exists():
            _truncate_after(path, resume_step)
        self._file = open(path, "a", encoding="utf-8")
        self._writer = SummaryWriter(str(self.run_dir), purge_step=resume_step)
        self.recent_returns: deque[float] = deque(maxlen=20)
        start = resume_step or 0
        self._bar = tqdm(total=total_timesteps, initial=start, unit="step", dynamic_ncols=True,
                         disable=not (progress and sys.stderr.isatty()), mininterval=0.5)
        self._bar_step = start
        self._tracker = tracker

    def log(self, global_step: int, **scalars) -> None:
        record = {"global_step": int(global_step)}
        record.update({k: _plain(v) for k, v in scalars.items()})
        self._file.write(json.dumps(record) + "\n")
        tagged = {}
        for key, value in record.items():
            tag = TAGS.get(key) or ACTOR_TAGS.get(key) or (
                f"actors/{key}" if key.startswith(ACTOR_PREFIX) and key[len(ACTOR_PREFIX):][:1].isdigit() else None)
            if tag is not None and value is not None:
                tagged[tag] = value
        for tag, value in tagged.items():
            self._writer.add_scalar(tag, value, global_step)
        if self._tracker is not None and tagged:
            self._tracker.log(int(global_step), tagged)

    def episodes(self, global_step: int, returns: np.ndarray, lengths: np.ndarray, epsilon: float) -> None:
        for ret, length in zip(returns.tolist(), lengths.tolist()):
            self.log(global_step, episodic_return=ret, episodic_length=int(length), epsilon=epsilon)
            self.recent_returns.append(ret)

    def progress(self, global_step: int, *, sps: float | None = None, epsilon: float | None = None,
                 extra: dict | None = None) -> None:
        self._bar.update(global_step - self._bar_step)
        self._bar_step = global_step
        if sps is not None:
            postfix = {"sps": f"{sps:,.0f}", "eps": f"{epsilon:.3f}"}
            if self.recent_returns:
                postfix["return"] = f"{np.mean(self.recent_returns):.1f}"
            postfix.update(extra or {})
            self._bar.set_postfix(postfix, refresh=False)

    def flush(self) -> None:
        self._file.flush()
        self._writer.flush()

    def close(self) -> None:
        self._bar.close()
        self._file.close()
        self._writer.close()
        if self._tracker is not None:
            self._tracker.finish()


def _plain(value):
    if value is None or isinstance(value, str):
        return value
    value = float(value) if not isinstance(value, int) else value
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _truncate_after(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (written before a crash); drop later ones and any
    line that is not a record (cut off, not UTF-8, not JSON, or no int ``global_step``)."""
    from fastdqn.util.atomic import atomic_write

    kept = []
    with open(path, "rb") as f:
        for line in f:
            step_of = _record_step(line)
            if step_of is not None and step_of <= step:
                kept.append(line.decode("utf-8").rstrip("\n") + "\n")

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)

    atomic_write(path, write)


def _record_step(line: bytes) -> int | None:
    """The ``global_step`` of one metrics line, or None if the line is not a record."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    step = record.get("global_step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None
