"""Prioritized n-step replay in the training loop: the priorities written back are the TD
errors of the sampled ids (checked against plain PyTorch), beta follows its schedule draw by
draw, and a run stopped at a checkpoint and resumed draws the same batches and ends with the
same weights as an uninterrupted one."""

from __future__ import annotations

import contextlib
import copy
import signal

import numpy as np
import pytest
import torch

from fastdqn.run.checkpoint import buffer_path, load_checkpoint
from fastdqn.run.config import TrainConfig
from fastdqn.errors import ReplayError
from fastdqn.learn.learner import Learner
from fastdqn.run.logger import RunLogger
from fastdqn.learn.networks import MLP
from fastdqn.replay import PrioritizedReplayBuffer
from fastdqn.run.trainer import Trainer

E, T = 4, 9  # envs; an episode is T steps, then its env sends a reset row


class ClockEnvs:
    """Sync EnvPool stand-in whose rows depend only on the tick and the env: every env ends
    an episode (terminated) at elapsed step T and sends a reset row (elapsed step 0) next,
    as EnvPool does. A run resumed at a tick where every env resets sees exactly the rows an
    uninterrupted run sees (EnvPool itself cannot be saved; this one has nothing to save).
    The reward depends on the action taken, so that learning has something to learn."""

    def __init__(self, start_tick: int = 0, on_tick=None):
        self.tick, self.on_tick = start_tick, on_tick
        self.actions = np.zeros(E, np.int64)

    def async_reset(self):
        pass

    def send(self, actions, ids):
        self.actions[ids] = actions

    def recv(self):
        t, ids = self.tick, np.arange(E)
        if self.on_tick is not None:
            self.on_tick(t)
        self.tick += 1
        elapsed = np.full(E, t % (T + 1), np.int32)
        phase = (t + 3 * ids)[:, None] * np.array([0.1, 0.3, 0.7, 1.1])
        obs = np.sin(phase).astype(np.float32)
        reward = np.where(elapsed == 0, 0.0, (self.actions == (t + ids) % 2).astype(np.float64))
        terminated = elapsed == T
        return obs, reward, terminated, np.zeros(E, bool), {"env_id": ids, "elapsed_step": elapsed}


def config(**kw) -> TrainConfig:
    values = dict(env_id="CartPole-v1", total_timesteps=800, num_envs=E, buffer_size=120, batch_size=16,
                  learning_starts=64, train_frequency=2, target_network_frequency=16, compile=False,
                  eval_episodes=0, checkpoint_every=400, log_every=400, seed=5, n_step=3, prioritized=True,
                  dueling=True, per_alpha=0.5, per_beta_start=0.4, per_beta_end=1.0, progress=False,
                  learning_rate=3e-3)
    values.update(kw)
    return TrainConfig(**values)


def learner_for(c: TrainConfig) -> Learner:
    return Learner(MLP(4, 2, hidden=(16,), dueling=c.dueling), lr=c.learning_rate, gamma=c.gamma,
                   target_update_interval=c.target_update_interval, compile=False, seed=c.seed)


def buffer_for(c: TrainConfig) -> PrioritizedReplayBuffer:
    return PrioritizedReplayBuffer(c.buffer_size, (4,), E, obs_dtype=np.float32, n_step=c.n_step,
                                   alpha=c.per_alpha, eps=c.per_eps, gamma=c.gamma, seed=c.seed)


@contextlib.contextmanager
def run_logger(run_dir, c: TrainConfig, resume_step=None):
    logger = RunLogger(run_dir, total_timesteps=c.total_timesteps, resume_step=resume_step, progress=False)
    try:
        yield logger
    finally:
        logger.close()


def record_batches(learner: Learner, seen: list) -> None:
    """Keep a copy of every batch's ids and weights as the learner receives it."""
    update = learner.update

    def recorded(batch):
        seen.append((np.array(batch.index), np.array(batch.weight)))
        return update(batch)

    learner.update = recorded


