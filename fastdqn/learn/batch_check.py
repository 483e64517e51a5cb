"""Checks batches handed to the learner and turns them into tensors on the learner's device.

The checks read only shapes, dtypes and, for host arrays, the ``B`` actions and flags, so they
cost microseconds and never sync with a GPU (device tensors skip the value checks). A batch
already on the learner's device passes without a copy; a host batch handed to a CUDA learner
is copied here, the one place an update moves data to its device.
"""

from __future__ import annotations

import numpy as np
import torch

from fastdqn.replay.batch import LEARNER_FIELDS, window_of
from fastdqn.errors import BatchError
from fastdqn.learn.losses import one_step_discount

# Fields a batch may carry: an n-step buffer's per-sample discount, prioritized replay's
# importance weights. Without them the discount is gamma * (1 - terminated), the weights 1.
OPTIONAL_FIELDS = ("discount", "weight")
REQUIRED_FIELDS = tuple(name for name in LEARNER_FIELDS if name not in OPTIONAL_FIELDS)
# What the update reads, in this order (the CUDA graph's static inputs): always every one,
# so batches with and without the optional fields share one compiled update.
UPDATE_INPUTS = ("obs", "next_obs", "action", "reward", "discount", "weight")


def _to_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        try:
            return torch.from_numpy(value)
        except TypeError as exc:
            raise BatchError(f"batch.{name}: dtype {value.dtype} has no torch equivalent; "
                             "pass uint8/float32 observations and int64 actions") from exc
    raise BatchError(f"batch.{name}: expected a NumPy array or torch tensor, got "
                     f"{type(value).__name__}")


