"""The plain baselines the benchmarks set fastdqn against.

``NumpyStackBuffer`` is the replay buffer one writes first (two full observations per
transition, fancy indexing); ``NaiveDQNLoop`` is the DQN loop written the obvious way
around it. Both are plain and correct, not deliberately slow.
"""

from __future__ import annotations

import copy

import numpy as np


class NumpyStackBuffer:
    """Full stacks for obs and next_obs; NumPy fancy indexing, fresh arrays every sample."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype=np.uint8, seed=None):
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=bool)
        self.pos = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.next_obs, self.action, self.reward, self.terminated))

    def __len__(self) -> int:
        return self.size

    def add(self, obs, next_obs, action, reward, terminated) -> None:
        rows = (self.pos + np.arange(len(obs))) % self.capacity
        self.obs[rows] = obs
        self.next_obs[rows] = next_obs
        self.action[rows] = action
        self.reward[rows] = reward
        self.terminated[rows] = terminated
        self.pos = int(rows[-1] + 1) % self.capacity
        self.size = min(self.size + len(obs), self.capacity)

    def sample(self, batch_size: int):
        idx = self.rng.integers(0, self.size, size=batch_size)
        return (self.obs[idx], self.next_obs[idx], self.action[idx], self.reward[idx],
                self.terminated[idx])


class NaiveDQNLoop:
    """The reference for the train figure: observations converted to a float tensor every step,
    a ``NumpyStackBuffer``, reset rows dropped by boolean indexing, an eager Double-DQN update."""

    def __init__(self, envs, q_network, *, buffer_size: int, batch_size: int = 32,
                 learning_starts: int, train_frequency: int = 4, gamma: float = 0.99,
                 lr: float = 1e-4, target_update_interval: int = 250, epsilon: float = 0.05,
                 device: str = "cpu", seed: int = 0):
        import torch

        self.torch = torch
        self.envs = envs
        self.device = torch.device(device)
        self.online = q_network.to(self.device)
        self.target = copy.deepcopy(self.online)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr)
        obs, _ = envs.reset()
        self.obs = obs
        self.num_envs = len(obs)
        self.num_actions = int(envs.action_space.n)
        self.buffer = NumpyStackBuffer(buffer_size, obs.shape[1:], obs.dtype, seed=seed)
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.train_frequency, self.gamma = train_frequency, gamma
        self.target_update_interval, self.epsilon = target_update_interval, epsilon
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.pending = 0
        self.num_updates = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.rng.random() < self.epsilon:
            return self.rng.integers(0, self.num_actions, size=self.num_envs)
        with self.torch.no_grad():
            q_values = self.online(self.torch.Tensor(obs).to(self.device))
        return q_values.argmax(dim=1).cpu().numpy()

    def update(self) -> float:
        torch = self.torch
        obs, next_obs, action, reward, terminated = self.buffer.sample(self.batch_size)
        obs = torch.Tensor(obs).to(self.device)
        next_obs = torch.Tensor(next_obs).to(self.device)
        action = torch.as_tensor(action, device=self.device)
        reward = torch.as_tensor(np.sign(reward), device=self.device)
        done = torch.as_tensor(terminated, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            next_action = self.online(next_obs).argmax(dim=1, keepdim=True)
            next_q = self.target(next_obs).gather(1, next_action).squeeze(1)
            td_target = reward + self.gamma * next_q * (1.0 - done)
        q = self.online(obs).gather(1, action[:, None]).squeeze(1)
        loss = torch.nn.functional.mse_loss(q, td_target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.num_updates += 1
        if self.num_updates % self.target_update_interval == 0:
            self.target.load_state_dict(self.online.state_dict())
        return loss.item()

    def run(self, vector_steps: int) -> None:
        """Step all envs ``vector_steps`` times, storing and (after learning starts) learning."""
        for _ in range(vector_steps):
            action = self.act(self.obs)
            next_obs, reward, terminated, truncated, info = self.envs.step(action)
            # EnvPool resets on the step after an episode ends: that row is no transition.
            valid = info["elapsed_step"] > 0
            self.buffer.add(self.obs[valid], next_obs[valid], action[valid], reward[valid],
                            terminated[valid])
            self.obs = next_obs
            self.env_steps += self.num_envs
            if self.env_steps > self.learning_starts:
                self.pending += self.num_envs  # one update per train_frequency env steps
                while self.pending >= self.train_frequency:
                    self.pending -= self.train_frequency
                    self.update()
