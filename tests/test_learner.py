"""Learner: targets and losses against NumPy, compiled against eager and plain PyTorch,
the target-copy schedule, recompiles, non-finite losses, acting, checkpoints, bad input."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fastdqn import MLP, CheckpointError, ConfigError, Learner, NatureCNN
from fastdqn.errors import BatchError
from frame_batches import frame_batch

OBS_DIM, NUM_ACTIONS, B = 4, 3, 8


def make_batch(rng, size=B, obs_dim=OBS_DIM, num_actions=NUM_ACTIONS, reward_scale=1.0):
    return SimpleNamespace(
        obs=rng.standard_normal((size, obs_dim)).astype(np.float32),
        next_obs=rng.standard_normal((size, obs_dim)).astype(np.float32),
        action=rng.integers(0, num_actions, size).astype(np.int64),
        reward=(reward_scale * rng.standard_normal(size)).astype(np.float32),
        terminated=rng.random(size) < 0.3,
    )


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return MLP(OBS_DIM, NUM_ACTIONS, hidden=(16, 16))


# ----------------------------------------------------------------- NumPy reference


def _np_mlp(params, x):
    """Forward pass of a one-hidden-layer MLP in float64 NumPy."""
    w1, b1, w2, b2 = params
    return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2


def _np_params(module):
    return [p.detach().double().numpy().copy() for p in module.parameters()]


@pytest.mark.parametrize("double_dqn", [True, False])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_target_loss_and_gradient_match_numpy(loss, double_dqn):
    torch.manual_seed(3)
    learner = Learner(MLP(3, 2, hidden=(5,)), gamma=0.9, loss=loss, double_dqn=double_dqn,
                      compile=False, target_update_interval=1000)
    with torch.no_grad():  # target weights differ from online so argmax and value sources matter
        for p in learner.target.parameters():
            p.copy_(torch.randn_like(p))
    online, target = _np_params(learner.online), _np_params(learner.target)
    rng = np.random.default_rng(7)
    batch = SimpleNamespace(
        obs=rng.standard_normal((6, 3)).astype(np.float32),
        next_obs=rng.standard_normal((6, 3)).astype(np.float32),
        action=np.array([0, 1, 1, 0, 1, 0]),
        reward=np.array([0.1, 3.0, -2.5, 0.2, 0.0, 1.5], np.float32),
        # Rows 2 and 4 are truncated (time limit): not terminated, so they bootstrap.
        terminated=np.array([False, True, False, True, False, False]),
        truncated=np.array([False, False, True, False, True, False]),
    )
    q = _np_mlp(online, batch.obs.astype(np.float64))
    q_taken = q[np.arange(6), batch.action]
    next_online = _np_mlp(online, batch.next_obs.astype(np.float64))
    next_target = _np_mlp(target, batch.next_obs.astype(np.float64))
    assert (next_online.argmax(1) != next_target.argmax(1)).any(), "pick weights where DDQN differs"
    if double_dqn:
        next_value = next_target[np.arange(6), next_online.argmax(1)]
    else:
        next_value = next_target.max(1)
    y = batch.reward + 0.9 * (1.0 - batch.terminated) * next_value
    d = q_taken - y
    if loss == "mse":
        expected_loss, dloss_dq = np.mean(d**2), 2.0 * d / 6
    else:
        assert (np.abs(d) < 1).any() and (np.abs(d) > 1).any(), "cover both Huber branches"
        expected_loss = np.mean(np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5))
        dloss_dq = np.clip(d, -1.0, 1.0) / 6
    expected_bias_grad = np.bincount(batch.action, weights=dloss_dq, minlength=2)

    metrics = learner.update(batch)

    assert float(metrics["td_loss"]) == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
    assert float(metrics["q_values"]) == pytest.approx(q_taken.mean(), rel=1e-5, abs=1e-6)
    out_bias = list(learner.online.parameters())[-1]
    np.testing.assert_allclose(out_bias.grad.numpy(), expected_bias_grad, rtol=1e-5, atol=1e-6)


def test_terminated_as_float_is_the_same_as_bool():
    batch = make_batch(np.random.default_rng(0))
    float_batch = SimpleNamespace(**vars(batch))
    float_batch.terminated = batch.terminated.astype(np.float32)
    a = Learner(tiny_mlp(), compile=False)
    b = Learner(tiny_mlp(), compile=False)
    assert float(a.update(batch)["td_loss"]) == float(b.update(float_batch)["td_loss"])


# ------------------------------------------------- compiled vs eager vs plain PyTorch

CONFIG = dict(lr=1e-2, gamma=0.9, target_update_interval=3, loss="huber", max_grad_norm=0.5)


@pytest.fixture(scope="module")
def compiled_once():
    """One compiled learner (compiling costs seconds on a CPU) and its state after two updates."""
    learner = Learner(tiny_mlp(), compile=True, seed=0, batch_size=B, **CONFIG)
    rng = np.random.default_rng(100)
    for _ in range(2):
        learner.update(make_batch(rng, reward_scale=5.0))
    return learner, learner.state_dict()


@pytest.fixture
def compiled(compiled_once):
    """The compiled learner reset to its saved state for each test, so no test sees another's
    updates: networks, Adam state and lr, update count and RNG all come from the state."""
    learner, state = compiled_once
    learner.load_state_dict(state)
    return learner


def _plain_pytorch_updates(state, batches, num_updates, gamma, lr, interval, max_grad_norm):
    """Reference: the textbook Double DQN step in plain PyTorch, with Huber loss and clipping."""
    online = tiny_mlp()
    online.load_state_dict(state["online"])
    target = tiny_mlp()
    target.load_state_dict(state["target"])
    opt = torch.optim.Adam(online.parameters(), lr=lr)
    opt.load_state_dict(copy.deepcopy(state["optimizer"]))
    losses = []
    for i, batch in enumerate(batches):
        opt.param_groups[0]["lr"] = lr * (1.0 - 0.1 * i)
        obs, next_obs = torch.from_numpy(batch.obs), torch.from_numpy(batch.next_obs)
        action = torch.from_numpy(batch.action)
        q = online(obs)[torch.arange(len(action)), action]
        with torch.no_grad():
            best = online(next_obs).argmax(1)
            next_v = target(next_obs)[torch.arange(len(action)), best]
            done = torch.from_numpy(batch.terminated).float()
            y = torch.from_numpy(batch.reward) + gamma * (1 - done) * next_v
        loss = torch.nn.functional.smooth_l1_loss(q, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), max_grad_norm)
        opt.step()
        num_updates += 1
        if num_updates % interval == 0:
            target.load_state_dict(online.state_dict())
        losses.append(loss.item())
    return online, target, losses


def test_compiled_equals_eager_and_plain_pytorch(compiled):
    state = compiled.state_dict()
    eager = Learner(tiny_mlp(seed=99), compile=False, **CONFIG)
    eager.load_state_dict(state)
    rng = np.random.default_rng(5)
    batches = [make_batch(rng, reward_scale=5.0) for _ in range(7)]
    ref_online, ref_target, ref_losses = _plain_pytorch_updates(
        state, batches, state["num_updates"], CONFIG["gamma"], CONFIG["lr"],
        CONFIG["target_update_interval"], CONFIG["max_grad_norm"])
    compiled_losses, eager_losses = [], []
    for i, batch in enumerate(batches):
        # A schedule writes the lr straight into the param group, as the trainer does.
        for learner, losses in ((compiled, compiled_losses), (eager, eager_losses)):
            learner.optimizer.param_groups[0]["lr"] = CONFIG["lr"] * (1.0 - 0.1 * i)
            losses.append(float(learner.update(batch)["td_loss"]))
    np.testing.assert_allclose(eager_losses, ref_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled_losses, ref_losses, rtol=1e-4, atol=1e-5)
    for learner, tol in ((eager, 1e-6), (compiled, 1e-5)):
        for mine, ref in ((learner.online, ref_online), (learner.target, ref_target)):
            for p, r in zip(mine.parameters(), ref.parameters()):
                torch.testing.assert_close(p.detach(), r.detach(), rtol=tol, atol=tol)


def test_no_recompiles_in_steady_state(compiled):
    rng = np.random.default_rng(11)
    batches = [make_batch(rng) for _ in range(5)]
    batches[1].terminated = batches[1].terminated.astype(np.float32)
    batches[2] = SimpleNamespace(**{k: torch.from_numpy(v) for k, v in vars(batches[2]).items()})
    compiled.update(make_batch(rng))  # warm-up: the optimizer step compiles per Adam instance
    n = compiled.num_updates
    # Any recompile (a new lr, a float terminated field, tensors instead of arrays) raises.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i, batch in enumerate(batches):
            compiled.set_lr(CONFIG["lr"] / (i + 1))
            compiled.update(batch)
    assert compiled.num_updates == n + len(batches)


def test_compiled_rejects_a_batch_of_another_size(compiled):
    with pytest.raises(BatchError, match="batch size 8"):
        compiled.update(make_batch(np.random.default_rng(0), size=B + 1))


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_nonfinite_loss_raises_before_the_step(mode, compiled):
    learner = compiled if mode == "compiled" else Learner(tiny_mlp(), compile=False)
    learner.update(make_batch(np.random.default_rng(1)))
    before = [p.detach().clone() for p in learner.online.parameters()]
    n = learner.num_updates
    batch = make_batch(np.random.default_rng(2))
    batch.reward[3] = np.nan
    with pytest.raises(FloatingPointError, match=f"update {n + 1}"):
        learner.update(batch)
    assert learner.num_updates == n
    for p, q in zip(learner.online.parameters(), before):
        assert torch.equal(p.detach(), q)


def test_compiled_nature_cnn_equals_eager():
    torch.manual_seed(0)
    net = NatureCNN(num_actions=4)
    # A large Adam eps (as in Dopamine, 0.01/32) keeps Adam from blowing float rounding in
    # near-zero gradients up to a full lr-sized step.
    config = dict(lr=1e-3, adam_eps=3e-4, target_update_interval=2)
    eager = Learner(copy.deepcopy(net), compile=False, **config)
    comp = Learner(net, compile=True, **config)
    rng = np.random.default_rng(0)
    for _ in range(3):
        batch = frame_batch(rng, 4, terminated=np.array([False, True, False, False]))
        le, lc = eager.update(batch), comp.update(batch)
        assert float(lc["td_loss"]) == pytest.approx(float(le["td_loss"]), rel=1e-4, abs=1e-6)
    for net in ("online", "target"):
        for p, q in zip(getattr(comp, net).parameters(), getattr(eager, net).parameters()):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- target-copy schedule


def test_target_copied_exactly_every_c_updates():
    learner = Learner(tiny_mlp(), compile=False, lr=1e-2, target_update_interval=3)
    rng = np.random.default_rng(0)
    previous = [p.detach().clone() for p in learner.target.parameters()]
    for n in range(1, 11):
        learner.update(make_batch(rng))
        assert learner.num_updates == n
        target = [p.detach().clone() for p in learner.target.parameters()]
        online = [p.detach() for p in learner.online.parameters()]
        same_as_before = all(torch.equal(a, b) for a, b in zip(target, previous))
        same_as_online = all(torch.equal(a, b) for a, b in zip(target, online))
        if n % 3 == 0:
            assert same_as_online and not same_as_before, f"no copy at update {n}"
        else:
            assert same_as_before and not same_as_online, f"target moved at update {n}"
        previous = target


def test_gradients_reach_every_online_parameter_and_no_target_parameter():
    learner = Learner(tiny_mlp(), compile=False)
    learner.update(make_batch(np.random.default_rng(0), reward_scale=5.0))
    for name, p in learner.online.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, p in learner.target.named_parameters():
        assert p.grad is None and not p.requires_grad, name


@pytest.mark.parametrize("as_tensor", [False, True])
def test_input_batch_is_not_modified(as_tensor):
    batch = make_batch(np.random.default_rng(0))
    if as_tensor:
        batch = SimpleNamespace(**{k: torch.from_numpy(v) for k, v in vars(batch).items()})
    saved = {k: np.array(np.asarray(v)) for k, v in vars(batch).items()}
    learner = Learner(tiny_mlp(), compile=False)
    learner.update(batch)
    learner.act(batch.obs, 0.0)
    for k, v in vars(batch).items():
        np.testing.assert_array_equal(np.asarray(v), saved[k], err_msg=k)


# --------------------------------------------------------------------------- act


class _Exploding(torch.nn.Module):
    num_actions = 5
    obs_shape = (2,)
    obs_dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        raise AssertionError("the network must not run at epsilon >= 1")


def test_act_with_epsilon_one_skips_the_network():
    learner = Learner(_Exploding(), compile=False, seed=0)
    actions = learner.act(np.zeros((5000, 2), np.float32), 1.0)
    assert actions.dtype == np.int64 and actions.shape == (5000,)
    # Uniform over the 5 actions: 1000 each, standard deviation about 28; 5 of them allow 140.
    counts = np.bincount(actions, minlength=5)
    assert len(counts) == 5 and np.all(np.abs(counts - 1000) < 140), counts


def test_act_greedy_and_epsilon_greedy():
    learner = Learner(tiny_mlp(), compile=False, seed=0)
    obs = np.random.default_rng(0).standard_normal((2000, OBS_DIM)).astype(np.float32)
    greedy = _np_mlp3(_np_params(learner.online), obs.astype(np.float64)).argmax(1)
    got = learner.act(obs, 0.0)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, greedy)
    mixed = learner.act(obs, 0.5)
    # Half the rows explore, and a third of those pick the greedy action anyway.
    assert 0.25 < np.mean(mixed != greedy) < 0.42
    again = Learner(tiny_mlp(), compile=False, seed=0)
    again.act(obs, 0.0)
    np.testing.assert_array_equal(again.act(obs, 0.5), mixed)


def _np_mlp3(params, x):
    """Forward pass of a two-hidden-layer MLP in float64 NumPy."""
    w1, b1, w2, b2, w3, b3 = params
    h = np.maximum(x @ w1.T + b1, 0.0)
    h = np.maximum(h @ w2.T + b2, 0.0)
    return h @ w3.T + b3


# -------------------------------------------------------------------- checkpoints


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    batches = [make_batch(rng) for _ in range(8)]
    a = Learner(tiny_mlp(), compile=False, lr=1e-2, target_update_interval=3, seed=1)
    for batch in batches[:4]:
        a.update(batch)
    a.act(batches[0].obs, 0.3)
    state = a.state_dict()
    b = Learner(tiny_mlp(seed=5), compile=False, lr=1e-2, target_update_interval=3, seed=2)
    b.load_state_dict(state)
    assert b.num_updates == 4
    for batch in batches[4:]:
        assert float(a.update(batch)["td_loss"]) == float(b.update(batch)["td_loss"])
        np.testing.assert_array_equal(a.act(batch.obs, 0.5), b.act(batch.obs, 0.5))
    for net in ("online", "target"):
        for p, q in zip(getattr(a, net).parameters(), getattr(b, net).parameters()):
            assert torch.equal(p, q)
    # The saved state is a copy: training on did not change it.
    assert state["num_updates"] == 4
    assert not torch.equal(state["online"]["net.0.weight"], a.online.net[0].weight)


def test_load_state_dict_from_another_network_shape():
    small = Learner(MLP(OBS_DIM, NUM_ACTIONS, hidden=(8,)), compile=False)
    big = Learner(tiny_mlp(), compile=False)
    with pytest.raises(CheckpointError, match="expected"):
        big.load_state_dict(small.state_dict())
    wide = Learner(MLP(OBS_DIM, NUM_ACTIONS, hidden=(32, 16)), compile=False)
    with pytest.raises(CheckpointError, match=r"net\.0\.weight.*\(16, 4\).*\(32, 4\)"):
        big.load_state_dict(wide.state_dict())
    with pytest.raises(CheckpointError, match="missing keys"):
        big.load_state_dict({"online": {}})


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=0.0), "lr"),
        (dict(lr=-1e-3), "lr"),
        (dict(gamma=1.5), "gamma"),
        (dict(gamma=-0.1), "gamma"),
        (dict(loss="l1"), "loss"),
        (dict(target_update_interval=0), "target_update_interval"),
        (dict(target_update_interval=2.5), "target_update_interval"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(adam_eps=0.0), "adam_eps"),
        (dict(batch_size=0), "batch_size"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_config(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        Learner(tiny_mlp(), compile=False, **kwargs)


def test_bad_network():
    with pytest.raises(TypeError, match="q_network"):
        Learner("not a network")
    with pytest.raises(ConfigError, match="num_actions"):
        Learner(torch.nn.Linear(4, 2))


def _broken(field, value):
    batch = make_batch(np.random.default_rng(0))
    setattr(batch, field, value(getattr(batch, field)))
    return batch


@pytest.mark.parametrize(
    "batch, pattern",
    [
        (_broken("obs", lambda v: v.astype(np.float64)), "obs: expected dtype torch.float32"),
        (_broken("next_obs", lambda v: v[:, :3]), r"next_obs: expected shape \(B, 4\)"),
        (_broken("action", lambda v: v + NUM_ACTIONS), r"action: expected values in \[0, 3\)"),
        (_broken("action", lambda v: v - NUM_ACTIONS), r"action: expected values in \[0, 3\)"),
        (_broken("action", lambda v: v.astype(np.float32)), "action: expected an integer dtype"),
        (_broken("action", lambda v: v[:5]), r"action: expected shape \(8,\)"),
        (_broken("reward", lambda v: v.astype(np.int64)), "reward: expected a float dtype"),
        (_broken("terminated", lambda v: v.astype(np.int32)), "terminated: expected bool"),
        (_broken("terminated", lambda v: np.full(v.shape, 0.5, np.float32)), "terminated: expected only 0 and 1"),
        (_broken("reward", lambda v: list(v)), "reward: expected a NumPy array or torch tensor"),
        (SimpleNamespace(obs=np.zeros((B, OBS_DIM), np.float32)), "without .next_obs"),
    ],
)
def test_bad_batch(batch, pattern):
    learner = Learner(tiny_mlp(), compile=False)
    with pytest.raises(BatchError, match=pattern):
        learner.update(batch)


def test_batch_size_is_fixed_by_the_first_update():
    learner = Learner(tiny_mlp(), compile=False)
    rng = np.random.default_rng(0)
    learner.update(make_batch(rng, size=6))
    with pytest.raises(BatchError, match="expected batch size 6.*got 8"):
        learner.update(make_batch(rng, size=8))


def test_bad_lr_change():
    learner = Learner(tiny_mlp(), compile=False)
    with pytest.raises(ConfigError, match="lr"):
        learner.set_lr(0.0)


def test_bad_act_input():
    learner = Learner(tiny_mlp(), compile=False)
    with pytest.raises(ConfigError, match="epsilon"):
        learner.act(np.zeros((2, OBS_DIM), np.float32), -0.1)
    with pytest.raises(BatchError, match="obs: expected shape"):
        learner.act(np.zeros((2, OBS_DIM + 1), np.float32), 0.0)


# -------------------------------------------------------------------------- CUDA


def test_graph_step_replays_on_its_own_copy_of_the_inputs(monkeypatch):
    """Each call's inputs are copied into tensors the step owns, never adopted: a feeder that
    alternates two batches refills one of them while the other is being learned from."""
    from fastdqn.learn.cuda_graph import CudaGraphStep

    def body(x, y):
        return (x + y,)

    step = CudaGraphStep(body, lambda: [], "cpu")

    def capture():  # a stand-in graph: fixed outputs, rewritten from the fixed inputs per replay
        outputs = body(*step._inputs)
        step._outputs = outputs
        step._graph = SimpleNamespace(replay=lambda: [o.copy_(r) for o, r in zip(outputs, body(*step._inputs))])

    monkeypatch.setattr(step, "_capture", capture)
    a, b = (torch.ones(3), torch.full((3,), 2.0)), (torch.full((3,), 5.0), torch.zeros(3))
    assert step(*a)[0].tolist() == [3.0] * 3
    assert step(*b)[0].tolist() == [5.0] * 3
    assert a[0].tolist() == [1.0] * 3 and a[1].tolist() == [2.0] * 3  # b was not copied over a
    assert step(*a)[0].tolist() == [3.0] * 3



@pytest.mark.cuda
def test_cuda_graph_update_equals_cpu_eager():
    rng = np.random.default_rng(0)
    batches = [make_batch(rng, reward_scale=5.0) for _ in range(6)]
    cpu = Learner(tiny_mlp(), compile=False, **CONFIG)
    gpu = Learner(tiny_mlp(), compile=True, device="cuda", **CONFIG)
    metrics = []
    for batch in batches:
        lc = float(cpu.update(batch)["td_loss"])
        metrics.append(gpu.update(batch))
        assert float(metrics[-1]["td_loss"]) == pytest.approx(lc, rel=1e-4, abs=1e-5)
    # Metrics handed out earlier are not overwritten by later graph replays.
    assert float(metrics[0]["td_loss"]) != float(metrics[-1]["td_loss"])
    for p, q in zip(gpu.online.parameters(), cpu.online.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-5)
    for p, q in zip(gpu.target.parameters(), cpu.target.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_nonfinite_loss_is_reported_with_its_update(compile):
    learner = Learner(tiny_mlp(), compile=compile, device="cuda")
    rng = np.random.default_rng(0)
    learner.update(make_batch(rng))
    bad = make_batch(rng)
    bad.reward[0] = np.inf
    learner.update(bad)
    learner.update(make_batch(rng))
    with pytest.raises(FloatingPointError, match="update 2"):
        learner.check_finite()


def test_act_with_own_rng_leaves_the_learner_generator_alone():
    obs = np.random.default_rng(1).standard_normal((6000, OBS_DIM)).astype(np.float32)
    learner = Learner(tiny_mlp(), compile=False, seed=0)
    untouched = Learner(tiny_mlp(), compile=False, seed=0)
    before = learner.state_dict()["rng"]
    own = learner.act(obs, 0.5, rng=np.random.default_rng(7))
    assert learner.state_dict()["rng"] == before
    # The training draws that follow are the ones a learner that never evaluated makes.
    np.testing.assert_array_equal(learner.act(obs, 0.5), untouched.act(obs, 0.5))
    # The explicit generator decides the draws: the same seed gives the same actions.
    np.testing.assert_array_equal(own, learner.act(obs, 0.5, rng=np.random.default_rng(7)))
    # Epsilon-greedy: half the rows explore uniformly over 3 actions, so 1/3 of rows leave the
    # greedy action (standard deviation about 0.006), and the off-greedy rows spread evenly.
    greedy = learner.act(obs, 0.0)
    off = own != greedy
    assert abs(off.mean() - 1 / 3) < 0.035
    assert abs(np.mean((own[off] - greedy[off]) % NUM_ACTIONS == 1) - 0.5) < 0.05


# ------------------------------------------ n-step discounts, importance weights, TD errors


def _with_discount_and_weight(batch, rng, gamma):
    """The batch an n-step prioritized buffer hands out: per-sample discount and weights."""
    m = rng.integers(1, 4, len(batch.action))  # window lengths 1..3
    out = SimpleNamespace(**vars(batch))
    out.discount = np.where(batch.terminated, 0.0, gamma ** m).astype(np.float32)
    out.weight = rng.uniform(0.1, 1.0, len(batch.action)).astype(np.float32)
    return out


def _plain_weighted_update(online, target, opt, batch):
    """Reference in plain PyTorch: Double DQN with per-sample discount, weighted Huber loss."""
    obs, next_obs = torch.from_numpy(batch.obs), torch.from_numpy(batch.next_obs)
    action = torch.from_numpy(batch.action)
    rows = torch.arange(len(action))
    q = online(obs)[rows, action]
    with torch.no_grad():
        next_v = target(next_obs)[rows, online(next_obs).argmax(1)]
        y = torch.from_numpy(batch.reward) + torch.from_numpy(batch.discount) * next_v
    per_sample = torch.nn.functional.smooth_l1_loss(q, y, reduction="none")
    loss = (torch.from_numpy(batch.weight) * per_sample).sum() / len(action)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(online.parameters(), CONFIG["max_grad_norm"])
    opt.step()
    return loss.item(), (y - q.detach()).abs().numpy()


def test_discount_and_weight_fields_compiled_equals_eager_and_plain_pytorch():
    config = dict(CONFIG, target_update_interval=1000)
    comp = Learner(tiny_mlp(), compile=True, batch_size=B, **config)
    eager = Learner(tiny_mlp(), compile=False, **config)
    ref_online, ref_target = tiny_mlp(), tiny_mlp()
    opt = torch.optim.Adam(ref_online.parameters(), lr=config["lr"])
    rng = np.random.default_rng(21)
    batches = [_with_discount_and_weight(make_batch(rng, reward_scale=5.0), rng, config["gamma"])
               for _ in range(5)]

    def step(batch):
        ref_loss, ref_td = _plain_weighted_update(ref_online, ref_target, opt, batch)
        for learner, tol in ((eager, 1e-5), (comp, 1e-4)):
            metrics = learner.update(batch)
            assert float(metrics["td_loss"]) == pytest.approx(ref_loss, rel=tol, abs=tol)
            assert metrics["td_error"].shape == (B,)
            np.testing.assert_allclose(metrics["td_error"].numpy(), ref_td, rtol=tol, atol=tol)

    step(batches[0])  # compiles (the optimizer step is compiled once per optimizer)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in batches[1:]:
            step(batch)
        for learner, tol in ((eager, 1e-5), (comp, 1e-4)):
            for p, r in zip(learner.online.parameters(), ref_online.parameters()):
                torch.testing.assert_close(p.detach(), r.detach(), rtol=tol, atol=tol)
        # A batch without the optional fields runs through the same compiled update.
        comp.update(make_batch(rng))


def test_default_discount_and_unit_weights_equal_explicit_fields():
    rng = np.random.default_rng(22)
    batch = make_batch(rng, reward_scale=3.0)
    explicit = SimpleNamespace(**vars(batch))
    explicit.discount = np.where(batch.terminated, 0.0, 0.9).astype(np.float32)
    explicit.weight = np.ones(B, np.float32)
    a = Learner(tiny_mlp(), compile=False, gamma=0.9)
    b = Learner(tiny_mlp(), compile=False, gamma=0.9)
    ma, mb = a.update(batch), b.update(explicit)
    assert float(ma["td_loss"]) == pytest.approx(float(mb["td_loss"]), rel=1e-6)
    np.testing.assert_allclose(ma["td_error"].numpy(), mb["td_error"].numpy(), rtol=1e-6)
    # Halving every weight halves the loss.
    explicit.weight = np.full(B, 0.5, np.float32)
    c = Learner(tiny_mlp(), compile=False, gamma=0.9)
    assert float(c.update(explicit)["td_loss"]) == pytest.approx(0.5 * float(ma["td_loss"]), rel=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("discount", np.full(B, 1.5, np.float32), r"discount: expected values in \[0, 1.0\]"),
    ("discount", np.full(B, 0.9, np.float64)[:-1], r"discount: expected shape"),
    ("weight", np.full(B, -0.1, np.float32), r"weight: expected values in finite values >= 0"),
    ("weight", np.full(B, np.nan, np.float32), r"weight: expected values"),
    ("weight", np.ones(B, np.int64), r"weight: expected a float dtype"),
])
def test_bad_optional_fields_are_refused(field, value, message):
    batch = make_batch(np.random.default_rng(23))
    setattr(batch, field, value)
    learner = Learner(tiny_mlp(), compile=False)
    before = [p.detach().clone() for p in learner.online.parameters()]
    with pytest.raises(BatchError, match=message):
        learner.update(batch)
    assert learner.num_updates == 0
    assert all(torch.equal(p.detach(), q) for p, q in zip(learner.online.parameters(), before))


def test_state_dict_tensors_are_plain_where_compile_tagged_the_optimizer_state(tmp_path):
    """torch.compile sets a Python attribute on Adam's state tensors; a checkpoint must hold
    plain tensors (its loader allows nothing else to be rebuilt)."""
    learner = Learner(tiny_mlp(), compile=False)
    learner.update(make_batch(np.random.default_rng(0)))
    for state in learner.optimizer.state.values():
        for tensor in state.values():
            tensor._dynamo_static_input_type = "tagged"  # what dynamo does to them
    saved = learner.state_dict()
    tensors = [t for s in saved["optimizer"]["state"].values() for t in s.values()]
    assert tensors and all(type(t) is torch.Tensor and not t.__dict__ for t in tensors)
    path = tmp_path / "state.pt"
    torch.save(saved, path)
    assert "_rebuild_from_type_v2" not in path.read_bytes().decode("latin-1")