class BatchChecker:
    """Validates batches against the shapes fixed by the network and the first batch."""

    def __init__(self, *, obs_shape, obs_dtype, num_actions: int, batch_size: int | None,
                 device: torch.device, gamma: float) -> None:
        self.obs_shape = None if obs_shape is None else tuple(obs_shape)
        self.obs_dtype = obs_dtype
        self.num_actions = num_actions
        self.batch_size = batch_size
        self.device = device
        self.gamma = gamma
        self._ones: torch.Tensor | None = None  # the weights of an unweighted batch

    def _check_obs(self, name: str, obs: torch.Tensor) -> None:
        if self.obs_dtype is None:
            if obs.dtype not in (torch.uint8, torch.float32):
                raise BatchError(f"batch.{name}: expected dtype uint8 or float32, got {obs.dtype}")
            self.obs_dtype = obs.dtype
        if obs.dtype != self.obs_dtype:
            raise BatchError(f"batch.{name}: expected dtype {self.obs_dtype}, got {obs.dtype}; "
                             "cast the observations (the network's input dtype is fixed)")
        if self.obs_shape is None:
            if obs.dim() < 2:
                raise BatchError(f"batch.{name}: expected shape (B, *obs_shape), got "
                                 f"{tuple(obs.shape)}")
            self.obs_shape = tuple(obs.shape[1:])
        if obs.dim() != 1 + len(self.obs_shape) or tuple(obs.shape[1:]) != self.obs_shape:
            raise BatchError(f"batch.{name}: expected shape (B, {', '.join(map(str, self.obs_shape))}),"
                             f" got {tuple(obs.shape)}")

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        """Name -> tensor of every name in ``UPDATE_INPUTS``, each ``(B, ...)`` on the learner's
        device: action int64, reward, discount and weight float32, observations as given.

        ``discount`` is the batch's own field when it has one (n-step replay), else
        ``gamma * (1 - terminated)``; ``weight`` is the batch's field (prioritized replay) or 1.
        """
        values = {}
        for name in REQUIRED_FIELDS:
            if not hasattr(batch, name):
                raise BatchError(f"batch: expected an object with fields {REQUIRED_FIELDS}, "
                                 f"got {type(batch).__name__} without .{name}")
            values[name] = _to_tensor(name, getattr(batch, name))
        obs, next_obs = values["obs"], values["next_obs"]
        self._check_obs("obs", obs)
        self._check_obs("next_obs", next_obs)
        size = obs.shape[0]
        if self.batch_size is None:
            self.batch_size = size
        if size != self.batch_size:
            raise BatchError(f"batch.obs: expected batch size {self.batch_size} (fixed by "
                             f"batch_size= or the first update), got {size}; sample batches of "
                             "one size (a new size would recompile)")
        if next_obs.shape[0] != size:
            raise BatchError(f"batch.next_obs: expected {size} rows like obs, got {next_obs.shape[0]}")
        for name in ("action", "reward", "terminated"):
            if tuple(values[name].shape) != (size,):
                raise BatchError(f"batch.{name}: expected shape ({size},), got "
                                 f"{tuple(values[name].shape)}")
        action = values["action"]
        if action.dtype == torch.bool or action.is_floating_point() or action.is_complex():
            raise BatchError(f"batch.action: expected an integer dtype (int64), got {action.dtype}")
        reward = values["reward"]
        if not reward.is_floating_point():
            raise BatchError(f"batch.reward: expected a float dtype (float32), got {reward.dtype}")
        terminated = values["terminated"]
        if terminated.dtype != torch.bool and not terminated.is_floating_point():
            raise BatchError(f"batch.terminated: expected bool (or float 0/1), got {terminated.dtype}")
        if action.device.type == "cpu":
            low, high = int(action.min()), int(action.max())
            if low < 0 or high >= self.num_actions:
                raise BatchError(f"batch.action: expected values in [0, {self.num_actions}), "
                                 f"got values in [{low}, {high}]")
        if terminated.is_floating_point() and terminated.device.type == "cpu":
            if not bool(((terminated == 0) | (terminated == 1)).all()):
                raise BatchError("batch.terminated: expected only 0 and 1, got other values")
        discount = self._optional(batch, "discount", size, high=1.0)
        if discount is None:
            discount = one_step_discount(terminated, self.gamma)
        weight = self._optional(batch, "weight", size, high=None)
        if weight is None:
            if self._ones is None or self._ones.shape[0] != size:
                self._ones = torch.ones(size, dtype=torch.float32, device=self.device)
            weight = self._ones
        values.update(action=action.to(torch.int64), reward=reward.to(torch.float32),
                      discount=discount, weight=weight)
        frames = window_of(batch.obs, batch.next_obs)
        if frames is not None and self.device.type == "cuda":
            # A host window batch: copy its k + 1 frames once, not obs and next_obs apart.
            frames_t = torch.from_numpy(frames).to(self.device, non_blocking=True)
            values.update(obs=frames_t[:, :-1], next_obs=frames_t[:, 1:])
        return {name: values[name].to(self.device, non_blocking=True) for name in UPDATE_INPUTS}

    def _optional(self, batch, name: str, size: int, *, high: float | None) -> torch.Tensor | None:
        """A float field of ``OPTIONAL_FIELDS`` as float32 ``(B,)``, or None when absent."""
        value = getattr(batch, name, None)
        if value is None:
            return None
        value = _to_tensor(name, value)
        if tuple(value.shape) != (size,):
            raise BatchError(f"batch.{name}: expected shape ({size},), got {tuple(value.shape)}")
        if not value.is_floating_point():
            raise BatchError(f"batch.{name}: expected a float dtype (float32), got {value.dtype}")
        if value.device.type == "cpu":
            bad = ~torch.isfinite(value) | (value < 0)
            if high is not None:
                bad |= value > high
            if bool(bad.any()):
                expected = f"[0, {high}]" if high is not None else "finite values >= 0"
                raise BatchError(f"batch.{name}: expected values in {expected}, got "
                                 f"{value[bad][0].item()!r}")
        return value.to(torch.float32)

    def obs_rows(self, obs) -> int:
        """Check observations handed to ``act`` and return their row count."""
        tensor = _to_tensor("obs", obs)
        self._check_obs("obs", tensor)
        return tensor.shape[0]

    def obs_tensor(self, obs) -> torch.Tensor:
        return _to_tensor("obs", obs).to(self.device, non_blocking=True)
