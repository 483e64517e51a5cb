"""The learner: owns the online and target networks and the optimizer, and runs DQN updates
(both forward passes, the (Double) DQN target, the TD loss, backward, optional global
grad-norm clipping and an Adam step; a hard target copy every ``target_update_interval``).

``compile=True`` compiles the loss once for the fixed batch shape with ``torch.compile``, and
on the CPU the optimizer step too; on CUDA the whole update is captured as one CUDA graph
(``CudaGraphStep``). ``compile=False`` runs the same functions eagerly: the reference.
A non-finite loss raises ``FloatingPointError``: on the CPU before the bad step is applied;
on CUDA, where reading the loss would sync, a device-side flag remembers the first bad update
and is read every ``NONFINITE_CHECK_INTERVAL`` updates, in ``check_finite()`` and in
``state_dict()``, so weights may already have taken up to that many bad steps.
"""

from __future__ import annotations

import copy
import types

import numpy as np
import torch
from torch import nn

from fastdqn.learn.cuda_graph import CudaGraphStep
from fastdqn.errors import ConfigError
from fastdqn.learn.batch_check import UPDATE_INPUTS, BatchChecker
from fastdqn.learn.state_check import check_learner_state
from fastdqn.learn.losses import LOSSES, q_learning_loss
from fastdqn.util.checks import check_int, check_number, fail, parse_device

NONFINITE_CHECK_INTERVAL = 100
"""On CUDA, how many updates may pass between reads of the non-finite-loss flag."""


