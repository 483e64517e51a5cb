"""The training loop: EnvPool -> replay buffer -> learner, with logging and checkpoints.

One loop serves sync and async EnvPool: it always talks ``send``/``recv``, so the envs step
in their own threads while the learner trains. ``EnvPoolRows`` turns each row of ``recv()``
into a transition (by ``info["env_id"]``; resets are not transitions, rewards are stored as
their sign), and a ``ReplayPipeline`` stores it and hands out batches (prefetch, β, priority
write-back), so the loop treats every kind of replay alike. ``terminated`` (a lost life with
``episodic_life``, or a game over) stops bootstrapping, ``truncated`` does not; episode
scores sum the raw rewards of a whole game, which ends when its env's reset arrives.
"""

from __future__ import annotations

import signal
import time
import uuid

import numpy as np
import torch

from fastdqn.errors import ConfigError, TrainingError
from fastdqn.pipeline.replay_pipeline import ReplayPipeline
from fastdqn.run.checkpoint import save_checkpoint
from fastdqn.run.config import TrainConfig, linear_schedule
from fastdqn.run.envpool_rows import EnvPoolRows
from fastdqn.util.phases import PhaseTimer, next_multiple

LOOP_PHASES = ("env", "act", "learn")
PHASES = ("env", "act", "store", "sample", "learn", "wait", "priorities")
"""Every phase in ``Trainer.timers``: the loop's own and its replay pipeline's."""

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Trainer:
    """Runs ``config.total_timesteps`` env steps of DQN with the components handed in: EnvPool
    ``envs`` (sync or async), a ``ReplayBuffer`` for ``config.num_envs`` envs, a ``Learner``, a
    ``RunLogger`` or None (then nothing is written), an ``evaluator`` (``evaluator(global_step)``:
    scores of full games with the current network) and a ``pipeline`` over ``buffer`` (None: one for the learner's device,
    as ``config.prefetch`` and ``config.per_beta`` say), which ``train()`` closes before it
    returns. ``timers`` holds the seconds spent per phase (``PHASES``).
    """

    def __init__(self, envs, buffer, learner, config: TrainConfig, logger=None, *, evaluator=None,
                 pipeline: ReplayPipeline | None = None) -> None:
        # The learner bootstraps with the batch's discount, which the buffer computes.
        if buffer.gamma != learner.gamma:
            raise ConfigError(f"buffer: expected gamma {learner.gamma} like the learner's, got "
                              f"{buffer.gamma}; build the buffer with gamma={learner.gamma}")
        self.envs, self.buffer, self.learner, self.config = envs, buffer, learner, config
        self.logger, self.evaluator = logger, evaluator
        self.timer = PhaseTimer(LOOP_PHASES)
        self.global_step = 0
        self.episodes = 0
        self.last_eval: dict | None = None
        self.run_id = uuid.uuid4().hex  # ties this run's checkpoints to the replay files saved with them
        self.stop_signal: int | None = None
        self._steps_owed = 0  # env steps not yet paid for with an update (carry of num_envs / train_frequency)
        self._learn_after = config.learning_starts
        self._metrics = None
        self._last_log_step = -1
        if pipeline is None:
            pipeline = ReplayPipeline(buffer, config.batch_size, device=getattr(learner, "device", "cpu"),
                                      beta=self.beta, prefetch=config.prefetch)
        self.pipeline = pipeline

        n, batch = config.num_envs, config.env_batch
        self._rows = EnvPoolRows(n, batch, buffer.obs_shape, buffer.obs_dtype)
        self._ep_return = np.zeros(n, dtype=np.float64)
        self._ep_length = np.zeros(n, dtype=np.int64)
        self._reset = np.zeros(batch, dtype=bool)
        self._ret = np.zeros(batch, dtype=np.float64)
        self._len = np.zeros(batch, dtype=np.int64)

    @property
    def timers(self) -> dict[str, float]:
        """Seconds spent per phase (``PHASES``), the replay pipeline's included."""
        seconds = {**self.timer.seconds, **self.pipeline.timer.seconds}
        return {name: seconds[name] for name in PHASES}

    def state_dict(self) -> dict:
        """Counters, torch's RNG states and the replay pipeline's state (the batch drawn but
        not yet used, the TD errors not yet written back): plain data, as checkpoints hold
        nothing else. NumPy's global RNG is not saved: nothing in fastdqn draws from it."""
        return {
            "global_step": self.global_step,
            "pending": self._steps_owed,  # the checkpoint's name for the steps owed an update
            "learn_after": self._learn_after,
            "episodes": self.episodes,
            "last_eval": self.last_eval,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "run_id": self.run_id,
            **self.pipeline.state_dict(),
        }

    def load_state_dict(self, state: dict, *, buffer_restored: bool) -> None:
        """Continue from a checkpoint. Without the saved buffer, learning pauses until
        ``learning_starts`` new env steps have refilled it (collected with the resumed
        epsilon and network, not at random)."""
        self.global_step = int(state["global_step"])
        self._steps_owed = int(state["pending"])
        self.episodes = int(state["episodes"])
        self.last_eval = state.get("last_eval")
        self.run_id = state.get("run_id") or self.run_id  # checkpoints before run ids get a new one
        self._learn_after = int(state["learn_after"])
        if not buffer_restored:
            self._learn_after = max(self._learn_after, self.global_step + self.config.learning_starts)
            self._steps_owed = 0
        else:
            # The drawn batch and the errors not yet written refer to the saved buffer's ids.
            self.pipeline.load_state_dict(state)
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def checkpoint(self) -> None:
        if self.logger is None:
            return
        self.logger.flush()
        state = {"config": self.config.to_dict(), "learner": self.learner.state_dict(), "trainer": self.state_dict(),
                 "obs_shape": tuple(self.buffer.obs_shape)}
        save_checkpoint(self.logger.run_dir, state, self.buffer if self.config.save_buffer else None)

    def request_stop(self, signum: int) -> None:
        """Finish the current vector step, save a checkpoint and return (signal-safe)."""
        self.stop_signal = signum

    def epsilon(self) -> float:
        c = self.config
        return linear_schedule(c.start_e, c.end_e, c.exploration_steps, self.global_step)

    def beta(self) -> float:
        """Prioritized replay's importance-weight exponent now (``TrainConfig.per_beta``)."""
        return self.config.per_beta(self.global_step)

    def train(self) -> int:
        """Train to ``total_timesteps``; returns 0, or 130/143 after SIGINT/SIGTERM.

        A non-finite loss (the learner raises ``FloatingPointError`` in an update, or on
        CUDA when a checkpoint reads its state) ends in ``TrainingError``, after the last
        good state is saved where there is one.
        """
        try:
            return self._train()
        except FloatingPointError as exc:
            raise self._diverged(exc) from None

    def _train(self) -> int:
        c, envs, learner, timer, rows = self.config, self.envs, self.learner, self.timer, self._rows
        start_step, start_time = self.global_step, time.perf_counter()
        self._start_schedule()
        epsilon = self.epsilon()
        envs.async_reset()
        # Leaving the block stops the pipeline's sampler thread and raises what it raised;
        # the drawn batch is kept for the final checkpoint.
        with self.pipeline:
            while self.global_step < c.total_timesteps and self.stop_signal is None:
                with timer("env"):
                    obs, reward, terminated, truncated, info = envs.recv()
                ids = info["env_id"]
                # Act and send first, so the envs step in their threads while this thread
                # stores the transitions and tracks episodes (recv returns fresh arrays).
                with timer("act"):
                    transitions = rows.received(obs, reward, terminated, truncated, info)
                    episode_epsilon, epsilon = epsilon, self.epsilon()
                    actions = learner.act(obs, epsilon)
                with timer("env"):
                    envs.send(actions, ids)
                rows.sent(actions, ids)
                self.pipeline.store(**transitions)
                self._track_episodes(ids, reward, episode_epsilon)
                self.global_step += len(ids)
                if self.global_step > self._learn_after and len(self.buffer) >= c.batch_size:
                    self._learn(len(ids))
                self._on_schedule(start_step, start_time)
        return self._finish(start_step, start_time)

    def _start_schedule(self) -> None:
        """The next steps at which to log, evaluate and checkpoint (None: never)."""
        c = self.config
        self._next = {"log": next_multiple(self.global_step, c.log_every),
                      "eval": next_multiple(self.global_step, c.eval_every),
                      "checkpoint": next_multiple(self.global_step, c.checkpoint_every)}

    def _on_schedule(self, start_step: int, start_time: float) -> None:
        """Log, evaluate and checkpoint where due (in that order), then move the progress bar."""
        if self.logger is None:
            return
        c, due = self.config, self._next
        every = {"log": c.log_every, "eval": c.eval_every, "checkpoint": c.checkpoint_every}
        actions = {"log": lambda: self._log_training(start_step, start_time), "eval": self._evaluate,
                   "checkpoint": self.checkpoint}
        for name in ("log", "eval", "checkpoint"):
            if due[name] is not None and self.global_step >= due[name]:
                due[name] = next_multiple(self.global_step, every[name])
                actions[name]()
        self.logger.progress(self.global_step)

    def _finish(self, start_step: int, start_time: float) -> int:
        """The last evaluation (unless stopped by a signal), the last record and checkpoint;
        returns the exit status."""
        c = self.config
        if self.stop_signal is None and self.logger is not None:
            if c.eval_episodes and (self.last_eval is None or self.last_eval["global_step"] != self.global_step):
                self._evaluate()
        if self.logger is not None:
            if self.global_step not in (start_step, self._last_log_step):
                self._log_training(start_step, start_time)
            self.checkpoint()
        return EXIT_STATUS.get(self.stop_signal, 0) if self.stop_signal is not None else 0

    def _diverged(self, exc: FloatingPointError) -> TrainingError:
        """Save the learner's last good state if it has one; the error to stop with.

        On the CPU the learner raises before applying a bad update, so its state is the
        one from before it; on CUDA bad steps may already be applied, and then the last
        periodic checkpoint is kept instead.
        """
        where = f"training diverged at step {self.global_step:,} ({exc})"
        fix = f"lower --learning-rate (this run: {self.config.learning_rate:g})"
        if self.logger is None:
            return TrainingError(f"{where}; {fix}")
        run_dir = self.logger.run_dir
        try:
            finite = all(bool(torch.isfinite(p).all()) for p in self.learner.online.parameters())
            if finite:
                self.checkpoint()
        except FloatingPointError:
            finite = False
        if finite:
            saved = f"the state from before that update is saved in {run_dir}"
            then = f"then continue with: fastdqn train --resume {run_dir} --learning-rate LOWER, or start anew"
        else:
            saved = ("the learner's state already holds non-finite updates, so no checkpoint was written "
                     "now (an earlier one, if any, is kept)")
            then = "then resume from the earlier checkpoint or start anew"
        return TrainingError(f"{where}; {saved}; {fix}, {then}")

    def _learn(self, env_steps: int) -> None:
        c, timer = self.config, self.timer
        self._steps_owed += env_steps
        updates, self._steps_owed = divmod(self._steps_owed, c.train_frequency)
        if c.anneal_lr and updates:
            # CleanRL's anneal: the fraction of steps left before this vector step (always > 0).
            self.learner.set_lr(c.learning_rate * (1.0 - (self.global_step - env_steps) / c.total_timesteps))
        for _ in range(updates):
            batch = self.pipeline.next_batch()
            with timer("learn"):
                self._metrics = self.learner.update(batch)
            self.pipeline.report(batch, self._metrics["td_error"])

    def _track_episodes(self, ids: np.ndarray, reward: np.ndarray, epsilon: float) -> None:
        """Full-game score and length per env; a reset row closes that env's game."""
        np.logical_not(self._rows.valid, out=self._reset)
        np.take(self._ep_return, ids, out=self._ret)
        np.take(self._ep_length, ids, out=self._len)
        if self._reset.any():
            finished = self._reset & (self._len > 0)
            if finished.any() and self.logger is not None:
                self.logger.episodes(self.global_step, self._ret[finished], self._len[finished], epsilon)
            self.episodes += int(np.count_nonzero(finished))
        self._ret += reward
        self._len += 1
        np.copyto(self._ret, 0.0, where=self._reset)
        np.copyto(self._len, 0, where=self._reset)
        self._ep_return[ids] = self._ret
        self._ep_length[ids] = self._len

    def _log_training(self, start_step: int, start_time: float) -> None:
        self._last_log_step = self.global_step
        sps = (self.global_step - start_step) / max(time.perf_counter() - start_time, 1e-9)
        record = {"epsilon": self.epsilon(), "sps": sps}
        if self._metrics is not None:
            record["td_loss"] = float(self._metrics["td_loss"])
            record["q_values"] = float(self._metrics["q_values"])
        self.logger.log(self.global_step, **record)
        self.logger.progress(self.global_step, sps=sps, epsilon=record["epsilon"])

    def _evaluate(self) -> None:
        if self.evaluator is None or not self.config.eval_episodes:
            return
        scores = self.evaluator(self.global_step)
        self.last_eval = {"global_step": self.global_step, "mean": float(np.mean(scores)),
                          "std": float(np.std(scores))}
        self.logger.log(self.global_step, eval_return_mean=self.last_eval["mean"],
                        eval_return_std=self.last_eval["std"], eval_protocol=self.config.eval_protocol)
