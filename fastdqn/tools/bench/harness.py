"""What the bench sections share: the sizes of a run (``Sizes``), its settings and task
(``Context``), recorded env streams, filled replay buffers, the bench ``TrainConfig`` and
repeated trainer runs (``TrainerRuns``). Components are built by ``fastdqn.run.build``,
as ``fastdqn train`` builds them; torch, envpool and the trainer are imported on first use.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from fastdqn.run.build import build_buffer, build_learner, build_network
from fastdqn.run.config import TrainConfig
from fastdqn.run.envs import EnvInfo
from fastdqn.tools.bench.measure import Case, Stat, median_spread, paired_ratio


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does per repeat; ``--quick`` trades steadiness for time."""

    repeats: int
    env_steps: int  # vector steps per repeat (env, collect)
    replay_capacity: int  # transitions
    replay_adds: int  # vector adds per repeat
    sample_batches: int  # per repeat (replay and feed)
    learner_updates: int  # per repeat
    train_steps: int  # vector steps per repeat (train and naive loop)
    learning_starts: int  # env steps of experience before the train figures start
    memcpy_bytes: int


QUICK = Sizes(repeats=3, env_steps=120, replay_capacity=10_000, replay_adds=150, sample_batches=100,
              learner_updates=5, train_steps=8, learning_starts=2_000, memcpy_bytes=64 * 2**20)
DEFAULT = Sizes(repeats=5, env_steps=600, replay_capacity=40_000, replay_adds=600, sample_batches=500,
                learner_updates=30, train_steps=40, learning_starts=5_000, memcpy_bytes=256 * 2**20)


@dataclass(frozen=True)
class Context:
    """What the sections share: the settings and the task's description."""

    args: argparse.Namespace
    sizes: Sizes
    task: EnvInfo

    def make_envs(self, async_envs: bool = False):
        from fastdqn.run.envs import make_envs

        batch = self.args.env_batch_size or max(1, self.args.num_envs // 2)
        return make_envs(self.args.env_id, self.args.num_envs, seed=self.args.seed,
                         async_envs=async_envs, batch_size=batch if async_envs else None)

    def q_network(self):
        return build_network(self.task)

    def learner(self, compile: bool, **overrides):
        return build_learner(train_config(self, compile=compile, **overrides), self.task)


def random_actions(ctx: Context, steps: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(ctx.args.seed)
    return rng.integers(0, ctx.task.num_actions, size=(steps, width))


def record_envpool_stream(envs, actions) -> list[dict]:
    """Step sync ``envs`` through ``actions`` (one row per vector step) and close them; one
    dict of ``ReplayBuffer.add`` kwargs per step, as the trainer stores them (``EnvPoolRows``)."""
    from fastdqn.run.envpool_rows import EnvPoolRows

    obs, info = envs.reset()
    rows = EnvPoolRows(len(obs), len(obs), obs.shape[1:], obs.dtype)
    rows.reset(obs, info)
    stream = []
    for a in actions:
        rows.sent(a, info["env_id"])
        add = rows.received(*envs.step(a))
        stream.append({name: np.array(value) for name, value in add.items()})  # rows reuses its arrays
    envs.close()
    return stream


def record_stream(ctx: Context, steps: int) -> list[dict]:
    """``steps`` vector steps of the env under random actions, as ``ReplayBuffer.add`` kwargs."""
    return record_envpool_stream(ctx.make_envs(), random_actions(ctx, steps, ctx.args.num_envs))


def make_buffer(ctx: Context, frames_device: str | None = None, **overrides):
    """An empty buffer of the bench's capacity for the task (``overrides``: ``TrainConfig`` fields)."""
    return build_buffer(train_config(ctx, **overrides), ctx.task, seed=ctx.args.seed, frames_device=frames_device)


def fill_buffer(buf, stream: list[dict]) -> None:
    """Add ``stream`` in a loop until past one full wrap of ``buf``: its steady state."""
    for t in range(buf.slots_per_env + len(stream)):
        buf.add(**stream[t % len(stream)])


def filled_buffer(ctx: Context):
    """A buffer of the task's shape filled to capacity from a recorded stream, and the stream."""
    stream = record_stream(ctx, 64)
    buf = make_buffer(ctx)
    fill_buffer(buf, stream)
    return buf, stream


def paired_note(a: Stat, b: Stat) -> str:
    r = paired_ratio(a, b)
    return f"paired ratio {r.median:.2f} ±{r.spread:.2f}"


def train_config(ctx: Context, **overrides) -> TrainConfig:
    """A ``TrainConfig`` for a bench run: no files, no evaluation, no progress bar; its
    learner copies the target every 1000 updates."""
    a = ctx.args
    values = dict(env_id=a.env_id, seed=a.seed, num_envs=a.num_envs, buffer_size=ctx.sizes.replay_capacity,
                  batch_size=a.batch_size, train_frequency=4, target_network_frequency=4000,
                  double_dqn=True, cuda=a.device.startswith("cuda"), compile=False,
                  max_episode_steps=ctx.task.max_episode_steps, eval_episodes=0, checkpoint_every=0,
                  progress=False, exploration_fraction=1.0)
    values.update(overrides)
    return TrainConfig(**values)


class TrainerRuns:
    """Repeats of ``Trainer.train`` for ``vector_steps`` vector steps each, as a ``Case``: a fresh
    ``Trainer`` and envs (made untimed) on the same buffer and learner, resuming from the previous
    repeat's ``state_dict``. Records each repeat's phase shares (``Trainer.timers``) and updates/s.
    """

    def __init__(self, ctx: Context, buffer, learner, vector_steps: int, state: dict | None = None,
                 **overrides):
        self.ctx, self.buffer, self.learner, self.overrides = ctx, buffer, learner, overrides
        self.units = vector_steps * ctx.args.num_envs
        self.state = state
        self.envs = self.trainer = None
        from fastdqn.run.trainer import PHASES

        self.shares: dict[str, list[float]] = {k: [] for k in PHASES}
        self.updates: list[float] = []

    def setup(self) -> None:
        from fastdqn.run.trainer import Trainer

        self.close()
        first = self.state["global_step"] if self.state else 0
        config = train_config(self.ctx, total_timesteps=first + self.units, **self.overrides)
        self.envs = self.ctx.make_envs()
        self.trainer = Trainer(self.envs, self.buffer, self.learner, config)
        if self.state:
            self.trainer.load_state_dict(self.state, buffer_restored=True)

    def run(self) -> None:
        before, start = self.learner.num_updates, time.perf_counter()
        self.trainer.train()
        elapsed = time.perf_counter() - start
        for k, v in self.shares.items():
            v.append(self.trainer.timers[k] / elapsed)
        self.updates.append((self.learner.num_updates - before) / elapsed)
        self.state = self.trainer.state_dict()

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None

    def case(self) -> Case:
        return Case(self.run, self.units, self.setup)

    def share(self, phase: str) -> Stat:
        return median_spread(self.shares[phase][-self.ctx.sizes.repeats:])