def test_a_stopped_and_resumed_run_draws_and_learns_exactly_as_an_uninterrupted_one(tmp_path):
    c = config()
    torch.manual_seed(0)
    full, seen_full = learner_for(c), []
    record_batches(full, seen_full)
    with run_logger(tmp_path / "a", c) as logger:
        assert Trainer(ClockEnvs(), buffer_for(c), full, c, logger).train() == 0

    # Run B: the same run, stopped by SIGTERM during the vector step that reaches step 400.
    # 400 / E = 100 ticks, a multiple of T + 1: every env sends a reset row next, in both runs.
    c = config(save_buffer=True)
    torch.manual_seed(0)
    first, seen = learner_for(c), []
    record_batches(first, seen)
    with run_logger(tmp_path / "b", c) as logger:
        trainer = Trainer(ClockEnvs(), buffer_for(c), first, c, logger)
        envs = trainer.envs
        envs.on_tick = lambda t: t == 400 // E - 1 and trainer.request_stop(signal.SIGTERM)
        assert trainer.train() == 143 and trainer.global_step == 400
    stopped_at = len(seen)

    state = load_checkpoint(tmp_path / "b")
    assert state["trainer"]["next_batch"]["weight"] is not None
    assert state["trainer"]["pending_priorities"] is not None
    torch.manual_seed(123)  # the checkpoint's RNG states must win over whatever the process holds
    resumed = learner_for(c)
    resumed.load_state_dict(state["learner"])
    record_batches(resumed, seen)
    buffer = PrioritizedReplayBuffer.load(buffer_path(state))
    with run_logger(tmp_path / "b", c, resume_step=400) as logger:
        trainer = Trainer(ClockEnvs(start_tick=400 // E), buffer, resumed, c, logger)
        trainer.load_state_dict(state["trainer"], buffer_restored=True)
        assert trainer.train() == 0

    assert 100 < stopped_at < len(seen) == len(seen_full)
    for i, ((index, weight), (want_index, want_weight)) in enumerate(zip(seen, seen_full)):
        np.testing.assert_array_equal(index, want_index, err_msg=f"update {i}")
        np.testing.assert_array_equal(weight, want_weight, err_msg=f"update {i}")
    for name, value in full.online.state_dict().items():
        assert torch.equal(resumed.online.state_dict()[name], value), name


def td_errors(online, target, batch, gamma_discount) -> torch.Tensor:
    """|r + discount * Q_target(s', argmax_a Q_online(s', a)) - Q_online(s, a)|, in plain PyTorch."""
    obs, next_obs = torch.as_tensor(batch["obs"]), torch.as_tensor(batch["next_obs"])
    action = torch.as_tensor(batch["action"])
    with torch.no_grad():
        q = online(obs)[torch.arange(len(action)), action]
        best = online(next_obs).argmax(1)
        bootstrap = target(next_obs)[torch.arange(len(best)), best]
        return (torch.as_tensor(batch["reward"]) + torch.as_tensor(gamma_discount) * bootstrap - q).abs()


def sampleable(buffer, i: int) -> bool:
    try:
        buffer.priorities([i])
    except ReplayError:
        return False
    return True


def test_priorities_written_back_are_the_td_errors_of_the_sampled_ids_one_update_late():
    c = config(total_timesteps=320, checkpoint_every=0)
    torch.manual_seed(0)
    learner, buffer = learner_for(c), buffer_for(c)
    expected, written, stored = [], [], []
    update, write = learner.update, buffer.update_priorities

    def recorded_update(batch):
        fields = {k: np.array(getattr(batch, k)) for k in ("obs", "next_obs", "action", "reward", "discount")}
        online, target = copy.deepcopy(learner.online), copy.deepcopy(learner.target)
        out = update(batch)
        expected.append((np.array(batch.index),
                         td_errors(online, target, fields, fields["discount"]).numpy()))
        return out

    def recorded_write(index, priorities):
        written.append((learner.num_updates, np.array(index), np.array(priorities)))
        count = write(index, priorities)
        # The buffer keeps (|td| + eps) ** alpha, the later value where an id repeats, and skips
        # ids overwritten since they were drawn.
        last = {i: p for i, p in zip(index.tolist(), np.asarray(priorities, np.float64).tolist())}
        kept = {i: p for i, p in last.items() if sampleable(buffer, i)}
        assert count == sum(i in kept for i in index.tolist())
        ids = np.array(list(kept), np.int64)
        np.testing.assert_allclose(buffer.priorities(ids),
                                   (np.array(list(kept.values())) + c.per_eps) ** c.per_alpha, rtol=1e-12)
        stored.append(len(kept))
        return count

    learner.update, buffer.update_priorities = recorded_update, recorded_write
    Trainer(ClockEnvs(), buffer, learner, c).train()
    assert len(expected) > 50 and len(written) == len(expected) - 1  # the last one is still pending
    for i, (updates_done, index, priorities) in enumerate(written):
        assert updates_done == i + 2  # update i's errors are written once update i + 1 is launched
        want_index, want_td = expected[i]
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_allclose(priorities, want_td, rtol=1e-5, atol=1e-6)
    assert sum(stored) > 0.9 * 16 * len(written)


def test_each_draw_uses_beta_of_the_step_it_is_drawn_at():
    c = config(total_timesteps=400, checkpoint_every=0, per_beta_start=0.2, per_beta_end=0.9)
    torch.manual_seed(0)
    learner, buffer = learner_for(c), buffer_for(c)
    draws = []
    draw = buffer.draw

    def recorded_draw(batch_size, out=None, *, beta=1.0):
        batch = draw(batch_size, out, beta=beta)
        draws.append((trainer.global_step, beta, batch.index.copy(), batch.weight.copy()))
        return batch

    buffer.draw = recorded_draw
    trainer = Trainer(ClockEnvs(), buffer, learner, c)
    update = learner.update

    def check_weights(batch):
        # The buffer is still here: weights at beta are the beta = 1 weights to the power beta.
        step, beta, index, weight = draws[-2]  # the batch handed out was drawn one draw ago
        np.testing.assert_array_equal(np.array(batch.index), index)
        np.testing.assert_allclose(np.array(batch.weight), weight)
        return update(batch)

    learner.update = check_weights
    trainer.train()
    assert len(draws) > 50
    for step, beta, _, _ in draws:
        assert beta == pytest.approx(0.2 + (0.9 - 0.2) * step / 400, abs=1e-12)
    assert draws[0][1] < draws[-1][1]


@pytest.mark.parametrize("step, beta", [(0, 0.4), (250, 0.55), (1000, 1.0), (5000, 1.0)])
def test_beta_schedule_is_linear_over_total_timesteps_then_flat(step, beta):
    c = TrainConfig(total_timesteps=1000, per_beta_start=0.4, per_beta_end=1.0)
    assert c.per_beta(step) == pytest.approx(beta, abs=1e-12)
