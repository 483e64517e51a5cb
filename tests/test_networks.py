"""NatureCNN and MLP against plain functional PyTorch / NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastdqn import MLP, ConfigError, NatureCNN


def test_nature_cnn_matches_functional_reference():
    torch.manual_seed(0)
    net = NatureCNN(num_actions=6, frame_stack=4)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    c1, c2, c3 = net.features[0], net.features[2], net.features[4]
    fc, out = net.head[0], net.head[2]
    x = obs.double() / 255.0
    x = F.relu(F.conv2d(x, c1.weight.double(), c1.bias.double(), stride=4))
    x = F.relu(F.conv2d(x, c2.weight.double(), c2.bias.double(), stride=2))
    x = F.relu(F.conv2d(x, c3.weight.double(), c3.bias.double(), stride=1))
    assert x.shape == (3, 64, 7, 7)
    x = F.relu(x.flatten(1) @ fc.weight.double().T + fc.bias.double())
    expected = x @ out.weight.double().T + out.bias.double()
    got = net(obs)
    assert got.dtype == torch.float32 and got.shape == (3, 6)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_nature_cnn_has_the_nature_layer_sizes():
    net = NatureCNN(num_actions=6, frame_stack=4)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [
        (32, 4, 8, 8), (32,), (64, 32, 4, 4), (64,), (64, 64, 3, 3), (64,),
        (512, 3136), (512,), (6, 512), (6,),
    ]
    assert net.obs_shape == (4, 84, 84) and net.num_actions == 6


def test_mlp_matches_numpy_reference():
    torch.manual_seed(1)
    net = MLP(obs_dim=4, num_actions=2)
    layers = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in layers] == [(120, 4), (84, 120), (2, 84)]
    obs = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    x = obs.astype(np.float64)
    for i, m in enumerate(layers):
        x = x @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    np.testing.assert_allclose(net(torch.from_numpy(obs)).detach().numpy(), x, rtol=1e-5, atol=1e-6)


def test_mlp_custom_hidden_sizes():
    net = MLP(3, 5, hidden=(7,))
    assert [tuple(p.shape) for p in net.parameters()] == [(7, 3), (7,), (5, 7), (5,)]


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: NatureCNN(0), "num_actions"),
        (lambda: NatureCNN(4, frame_stack=0), "frame_stack"),
        (lambda: NatureCNN(2.5), "num_actions"),
        (lambda: MLP(0, 2), "obs_dim"),
        (lambda: MLP(4, -1), "num_actions"),
        (lambda: MLP(4, 2, hidden=(16, 0)), "hidden"),
    ],
)
def test_bad_network_arguments(build, name):
    with pytest.raises(ConfigError, match=name):
        build()


def test_build_network_picks_by_kind_of_env():
    from fastdqn.run.envs import env_info
    from fastdqn.run.build import build_network

    atari, vector = env_info("Breakout-v5"), env_info("CartPole-v1")
    cnn = build_network(atari)
    assert isinstance(cnn, NatureCNN) and cnn.num_actions == atari.num_actions == 4
    assert cnn(torch.zeros((2, 4, 84, 84), dtype=torch.uint8)).shape == (2, 4)
    mlp = build_network(vector, hidden=(7,))
    assert isinstance(mlp, MLP) and [m.out_features for m in mlp.modules()
                                     if isinstance(m, torch.nn.Linear)] == [7, 2]


def _linear(x, m):
    return x @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()


def _dueling_reference(x, head):
    """Wang et al. (2016), eq. 9, in NumPy: V + A - mean_a A, each stream Linear-ReLU-Linear."""
    v = _linear(np.maximum(_linear(x, head.value[0]), 0.0), head.value[2])  # (B, 1)
    a = _linear(np.maximum(_linear(x, head.advantage[0]), 0.0), head.advantage[2])  # (B, A)
    return v + a - a.mean(axis=1, keepdims=True)


def test_dueling_mlp_matches_numpy_reference():
    torch.manual_seed(2)
    net = MLP(obs_dim=4, num_actions=3, hidden=(16, 8), dueling=True)
    torso, head = net.net[0], net.net[2]
    assert tuple(torso.weight.shape) == (16, 4)
    assert [tuple(m.weight.shape) for m in (head.value[0], head.value[2], head.advantage[0], head.advantage[2])] \
        == [(8, 16), (1, 8), (8, 16), (3, 8)]
    obs = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)
    x = np.maximum(_linear(obs.astype(np.float64), torso), 0.0)
    expected = _dueling_reference(x, head)
    np.testing.assert_allclose(net(torch.from_numpy(obs)).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_dueling_nature_cnn_streams_and_output():
    torch.manual_seed(4)
    net = NatureCNN(num_actions=6, frame_stack=4, dueling=True)
    shapes = [tuple(p.shape) for p in net.parameters()]
    # Wang et al. (2016): the Nature convolutions, then two 512-unit streams.
    assert shapes == [
        (32, 4, 8, 8), (32,), (64, 32, 4, 4), (64,), (64, 64, 3, 3), (64,),
        (512, 3136), (512,), (1, 512), (1,), (512, 3136), (512,), (6, 512), (6,),
    ]
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        features = net.features(obs.float() / 255.0).double().numpy()
    expected = _dueling_reference(features, net.head)
    np.testing.assert_allclose(net(obs).detach().double().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_dueling_q_unchanged_by_a_constant_added_to_the_advantages():
    torch.manual_seed(5)
    net = MLP(obs_dim=4, num_actions=5, hidden=(12,), dueling=True)
    obs = torch.randn(7, 4)
    before = net(obs).detach()
    with torch.no_grad():
        net.net[0].advantage[2].bias += 3.25  # A(s, a) + c for every a
    torch.testing.assert_close(net(obs).detach(), before, rtol=0, atol=1e-5)
    with torch.no_grad():
        net.net[0].value[2].bias += 1.0  # V + 1 moves every Q by 1
    torch.testing.assert_close(net(obs).detach(), before + 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("build", [lambda: MLP(4, 2, dueling=1), lambda: NatureCNN(4, dueling="yes"),
                                   lambda: MLP(4, 2, hidden=(), dueling=True)])
def test_bad_dueling_arguments(build):
    with pytest.raises(ConfigError, match="dueling|hidden"):
        build()