def _own_code(fn):
    """A copy of ``fn`` with its own code object.

    Dynamo caches compiled graphs per code object (with a recompile limit); giving each
    learner its own copy keeps learners in one process from evicting each other's graphs.
    """
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _plain_copy(value):
    """A deep copy whose tensors are plain clones: torch.compile tags the optimizer's state
    tensors with Python attributes, which ``deepcopy`` would carry into checkpoints."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return type(value)((k, _plain_copy(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_copy(v) for v in value)
    return copy.deepcopy(value)


class Learner:
    """Double DQN (or DQN) updates with Adam and a hard target copy every C updates."""

    def __init__(self, q_network: nn.Module, *, lr: float = 1e-4, gamma: float = 0.99,
                 target_update_interval: int = 1000, loss: str = "mse", max_grad_norm: float | None = None,
                 adam_eps: float = 1e-8, double_dqn: bool = True, compile: bool = True,
                 device: str | torch.device = "cpu", batch_size: int | None = None, seed: int | None = None) -> None:
        if not isinstance(q_network, nn.Module):
            raise TypeError(f"q_network: expected a torch.nn.Module, got {type(q_network).__name__}")
        num_actions = check_int("q_network.num_actions", getattr(q_network, "num_actions", None),
                                fix="use NatureCNN/MLP or set num_actions on your module")
        check_number("lr", lr, 0, low_open=True, fix="pass e.g. lr=1e-4")
        check_number("gamma", gamma, 0, 1, fix="pass e.g. gamma=0.99")
        check_int("target_update_interval", target_update_interval, why=" (gradient updates between target copies)",
                  fix="pass e.g. target_update_interval=1000")
        if loss not in LOSSES:
            fail("loss", f"one of {LOSSES}", loss, "pick 'mse' or 'huber'")
        if max_grad_norm is not None:
            check_number("max_grad_norm", max_grad_norm, 0, low_open=True, fix="pass None to switch clipping off")
        check_number("adam_eps", adam_eps, 0, low_open=True, fix="pass e.g. adam_eps=1e-8")
        if batch_size is not None:
            check_int("batch_size", batch_size, fix="pass the replay batch size, or None to fix it at the first update")
        self.device = parse_device(device)
        self.num_actions = num_actions
        self.gamma = float(gamma)
        self.loss = loss
        self.double_dqn = bool(double_dqn)
        self.target_update_interval = target_update_interval
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.compiled = bool(compile)
        self.num_updates = 0

        self.online = q_network.to(self.device)
        if self.compiled and self.device.type == "cpu":
            # Inductor runs CPU convolutions channels-last; storing the conv weights that way
            # saves re-laying them out (and their gradients) on every update. Same values.
            self.online.to(memory_format=torch.channels_last)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self._params = list(self.online.parameters())
        self._online_tensors = self._params + list(self.online.buffers())
        self._target_tensors = list(self.target.parameters()) + list(self.target.buffers())

        self._cuda = self.device.type == "cuda"
        self._use_graph = self._cuda and self.compiled
        # A captured optimizer step needs its step counters on the device (capturable).
        adam_kwargs = {"capturable": True, "fused": True} if self._use_graph else {}
        # Compiled steps read lr from a tensor: a Python float would be baked into the graph
        # (a recompile per change on the CPU, a silently stale lr in a CUDA graph).
        lr_dtype = torch.float32 if self._cuda else torch.float64
        self._lr_t = torch.tensor(float(lr), dtype=lr_dtype, device=self.device) if self.compiled else None
        self.optimizer = torch.optim.Adam(self._params, lr=self._lr_t if self.compiled else lr,
                                          eps=adam_eps, **adam_kwargs)

        self._checker = BatchChecker(obs_shape=getattr(q_network, "obs_shape", None),
                                     obs_dtype=getattr(q_network, "obs_dtype", None), num_actions=num_actions,
                                     batch_size=batch_size, device=self.device, gamma=self.gamma)
        self._rng = np.random.default_rng(seed)

        # Device-side record of the first update whose loss was not finite (-1: none yet).
        self._count_t = torch.zeros((), dtype=torch.int64, device=self.device)
        self._first_bad_t = torch.full((), -1, dtype=torch.int64, device=self.device)

        loss_fn = _own_code(q_learning_loss)
        step_fn = _own_code(Learner._apply_gradients)
        self._loss_fn = torch.compile(loss_fn, fullgraph=True, dynamic=False) if compile else loss_fn
        # Inside a CUDA graph the fused Adam kernels cost no launches; compiling the step
        # pays off on the CPU, where it fuses Adam's elementwise passes into one loop.
        if compile and not self._use_graph:
            step_fn = torch.compile(step_fn, dynamic=False)
        self._step_fn = types.MethodType(step_fn, self)

        self._graph = CudaGraphStep(self._graph_body, self._tracked_tensors, self.device) \
            if self._use_graph else None

    def update(self, batch) -> dict[str, torch.Tensor]:
        """One gradient update on ``batch``; returns ``{"td_loss", "q_values", "td_error"}``.

        ``batch`` has ``obs, action, reward, next_obs, terminated`` and optionally ``discount``
        (default ``gamma * (1 - terminated)``) and ``weight`` (importance weights; the loss is
        ``sum_i w_i * l_i / B``). ``td_loss`` and ``q_values`` (mean online Q of the taken
        actions) are 0-d tensors, ``td_error`` is ``|target - Q|`` ``(B,)`` on the learner's
        device. ``update`` itself does not sync with a CUDA device; ``float()`` of a metric does.
        """
        inputs = self._checker(batch)
        self._adopt_lr()
        if self._graph is not None:
            loss, q_mean, td_error = self._graph(*inputs.values())
        else:
            loss, q_mean, td_error = self._step(inputs)
        self.num_updates += 1
        if self.num_updates % self.target_update_interval == 0:
            self.sync_target()
        if self._cuda and self.num_updates % NONFINITE_CHECK_INTERVAL == 0:
            self.check_finite()
        return {"td_loss": loss, "q_values": q_mean, "td_error": td_error}

    def _step(self, inputs: dict[str, torch.Tensor]):
        """The update itself: eager or compiled, or the body a CUDA graph captures."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, q_mean, td_error = self._loss_fn(self.online, self.target, loss=self.loss, double_dqn=self.double_dqn,
                                               **inputs)
        if not self._cuda and not torch.isfinite(loss):
            # Checked before the step, so the bad update is never applied.
            raise FloatingPointError(f"update {self.num_updates + 1}: td_loss is {float(loss.detach())}; check "
                                     "rewards and observations for NaN/inf, or lower lr")
        loss.backward()
        self._step_fn(loss.detach())
        return loss.detach(), q_mean, td_error

    def _apply_gradients(self, loss: torch.Tensor) -> None:
        """Clip, take the Adam step and, on CUDA, note a non-finite loss in the device flag."""
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
        self.optimizer.step()
        if self._cuda:
            self._count_t.add_(1)
            bad = torch.logical_and(~torch.isfinite(loss), self._first_bad_t < 0)
            self._first_bad_t.copy_(torch.where(bad, self._count_t, self._first_bad_t))

    def set_lr(self, lr: float) -> None:
        """Change Adam's learning rate (for schedules); takes effect at the next update."""
        self.optimizer.param_groups[0]["lr"] = check_number("lr", lr, 0, low_open=True)
        self._adopt_lr()

    def _adopt_lr(self) -> None:
        """Move an lr written into ``optimizer.param_groups`` into the lr tensor compiled steps read.

        Callers may set ``param_groups[0]["lr"]`` to a float directly (as schedules do); this
        is one identity check per update, and never syncs when a float was written.
        """
        group = self.optimizer.param_groups[0]
        if self._lr_t is None:
            if isinstance(group["lr"], torch.Tensor):  # a state saved by a compiled learner
                group["lr"] = float(group["lr"])
        elif group["lr"] is not self._lr_t:
            self._lr_t.fill_(float(group["lr"]))
            group["lr"] = self._lr_t

    def _graph_body(self, *inputs: torch.Tensor):
        return self._step(dict(zip(UPDATE_INPUTS, inputs)))

    def _tracked_tensors(self):
        yield from self._online_tensors
        yield self._count_t
        yield self._first_bad_t
        for state in self.optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor):
                    yield value

    @torch.no_grad()
    def sync_target(self) -> None:
        """Copy the online network into the target network (one fused in-place copy)."""
        torch._foreach_copy_(self._target_tensors, self._online_tensors)

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` if any update so far had a non-finite loss (syncs on CUDA)."""
        first_bad = int(self._first_bad_t)
        if first_bad >= 0:
            raise FloatingPointError(f"update {first_bad}: td_loss was not finite (found at update "
                                     f"{self.num_updates}); check rewards and observations for NaN/inf, or lower lr")

    def act(self, obs, epsilon: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """Epsilon-greedy actions, NumPy int64 ``(n,)``, one per row of ``obs`` (no forward pass at
        ``epsilon >= 1``). Draws come from ``rng``, by default the learner's own seeded generator
        (saved in checkpoints); evaluation passes its own so as not to shift the training run's."""
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating)) \
                or not 0.0 <= epsilon or np.isnan(epsilon):
            raise ConfigError(f"epsilon: expected a number >= 0, got {epsilon!r}")
        n = self._checker.obs_rows(obs)
        return epsilon_greedy(lambda: self._greedy(obs), n, self.num_actions, epsilon,
                              self._rng if rng is None else rng)

    @torch.inference_mode()
    def _greedy(self, obs) -> np.ndarray:
        return self.online(self._checker.obs_tensor(obs)).argmax(dim=1).cpu().numpy()

    def state_dict(self) -> dict:
        """Networks, optimizer, update count and RNG state (copies, safe to keep)."""
        if self._cuda:
            self.check_finite()
        return _plain_copy({"online": self.online.state_dict(), "target": self.target.state_dict(),
                            "optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates,
                            "rng": self._rng.bit_generator.state})

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; training then continues exactly as it would have.

        Every field is checked first (``fastdqn.learn.state_check``): a bad one raises
        ``CheckpointError`` and changes nothing."""
        networks = {"online": self.online.state_dict(), "target": self.target.state_dict()}
        check_learner_state(state, networks=networks, optimizer=self.optimizer)
        with torch.no_grad():
            self.online.load_state_dict(state["online"])
            self.target.load_state_dict(state["target"])
        # Optimizer.load_state_dict keeps the given tensors; copy so the caller's dict stays apart.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._adopt_lr()
        self.num_updates = int(state["num_updates"])
        self._rng.bit_generator.state = state["rng"]
        self._count_t.fill_(self.num_updates)
        self._first_bad_t.fill_(-1)
        # The captured graph points at the old optimizer state tensors; capture again.
        if self._graph is not None:
            self._graph.reset()


def epsilon_greedy(greedy, n: int, num_actions: int, epsilon: float,
                   rng: np.random.Generator) -> np.ndarray:
    """``n`` actions: each row random with probability ``epsilon``, else ``greedy()``'s.

    Draws ``n`` floats then ``n`` actions from ``rng`` (only ``n`` actions when
    ``epsilon >= 1``, and then ``greedy`` is not called: no forward pass).
    """
    if epsilon >= 1.0:
        return rng.integers(num_actions, size=n, dtype=np.int64)
    explore = rng.random(n) < epsilon
    random_actions = rng.integers(num_actions, size=n, dtype=np.int64)
    return np.where(explore, random_actions, greedy())

