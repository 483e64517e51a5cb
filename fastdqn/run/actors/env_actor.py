"""``EnvActor``: one Ray actor process stepping an EnvPool vector env (sync or async) and
acting with a CPU copy of the online network; each ``collect`` call returns a ``Chunk``.

Ray wraps the class (``ray.remote(EnvActor)``), so ``ps`` shows each process as
``ray::EnvActor``. Weights arrive as an object ref inside a list (not resolved by Ray at the
call) and are fetched only when their version changes: one ``ray.put`` per sync serves every
actor. A restarted process (Ray ``max_restarts``) builds new envs with a new seed, so its
first rows are EnvPool's reset rows: the learner sees a fresh start on each of its envs.
"""

from __future__ import annotations

import os

import numpy as np

from fastdqn.run.actors.wire import ChunkWriter
from fastdqn.run.config import TrainConfig, derive_seed


def apex_epsilon(index: int, num_actors: int, epsilon: float, alpha: float) -> float:
    """Ape-X's exploration of actor ``index`` of ``num_actors``: eps ** (1 + alpha * i / (N - 1))."""
    if num_actors < 2:
        return epsilon
    return float(epsilon ** (1.0 + alpha * index / (num_actors - 1)))


class EnvActor:
    """Actor ``index`` of a run: its envs own the learner's env ids ``[index * num_envs,
    (index + 1) * num_envs)``. ``record_dir``: write every chunk's transitions there as .npz
    (tests compare what the learner samples with them)."""

    def __init__(self, config: dict, index: int, seed: int, record_dir: str | None = None) -> None:
        import torch

        from fastdqn.learn.learner import epsilon_greedy
        from fastdqn.run.build import build_envs, build_network
        from fastdqn.run.envpool_rows import EnvPoolRows
        from fastdqn.run.envs import env_info

        torch.set_num_threads(1)
        self.config = c = TrainConfig.from_dict(config)
        self.index, self.record_dir = index, record_dir
        self._torch, self._epsilon_greedy = torch, epsilon_greedy
        self.task = task = env_info(c.env_id)
        restarted = _restarted()
        seed = derive_seed(seed, 7919 * index + (os.getpid() if restarted else 0))
        self.envs = build_envs(c, seed=seed)
        self.net = build_network(task, c.hidden, c.dueling).eval()
        self.rng = np.random.default_rng(seed)
        self.rows = EnvPoolRows(c.num_envs, c.env_batch, task.obs_shape, task.obs_dtype)
        self.writer = ChunkWriter(index, c.actor_chunk_steps, c.env_batch, task.obs_shape, task.obs_dtype,
                                  task.frame_stack, task.num_actions, index * c.num_envs)
        self.version = -1
        self._ep_return = np.zeros(c.num_envs, np.float64)
        self._ep_length = np.zeros(c.num_envs, np.int64)
        self._records = 0
        self.envs.async_reset()

    def pid(self) -> int:
        return os.getpid()

    def collect(self, weights: list, version: int, epsilon: float):
        """``actor_chunk_steps`` vector steps acted with the weights ``weights[0]`` (an object
        ref to a state dict of NumPy arrays, fetched when ``version`` is new) at ``epsilon``."""
        if version != self.version:
            import ray

            state = ray.get(weights[0])
            self.net.load_state_dict({k: self._torch.from_numpy(v) for k, v in state.items()})
            self.version = version
        self.writer.clear()
        returns, lengths = [], []
        record = [] if self.record_dir else None
        priorities = self.config.actor_priorities
        for _ in range(self.config.actor_chunk_steps):
            obs, reward, terminated, truncated, info = self.envs.recv()
            ids = info["env_id"]
            add = self.rows.received(obs, reward, terminated, truncated, info)
            q = self._q(obs) if epsilon < 1.0 or priorities else None
            actions = self._epsilon_greedy(lambda: q.argmax(1), len(ids), self.task.num_actions, epsilon, self.rng)
            self.envs.send(actions, ids)
            self.rows.sent(actions, ids)
            self.writer.append(add, self._td(add, q) if priorities else None)
            self._episodes(ids, reward, add["valid"], returns, lengths)
            if record is not None:
                record.append({k: np.array(v) for k, v in add.items()})
        if record is not None:
            self._record(record)
        chunk = self.writer.chunk(episode_returns=returns, episode_lengths=lengths, epsilon=epsilon,
                                  priorities=priorities)
        chunk.pid = os.getpid()
        return chunk

    def _q(self, obs) -> np.ndarray:
        with self._torch.inference_mode():
            return self.net(self._torch.from_numpy(np.ascontiguousarray(obs))).numpy()

    def _td(self, add: dict, q_next: np.ndarray) -> np.ndarray:
        """|r + gamma * max_a Q(s', a) (0 if terminated) - Q(s, a)| of each row, one-step, with this
        actor's network as both online and target (Ape-X's actors have no target network)."""
        q = self._q(add["obs"])
        taken = q[np.arange(len(q)), add["action"]]
        target = add["reward"] + self.config.gamma * q_next.max(1) * ~add["terminated"]
        return np.abs(target - taken).astype(np.float32)

    def _episodes(self, ids, reward, valid, returns: list, lengths: list) -> None:
        """Full-game raw scores, closed by each env's reset row (as the one-process loop)."""
        for row, e in enumerate(ids):
            if not valid[row]:
                if self._ep_length[e] > 0:
                    returns.append(float(self._ep_return[e]))
                    lengths.append(int(self._ep_length[e]))
                self._ep_return[e], self._ep_length[e] = 0.0, 0
            else:
                self._ep_return[e] += reward[row]
                self._ep_length[e] += 1

    def _record(self, steps: list) -> None:
        arrays = {f"{k}_{i}": v for i, step in enumerate(steps) for k, v in step.items()}
        arrays["env_offset"] = np.array(self.index * self.config.num_envs)
        name = os.path.join(self.record_dir, f"actor{self.index}-{os.getpid()}-{self._records}.npz")
        # A file object keeps savez from adding ".npz": a file cut short by a SIGKILL keeps its
        # ".tmp" name, which readers of "actor*.npz" never see.
        with open(name + ".tmp", "wb") as f:
            np.savez(f, **arrays)
        os.replace(name + ".tmp", name)
        self._records += 1


def _restarted() -> bool:
    """Whether Ray is running this actor again after its process died."""
    import ray

    # Outside Ray (tests build the class directly) there is nothing to ask.
    return ray.is_initialized() and bool(ray.get_runtime_context().was_current_actor_reconstructed)
