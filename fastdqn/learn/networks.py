"""Q-networks: the Nature DQN convolutional network and a small MLP.

Both map a batch of observations to one Q-value per action, ``(B, A)`` float32. With
``dueling=True`` their last hidden layer splits into a value stream and an advantage
stream of the same width, combined as ``Q = V + A - mean_a A`` (Wang et al. 2016).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastdqn.errors import ConfigError
from fastdqn.util.checks import check_flag, check_int


class DuelingHead(nn.Module):
    """Value and advantage streams, each ``Linear(width_in, width) -> ReLU -> Linear``; subtracting
    the mean advantage (Wang et al. 2016, eq. 9) makes V and A identifiable, the greedy action unchanged."""

    def __init__(self, width_in: int, width: int, num_actions: int) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(width_in, width), nn.ReLU(), nn.Linear(width, 1))
        self.advantage = nn.Sequential(nn.Linear(width_in, width), nn.ReLU(), nn.Linear(width, num_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value(x)  # (B, 1)
        advantage = self.advantage(x)  # (B, A)
        return value + advantage - advantage.mean(dim=1, keepdim=True)  # (B, A)


class NatureCNN(nn.Module):
    """The network of Mnih et al. (2015): three convolutions and a 512-unit hidden layer (with
    ``dueling=True`` a value and an advantage stream of 512 units each). It takes uint8 frames
    ``(B, frame_stack, 84, 84)`` and scales them by 1/255 inside, so batches go in untouched."""

    obs_shape: tuple[int, ...]

    def __init__(self, num_actions: int, frame_stack: int = 4, dueling: bool = False) -> None:
        super().__init__()
        self.num_actions = check_int("num_actions", num_actions, fix="pass the env's action count")
        self.frame_stack = check_int("frame_stack", frame_stack, fix="pass the env's stack_num")
        self.dueling = check_flag("dueling", dueling)
        self.obs_shape = (frame_stack, 84, 84)
        self.obs_dtype = torch.uint8
        self.features = nn.Sequential(
            nn.Conv2d(frame_stack, 32, kernel_size=8, stride=4),  # (B, 32, 20, 20)
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),  # (B, 64, 9, 9)
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),  # (B, 64, 7, 7)
            nn.ReLU(),
            nn.Flatten(),  # (B, 3136)
        )
        if dueling:
            self.head = DuelingHead(64 * 7 * 7, 512, num_actions)
        else:
            self.head = nn.Sequential(
                nn.Linear(64 * 7 * 7, 512),
                nn.ReLU(),
                nn.Linear(512, num_actions),
            )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float32) / 255.0  # (B, k, 84, 84) in [0, 1]
        return self.head(self.features(x))  # (B, A)


class MLP(nn.Module):
    """A fully connected Q-network with ReLU hidden layers, for vector observations; with
    ``dueling=True`` the last hidden layer becomes a value and an advantage stream of its width."""

    obs_shape: tuple[int, ...]

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int] = (120, 84),
                 dueling: bool = False) -> None:
        super().__init__()
        self.obs_dim = check_int("obs_dim", obs_dim, fix="pass the observation length")
        self.num_actions = check_int("num_actions", num_actions, fix="pass the env's action count")
        hidden = tuple(hidden)
        for width in hidden:
            check_int("hidden", width, fix="pass a sequence of positive layer widths")
        self.hidden = hidden
        self.dueling = check_flag("dueling", dueling)
        if dueling and not hidden:
            raise ConfigError("hidden: a dueling MLP needs at least one hidden layer (its last one "
                              "becomes the value and advantage streams); pass e.g. hidden=(120, 84)")
        self.obs_shape = (obs_dim,)
        self.obs_dtype = torch.float32
        layers: list[nn.Module] = []
        width_in = obs_dim
        for width in hidden[:-1] if dueling else hidden:
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            width_in = width
        if dueling:
            layers.append(DuelingHead(width_in, hidden[-1], num_actions))
        else:
            layers.append(nn.Linear(width_in, num_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)  # (B, A)

