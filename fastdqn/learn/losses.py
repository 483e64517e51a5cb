"""The DQN update math as pure functions of tensors (``B`` the batch size, ``A`` the number of
actions), holding no state and reading no Python values that change between calls, so
``torch.compile`` traces them once for a fixed batch shape. Every target is
``reward + discount * next_value`` with a per-sample ``discount`` (``gamma * (1 - terminated)``
for one step, an n-step buffer's ``gamma ** m`` or 0), so mixing them never recompiles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("mse", "huber")


def one_step_discount(terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma * (1 - terminated)`` as float32 ``(B,)``: only a termination stops bootstrapping."""
    return gamma * (1.0 - terminated.to(torch.float32))


def double_dqn_target(
    next_q_online: torch.Tensor,  # (B, A) online network at s'
    next_q_target: torch.Tensor,  # (B, A) target network at s'
    reward: torch.Tensor,  # (B,) float32 (an n-step return for n-step batches)
    discount: torch.Tensor,  # (B,) float32, 0 where the episode ended for real
) -> torch.Tensor:
    """``r + discount * Q_target(s', argmax_a Q_online(s', a))`` (van Hasselt et al. 2016)."""
    best = next_q_online.argmax(dim=1, keepdim=True)  # (B, 1)
    next_value = next_q_target.gather(1, best).squeeze(1)  # (B,)
    return reward + discount * next_value  # (B,)


def dqn_target(
    next_q_target: torch.Tensor,  # (B, A)
    reward: torch.Tensor,  # (B,)
    discount: torch.Tensor,  # (B,)
) -> torch.Tensor:
    """The Nature DQN target ``r + discount * max_a Q_target(s', a)``."""
    next_value = next_q_target.max(dim=1).values  # (B,)
    return reward + discount * next_value  # (B,)


def td_loss(q_taken: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, loss: str) -> torch.Tensor:
    """Weighted mean TD loss ``sum_i w_i * l_i / B``: squared error (``"mse"``) or Huber with
    delta 1 (``"huber"``). With all weights 1 it is the plain mean.

    ``q_taken``, ``target`` and ``weight`` are ``(B,)``; the result is a scalar. Prioritized
    replay passes its importance-sampling weights (Schaul et al. 2016).
    """
    if loss == "mse":
        per_sample = F.mse_loss(q_taken, target, reduction="none")  # (B,)
    else:
        per_sample = F.huber_loss(q_taken, target, delta=1.0, reduction="none")  # (B,)
    return (weight * per_sample).mean()


def q_learning_loss(
    online: nn.Module,
    target: nn.Module,
    obs: torch.Tensor,  # (B, *obs_shape)
    action: torch.Tensor,  # (B,) int64
    reward: torch.Tensor,  # (B,) float32
    next_obs: torch.Tensor,  # (B, *obs_shape)
    discount: torch.Tensor,  # (B,) float32
    weight: torch.Tensor,  # (B,) float32
    loss: str,
    double_dqn: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both forward passes, the target and the loss.

    Returns ``(loss, mean Q of the taken actions, |target - Q| per sample (B,))``; the last
    is what prioritized replay writes back as priorities. Only the online network at ``s``
    carries gradients; the target side runs without them.
    """
    q = online(obs)  # (B, A)
    q_taken = q.gather(1, action.unsqueeze(1)).squeeze(1)  # (B,)
    with torch.no_grad():
        next_q_target = target(next_obs)  # (B, A)
        if double_dqn:
            y = double_dqn_target(online(next_obs), next_q_target, reward, discount)
        else:
            y = dqn_target(next_q_target, reward, discount)
    td_error = (y - q_taken.detach()).abs()  # (B,)
    return td_loss(q_taken, y, weight, loss), q_taken.detach().mean(), td_error
