"""The pure loss functions with per-sample discounts and weights against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdqn import MLP
from fastdqn.learn.losses import one_step_discount, q_learning_loss


def _np_params(module):
    return [p.detach().double().numpy().copy() for p in module.parameters()]


def _np_mlp(params, x):
    w1, b1, w2, b2 = params
    return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2


@pytest.mark.parametrize("double_dqn", [True, False])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_weighted_discounted_loss_td_errors_and_gradient_match_numpy(loss, double_dqn):
    torch.manual_seed(11)
    online, target = MLP(3, 2, hidden=(5,)), MLP(3, 2, hidden=(5,))
    rng = np.random.default_rng(12)
    gamma = 0.9
    obs = rng.standard_normal((6, 3)).astype(np.float32)
    next_obs = rng.standard_normal((6, 3)).astype(np.float32)
    action = np.array([0, 1, 1, 0, 1, 0])
    reward = np.array([0.1, 3.0, -2.5, 0.2, 0.0, 1.5], np.float32)
    # Row 1: a termination inside the window (discount 0); row 2: a 2-step window cut by a
    # truncation (gamma**2, bootstraps); row 4: a full 3-step window; the rest one step.
    discount = np.array([gamma, 0.0, gamma**2, gamma, gamma**3, gamma], np.float32)
    weight = np.array([1.0, 0.25, 0.5, 0.75, 0.1, 1.0], np.float32)

    q = _np_mlp(_np_params(online), obs.astype(np.float64))
    q_taken = q[np.arange(6), action]
    next_online = _np_mlp(_np_params(online), next_obs.astype(np.float64))
    next_target = _np_mlp(_np_params(target), next_obs.astype(np.float64))
    assert (next_online.argmax(1) != next_target.argmax(1)).any(), "pick weights where DDQN differs"
    next_value = next_target[np.arange(6), next_online.argmax(1)] if double_dqn else next_target.max(1)
    y = reward + discount.astype(np.float64) * next_value
    d = q_taken - y
    if loss == "mse":
        per_sample, dl_dq = d**2, 2.0 * d
    else:
        assert (np.abs(d) < 1).any() and (np.abs(d) > 1).any(), "cover both Huber branches"
        per_sample, dl_dq = np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5), np.clip(d, -1.0, 1.0)
    expected_loss = np.sum(weight * per_sample) / 6
    expected_bias_grad = np.bincount(action, weights=weight * dl_dq / 6, minlength=2)

    got_loss, got_q, got_td = q_learning_loss(
        online, target, torch.from_numpy(obs), torch.from_numpy(action), torch.from_numpy(reward),
        torch.from_numpy(next_obs), torch.from_numpy(discount), torch.from_numpy(weight), loss, double_dqn)
    got_loss.backward()

    assert float(got_loss.detach()) == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert float(got_q) == pytest.approx(q_taken.mean(), rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(got_td.numpy(), np.abs(d), rtol=1e-5, atol=1e-6)
    assert not got_td.requires_grad
    np.testing.assert_allclose(list(online.parameters())[-1].grad.numpy(), expected_bias_grad,
                               rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in target.parameters())


def test_one_step_discount_stops_only_at_terminations():
    terminated = torch.tensor([False, True, False])
    np.testing.assert_array_equal(one_step_discount(terminated, 0.5).numpy(), np.array([0.5, 0.0, 0.5], np.float32))
    assert one_step_discount(terminated.float(), 0.5).dtype == torch.float32
