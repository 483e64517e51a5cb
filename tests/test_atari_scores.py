"""The shipped reference scores: 57 games, EnvPool names, and the normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from fastdqn.tools.atari_scores import REFERENCE_SCORES, game_of, human_normalized
from fastdqn.errors import ConfigError


def test_every_game_is_an_envpool_task():
    import envpool

    ids = set(envpool.list_all_envs())
    assert len(REFERENCE_SCORES) == 57
    missing = [g for g in REFERENCE_SCORES if f"{g}-v5" not in ids]
    assert not missing, missing


def test_values_of_the_published_table():
    # Mnih et al. 2015, Extended Data Table 2, for a few games.
    assert REFERENCE_SCORES["Breakout"] == (1.7, 30.5)
    assert REFERENCE_SCORES["Pong"] == (-20.7, 14.6)
    assert REFERENCE_SCORES["SpaceInvaders"] == (148.0, 1668.7)
    # Human beats random everywhere (Skiing and Tennis are negative scores).
    assert all(human > random for random, human in REFERENCE_SCORES.values())


def test_human_normalized_maps_random_to_0_and_human_to_1():
    assert human_normalized("Pong-v5", -20.7) == pytest.approx(0.0)
    assert human_normalized("Pong-v5", 14.6) == pytest.approx(1.0)
    np.testing.assert_allclose(human_normalized("Breakout-v5", np.array([1.7, 16.1, 59.3])), [0.0, 0.5, 2.0])
    assert game_of("MontezumaRevenge-v5") == "MontezumaRevenge" and game_of("CartPole-v1") is None
    with pytest.raises(ConfigError, match="CartPole-v1"):
        human_normalized("CartPole-v1", 200.0)
