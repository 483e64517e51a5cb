"""``ActorFleet``: the actors seen from the learner. Its ingest thread keeps up to ``depth``
``collect`` requests in flight per actor (as the ``RateLimiter`` allows), adds each chunk
that arrives to the replay buffer beside the learner's updates, and notes actor restarts.

The buffer allows ``add`` beside sampling; ``add``, ``update_priorities`` and ``save`` must
not overlap, so every call of them (here and in the learner's loop) takes ``writer_lock``.
An actor whose process dies is restarted by Ray (``max_restarts``); its env ids then get
one ``valid=False`` row each, which ends their n-step windows, and its new process starts
with reset rows, so no stack or window spans the gap.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from fastdqn.errors import TrainingError
from fastdqn.run.actors.env_actor import EnvActor, apex_epsilon
from fastdqn.run.actors.limiter import RateLimiter
from fastdqn.run.actors.wire import StackRebuilder, merge

GIVE_UP_SECONDS = 120
"""How long an actor's requests may keep failing (Ray restarting it, or out of restarts)
before the run stops with an error."""


class ActorFleet:
    """``config.actors`` ``EnvActor``s on ``ray``, feeding ``buffer`` (``config.replay_envs`` envs).

    ``epsilon``: the schedule's value now (used with one actor). ``set_weights`` hands the
    actors new weights; ``stats()`` reads the counters for logging; ``episodes()`` takes the
    games finished since the last call. ``close()`` stops the thread and kills the actors.
    """

    def __init__(self, ray, config, task, buffer, limiter: RateLimiter, *, seed: int, depth: int = 2,
                 record_dir: str | None = None, max_restarts: int = 20) -> None:
        self.ray, self.config, self.buffer, self.limiter = ray, config, buffer, limiter
        self.depth = depth
        self.writer_lock = threading.Lock()
        self.epsilon = config.start_e
        self.chunk_steps = config.actor_chunk_steps * config.env_batch
        n = config.actors
        self._eps = [apex_epsilon(i, n, config.apex_epsilon, config.apex_alpha) for i in range(n)]
        self._rebuilder = StackRebuilder(config.replay_envs, task.obs_shape, task.obs_dtype, task.frame_stack,
                                         n * config.env_batch)
        remote = ray.remote(EnvActor).options(max_restarts=max_restarts, max_task_retries=0, num_cpus=1)
        self.actors = [remote.remote(config.to_dict(), i, seed, record_dir) for i in range(n)]
        self._weights: tuple[list, int] | None = None
        self._lock = threading.Lock()
        self.actor_steps = np.zeros(n, np.int64)
        self.restarts = np.zeros(n, np.int64)
        self._pids = [0] * n  # the process each actor's last chunk came from
        self.rows_ingested = 0
        self.ingest_seconds = 0.0
        self.in_flight = 0
        self._episodes: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def set_weights(self, state: dict, version: int) -> None:
        """One ``ray.put`` of the network's weights (a state dict of CPU tensors) for every actor."""
        ref = self.ray.put({k: v.detach().cpu().numpy() for k, v in state.items()})
        with self._lock:
            self._weights = ([ref], version)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fastdqn-ingest", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise what the ingest thread raised, if anything."""
        if isinstance(self.error, TrainingError):
            raise self.error
        if self.error is not None:
            raise TrainingError(f"actors: {self.error}") from self.error

    def episodes(self) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
        """(actor, returns, lengths, epsilon) of the games finished since the last call."""
        out = []
        while self._episodes:
            out.append(self._episodes.popleft())
        return out

    def events(self) -> list[str]:
        """Lines to print (restarts) since the last call."""
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def close(self) -> None:
        self._stop.set()
        self.limiter.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # handed to the learner's thread by check()
            self.error = exc
            self.limiter.close()

    def _loop(self) -> None:
        ray, limiter, total = self.ray, self.limiter, self.config.total_timesteps
        pending: dict = {}
        in_flight = np.zeros(len(self.actors), np.int64)
        served, turn = [0] * len(self.actors), 0
        down = [0.0] * len(self.actors)  # per actor: 0, or when to ask again while Ray restarts it
        since = [0.0] * len(self.actors)  # when its requests started failing
        while not self._stop.is_set():
            # One request at a time, to the actor with the fewest in flight (ties: the one served
            # least recently): every actor gets its share when the limiter lets few through.
            while self._weights is not None:
                now = time.monotonic()
                up = [j for j in range(len(self.actors)) if down[j] <= now]
                if not up:
                    break
                i = min(up, key=lambda j: (in_flight[j], served[j]))
                steps = (len(pending) + 1) * self.chunk_steps
                if (in_flight[i] >= self.depth or limiter.steps + steps > total + self.chunk_steps - 1
                        or not limiter.may_insert(steps)):
                    break
                with self._lock:
                    weights, version = self._weights
                eps = self.epsilon if len(self.actors) == 1 else self._eps[i]
                pending[self.actors[i].collect.remote(weights, version, eps)] = i
                in_flight[i] += 1
                served[i] = turn = turn + 1
            self.in_flight = len(pending)
            if not pending:
                if limiter.steps >= total:
                    return
                limiter.wait_insert(self.chunk_steps, 0.05)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.05)
            if ready:  # and every other chunk already there
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            arrived = []
            for ref in ready:
                i = pending.pop(ref)
                in_flight[i] -= 1
                try:
                    chunk = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    # Requests to a dead actor fail until Ray has started it again: its envs'
                    # windows are ended once, and requests pause meanwhile. The restart itself
                    # is counted when a chunk comes from a new process.
                    now = time.monotonic()
                    if not down[i]:
                        self._stream_cut(i)
                        since[i] = now
                    elif now - since[i] > GIVE_UP_SECONDS:
                        raise TrainingError(f"actor {i} has not come back for {GIVE_UP_SECONDS} s after its "
                                            f"process died ({exc}); see the Ray logs for why")
                    down[i] = now + 0.5
                    continue
                down[i] = 0.0
                self._note_process(i, chunk.pid)
                arrived.append((i, chunk))
            if arrived:
                self._ingest(arrived)

    def _ingest(self, arrived: list) -> None:
        """Add the chunks that arrived, in rounds of one chunk per actor (each actor's in the
        order they came): a round is merged, one vector step of all its actors per add."""
        start = time.perf_counter()
        rounds: list[list] = []
        for i, chunk in arrived:
            for group in rounds:
                if all(j != i for j, _ in group):
                    group.append((i, chunk))
                    break
            else:
                rounds.append([(i, chunk)])
        rows = 0
        for group in rounds:
            merged = merge([chunk for _, chunk in group])
            with self.writer_lock:
                after = None
                if merged.priorities is not None:
                    B = merged.step_rows

                    def after(step, env_ids, valid, merged=merged, B=B):
                        self._set_priorities(env_ids, valid, merged.priorities[step * B:(step + 1) * B])
                self._rebuilder.store(self.buffer, merged, after)
            for i, chunk in group:
                self.actor_steps[i] += chunk.rows
                if chunk.episode_returns.size:
                    self._episodes.append((i, chunk.episode_returns, chunk.episode_lengths, chunk.epsilon))
            rows += merged.rows
        self.ingest_seconds += time.perf_counter() - start
        self.rows_ingested += rows
        self.limiter.inserted(rows)

    def _set_priorities(self, env_ids: np.ndarray, valid: np.ndarray, priorities: np.ndarray) -> None:
        """The actor's |TD| as the priorities of the transitions this step stored."""
        if not valid.any():
            return
        self.buffer.update_priorities(self.buffer.latest_ids(env_ids[valid]), priorities[valid])

    def _note_process(self, i: int, pid: int) -> None:
        """Count a restart when actor ``i``'s chunks come from a process other than before."""
        if self._pids[i] and pid != self._pids[i]:
            self.restarts[i] += 1
            n = int(self.restarts[i])
            self._events.append(f"actor {i} was restarted by Ray in a new process (pid {pid}; "
                                f"{n} restart{'s' if n > 1 else ''} so far)")
        self._pids[i] = pid

    def _stream_cut(self, i: int) -> None:
        """Actor ``i``'s process died: end its envs' open n-step windows."""
        c = self.config
        ids = np.arange(i * c.num_envs, (i + 1) * c.num_envs, dtype=np.int64)
        shape = (c.num_envs, *self.buffer.obs_shape)
        obs = np.zeros(shape, self.buffer.obs_dtype)
        no = np.zeros(c.num_envs, bool)
        with self.writer_lock:
            self.buffer.add(obs, obs, np.zeros(c.num_envs, np.int64), np.zeros(c.num_envs, np.float32), no, no,
                            ids, no)
            self._rebuilder.cut(ids)
        self._events.append(f"actor {i} died; Ray restarts it")

    def stats(self) -> dict:
        return {"actor_steps": self.actor_steps.copy(), "restarts": int(self.restarts.sum()),
                "rows_ingested": self.rows_ingested, "ingest_seconds": self.ingest_seconds,
                "queue_depth": self.in_flight}
