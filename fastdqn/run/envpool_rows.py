"""``EnvPoolRows``: the one rule that turns the rows of EnvPool's ``recv()``/``step()`` into
``ReplayBuffer.add`` arguments, for the trainer, the benchmarks and the tests. A row is the
transition from its env's previous observation, under the action that env was sent last, to
the row's observation, matched by ``info["env_id"]`` (async EnvPool returns envs in any order).
A row with ``elapsed_step == 0`` is EnvPool's reset step, not a transition: it goes to ``add``
with ``valid=False``, which stores nothing but says the env's next step does not continue its
last one. Rewards are stored as their sign; every array is allocated once (``docs/envpool.md``).
"""

from __future__ import annotations

import numpy as np


class EnvPoolRows:
    """Each env's newest observation and action, and the ``add`` arguments of arriving rows.

    ``num_envs`` envs return ``batch_size`` rows per call (``num_envs`` for sync EnvPool).
    ``received(...)`` turns one call's rows into ``add`` keyword arguments; ``sent(actions,
    env_ids)`` records the actions those envs step with next; ``reset(obs, info)`` takes the
    observations of a sync ``envs.reset()``. ``obs``, ``action``, ``reward`` and ``valid``
    hold the last rows' fields and are rewritten by the next ``received``.
    """

    def __init__(self, num_envs: int, batch_size: int, obs_shape, obs_dtype) -> None:
        shape, dtype = tuple(obs_shape), np.dtype(obs_dtype)
        self._last_obs = np.zeros((num_envs, *shape), dtype)
        self._last_action = np.zeros(num_envs, np.int64)
        self.obs = np.zeros((batch_size, *shape), dtype)
        self.action = np.zeros(batch_size, np.int64)
        self.reward = np.zeros(batch_size, np.float32)
        self.valid = np.zeros(batch_size, bool)
        self._add = dict(obs=self.obs, next_obs=None, action=self.action, reward=self.reward,
                         terminated=None, truncated=None, env_ids=None, valid=self.valid)

    def reset(self, obs: np.ndarray, info: dict) -> None:
        """Take the observations of ``envs.reset()`` as each env's newest."""
        self._last_obs[info["env_id"]] = obs

    def received(self, next_obs: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
                 truncated: np.ndarray, info: dict) -> dict:
        """``ReplayBuffer.add`` keyword arguments for the rows of one ``recv()``/``step()``
        (its five values in order); valid until the next call."""
        ids = info["env_id"]
        np.take(self._last_obs, ids, axis=0, out=self.obs)
        np.take(self._last_action, ids, out=self.action)
        np.not_equal(info["elapsed_step"], 0, out=self.valid)
        np.sign(reward, out=self.reward)
        self._last_obs[ids] = next_obs
        add = self._add
        add["next_obs"], add["terminated"], add["truncated"], add["env_ids"] = next_obs, terminated, truncated, ids
        return add

    def sent(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        """Record the actions the envs ``env_ids`` were just sent (or stepped with)."""
        self._last_action[env_ids] = actions
