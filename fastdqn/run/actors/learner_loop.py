"""``ActorTrainer``: the learner's loop when actors step the envs. It owns what the one-process
``Trainer`` owns (the learner and its device, the replay buffer and its pipeline, logging,
evaluation, checkpoints, signals, resume) and takes its env steps from an ``ActorFleet``,
whose thread adds them to the buffer while this loop updates. The ``RateLimiter`` decides
when an update may run; every ``weight_sync_every`` updates the weights go to the actors.
"""

from __future__ import annotations

import time

import numpy as np

from fastdqn.run.trainer import Trainer


class ActorTrainer(Trainer):
    """A ``Trainer`` fed by ``fleet`` (an ``ActorFleet`` over ``buffer``) instead of envs."""

    def __init__(self, fleet, buffer, learner, config, logger=None, *, evaluator=None, pipeline=None) -> None:
        super().__init__(None, buffer, learner, config, logger, evaluator=evaluator, pipeline=pipeline)
        self.fleet = fleet
        self.updates = 0
        self._returns: dict[int, list[float]] = {}
        self._last = None  # (time, steps, updates, rows ingested, per-actor steps) at the last log

    def checkpoint(self) -> None:
        # The buffer is saved with it: no add may run meanwhile.
        with self.fleet.writer_lock:
            super().checkpoint()

    def _train(self) -> int:
        c, learner, fleet, timer = self.config, self.learner, self.fleet, self.timer
        limiter = fleet.limiter
        limiter.learn_after = self._learn_after
        limiter.steps = self.global_step
        limiter.updates = max(0, (self.global_step - self._learn_after) // c.train_frequency)
        start_step, start_time = self.global_step, time.perf_counter()
        self._last = (start_time, start_step, 0, 0, np.zeros(c.actors, np.int64))
        self._start_schedule()
        version = 0
        fleet.epsilon = self.epsilon()
        fleet.set_weights(learner.online.state_dict(), version)
        fleet.start()
        try:
            with self.pipeline:
                while self.stop_signal is None:
                    fleet.check()
                    self.global_step = limiter.steps
                    fleet.epsilon = self.epsilon()
                    if self.global_step >= c.total_timesteps and (c.free_running or not limiter.may_update()):
                        break
                    if len(self.buffer) >= c.batch_size and limiter.wait_update(0.05):
                        if c.anneal_lr:
                            # CleanRL's anneal; updates that catch up after the last env step keep the last rate.
                            frac = max(1.0 - self.global_step / c.total_timesteps, 1.0 / c.total_timesteps)
                            self.learner.set_lr(c.learning_rate * frac)
                        batch = self.pipeline.next_batch()
                        with timer("learn"):
                            self._metrics = learner.update(batch)
                        with fleet.writer_lock:
                            self.pipeline.report(batch, self._metrics["td_error"])
                        limiter.updated()
                        self.updates += 1
                        if self.updates % c.weight_sync_every == 0:
                            version += 1
                            fleet.set_weights(learner.online.state_dict(), version)
                    elif len(self.buffer) < c.batch_size:
                        time.sleep(0.01)
                    self._drain()
                    self._on_schedule(start_step, start_time)
        finally:
            fleet.close()
        self.global_step = limiter.steps
        self._drain()
        fleet.check()
        return self._finish(start_step, start_time)

    def _drain(self) -> None:
        """Log the games the actors finished and print their restarts."""
        for line in self.fleet.events():
            print(f"fastdqn train: {line}", flush=True)
        for actor, returns, lengths, epsilon in self.fleet.episodes():
            self.episodes += len(returns)
            self._returns.setdefault(actor, []).extend(returns.tolist())
            if self.logger is not None:
                self.logger.episodes(self.global_step, returns, lengths, epsilon)

    def _log_training(self, start_step: int, start_time: float) -> None:
        self._last_log_step = self.global_step
        now = time.perf_counter()
        stats = self.fleet.stats()
        t0, steps0, updates0, rows0, actor0 = self._last
        dt = max(now - t0, 1e-9)
        sps = (self.global_step - start_step) / max(now - start_time, 1e-9)
        ratio = self.fleet.limiter.ratio()
        record = {"epsilon": self.epsilon(), "sps": sps, "updates_per_s": (self.updates - updates0) / dt,
                  "ingest_rows_per_s": (stats["rows_ingested"] - rows0) / dt, "queue_depth": stats["queue_depth"],
                  "replay_ratio": ratio, "actor_restarts": stats["restarts"]}
        for i, steps in enumerate(stats["actor_steps"]):
            record[f"actor{i}_sps"] = (steps - actor0[i]) / dt
            if self._returns.get(i):
                record[f"actor{i}_return"] = float(np.mean(self._returns[i]))
        self._returns = {}
        if self._metrics is not None:
            record["td_loss"] = float(self._metrics["td_loss"])
            record["q_values"] = float(self._metrics["q_values"])
        self._last = (now, self.global_step, self.updates, stats["rows_ingested"], stats["actor_steps"])
        self.logger.log(self.global_step, **record)
        extra = {"upd/s": f"{record['updates_per_s']:,.0f}", "actors": self.config.actors}
        if ratio is not None:
            extra["ratio"] = f"{ratio:.2f}"
        if stats["restarts"]:
            extra["restarts"] = stats["restarts"]
        self.logger.progress(self.global_step, sps=sps, epsilon=record["epsilon"], extra=extra)
