"""The DQN update math as pure functions of tensors.

These functions hold no state and read no Python values that change between calls, so
``torch.compile`` traces them once for a fixed batch shape. ``B`` is the batch size and
``A`` the number of actions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("mse", "huber")


def double_dqn_target(
    next_q_online: torch.Tensor,  # (B, A) online network at s'
    next_q_target: torch.Tensor,  # (B, A) target network at s'
    reward: torch.Tensor,  # (B,) float32
    terminated: torch.Tensor,  # (B,) float32, 1.0 where the episode ended for real
    gamma: float,
) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a))`` (van Hasselt 2016).

    Truncated transitions are not ``terminated`` and so bootstrap.
    """
    best = next_q_online.argmax(dim=1, keepdim=True)  # (B, 1)
    next_value = next_q_target.gather(1, best).squeeze(1)  # (B,)
    return reward + gamma * (1.0 - terminated) * next_value  # (B,)


def dqn_target(
    next_q_target: torch.Tensor,  # (B, A)
    reward: torch.Tensor,  # (B,)
    terminated: torch.Tensor,  # (B,)
    gamma: float,
) -> torch.Tensor:
    """The Nature DQN target ``r + gamma * (1 - terminated) * max_a Q_target(s', a)``."""
    next_value = next_q_target.max(dim=1).values  # (B,)
    return reward + gamma * (1.0 - terminated) * next_value  # (B,)


def td_loss(q_taken: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean TD loss over the batch: squared error (``"mse"``) or Huber with delta 1 (``"huber"``).

    ``q_taken`` and ``target`` are ``(B,)``; the result is a scalar.
    """
    if loss == "mse":
        return F.mse_loss(q_taken, target)
    return F.huber_loss(q_taken, target, delta=1.0)


def q_learning_loss(
    online: nn.Module,
    target: nn.Module,
    obs: torch.Tensor,  # (B, *obs_shape)
    action: torch.Tensor,  # (B,) int64
    reward: torch.Tensor,  # (B,) float32
    next_obs: torch.Tensor,  # (B, *obs_shape)
    terminated: torch.Tensor,  # (B,) float32
    gamma: float,
    loss: str,
    double_dqn: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both forward passes, the target and the loss; returns ``(loss, mean Q of the taken actions)``.

    Only the online network at ``s`` carries gradients; the target side runs without them.
    """
    q = online(obs)  # (B, A)
    q_taken = q.gather(1, action.unsqueeze(1)).squeeze(1)  # (B,)
    with torch.no_grad():
        next_q_target = target(next_obs)  # (B, A)
        if double_dqn:
            y = double_dqn_target(online(next_obs), next_q_target, reward, terminated, gamma)
        else:
            y = dqn_target(next_q_target, reward, terminated, gamma)
    return td_loss(q_taken, y, loss), q_taken.detach().mean()
