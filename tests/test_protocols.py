"""Evaluation protocols: what each one sets in the envs, where it is refused, and where it is named
(evaluation JSON, metrics.jsonl, the plot's legend)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastdqn.errors import ConfigError
from fastdqn.run.build import build_eval_envs
from fastdqn.run.config import TrainConfig
from fastdqn.run.protocols import frames_trained, make_protocol, run_protocol
from fastdqn.tools.cli import main
from tests.cli_errors import fails


def test_machado_sets_its_own_rules_whatever_the_run_used():
    rules = make_protocol("machado", "atari", "Breakout-v5", epsilon=0.05, sticky_actions=0.0, noop_starts=30,
                          max_episode_steps=5000)
    # Machado et al. 2018: sticky actions 0.25, games capped at 108,000 frames = 27,000 steps of 4 frames.
    assert (rules.epsilon, rules.sticky_actions, rules.noop_starts, rules.max_episode_steps) == (
        0.01, 0.25, 0, 108_000 // 4)
    assert rules.settings()["protocol"] == "machado"
    assert frames_trained("atari", 779_352) == 3_117_408 and frames_trained("vector", 100) is None


def test_cleanrl_keeps_the_runs_settings():
    config = TrainConfig(env_id="Pong-v5", eval_epsilon=0.02, sticky_actions=0.1, noop_starts=7,
                         max_episode_steps=900)
    rules = run_protocol(config, "atari")
    assert (rules.name, rules.epsilon, rules.sticky_actions, rules.noop_starts, rules.max_episode_steps) == (
        "cleanrl", 0.02, 0.1, 7, 900)


def test_the_envs_get_the_protocols_settings():
    machado = make_protocol("machado", "atari", "Pong-v5", epsilon=0.05, sticky_actions=0.0, noop_starts=30,
                            max_episode_steps=27_000)
    envs = build_eval_envs("Pong-v5", machado, 2, seed=3)
    c = envs.config
    # No no-op starts is EnvPool's noop_max 1 (it draws from [0, noop_max - 1]; 0 would crash it).
    assert (c["repeat_action_probability"], c["noop_max"], c["max_episode_steps"], c["episodic_life"]) == (
        0.25, 1, 27_000, False)
    envs.close()
    nature = make_protocol("cleanrl", "atari", "Pong-v5", epsilon=0.05, sticky_actions=0.0, noop_starts=30,
                           max_episode_steps=27_000)
    envs = build_eval_envs("Pong-v5", nature, 1, seed=3)
    assert (envs.config["repeat_action_probability"], envs.config["noop_max"]) == (0.0, 30)
    envs.close()


def test_no_noop_starts_play_the_same_game_for_every_seed():
    # The game is deterministic without sticky actions: after 40 no-op steps the screen depends
    # only on how many no-ops each seed drew at the start (up to 30), or on none at all.
    def first_frames(noop_starts):
        rules = make_protocol("cleanrl", "atari", "SpaceInvaders-v5", epsilon=0.0, sticky_actions=0.0,
                              noop_starts=noop_starts, max_episode_steps=100)
        frames = set()
        for seed in range(4):
            envs = build_eval_envs("SpaceInvaders-v5", rules, 1, seed=seed)
            envs.reset()
            for _ in range(40):
                obs = envs.step(np.zeros(1, dtype=np.int64))[0]
            frames.add(obs.tobytes())
            envs.close()
        return len(frames)

    assert first_frames(0) == 1 and first_frames(30) > 1


def test_machado_is_refused_on_classic_control():
    with pytest.raises(ConfigError, match="only Atari"):
        make_protocol("machado", "vector", "CartPole-v1", epsilon=0.0, sticky_actions=0.0, noop_starts=0,
                      max_episode_steps=500)


@pytest.mark.parametrize("argv, expected", [
    (["train", "--env-id", "CartPole-v1", "--eval-protocol", "machado"], "--eval-protocol machado: only Atari"),
    (["train", "--env-id", "CartPole-v1", "--noop-starts", "5"], "--noop-starts: only Atari"),
    (["train", "--noop-starts", "-1"], "--noop-starts: expected an int >= 0"),
    (["train", "--eval-protocol", "machado", "--eval-epsilon", "0.05"], "--eval-epsilon: the machado protocol"),
    (["train", "--eval-protocol", "nature"], "--eval-protocol"),
    (["train", "--env-id", "CartPole-v1", "--capture-video", "--eval-episodes", "0"], "--capture-video"),
    (["eval", "RUN", "--eval-protocol", "machado", "--epsilon", "0.1"], "--epsilon: the machado protocol fixes it"),
    (["eval", "RUN", "--eval-protocol", "machado", "--noop-starts", "3"], "--noop-starts: the machado protocol"),
    (["eval", "RUN", "--noop-starts", "-2"], "--noop-starts: expected an int >= 0"),
])
def test_bad_protocol_flags_are_one_line_errors(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path / "no-such-run") if a == "RUN" else a for a in argv]
    fails(argv + (["--run-dir", str(tmp_path / "run")] if argv[0] == "train" else []), capsys, tmp_path, expected)


def test_eval_json_and_metrics_name_the_protocol_and_plot_labels_it(tmp_path, capsys):
    from fastdqn.tools.plot import learning_curve
    from fastdqn.tools.results import load_run

    run = tmp_path / "run"
    assert main(["train", "--env-id", "CartPole-v1", "--total-timesteps", "200", "--learning-starts", "150",
                 "--eval-episodes", "1", "--no-progress", "--no-cuda", "--run-dir", str(run)]) == 0
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if "eval_return_mean" in line]
    assert [e["eval_protocol"] for e in evals] == ["cleanrl"]
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "1", "--json", "--epsilon", "0"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["protocol"], stats["epsilon"], stats["global_step"], stats["frames"]) == ("cleanrl", 0.0, 200, None)
    # A run evaluated under machado (its config says so) gets that name in the plot's legend.
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(dict(config, eval_protocol="machado")))
    curve = learning_curve([load_run(run)], smooth_fraction=0.1, reps=10, rng=np.random.default_rng(0))
    assert curve.eval_protocols == ("machado",)
