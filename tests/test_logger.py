"""What a run writes: metrics.jsonl records and the eight TensorBoard tags, read back.

A short CartPole run is the source: CartPole pays +1 per step, so a finished game's
return equals its length — an identity the logged records must satisfy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastdqn.tools.cli import main
from fastdqn.run.logger import TAGS

EVERY_TAG = {"charts/episodic_return", "charts/episodic_length", "charts/epsilon", "charts/SPS",
             "losses/td_loss", "losses/q_values", "eval/return_mean", "eval/return_std"}


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("logger") / "cartpole"
    argv = ["train", "--env-id", "CartPole-v1", "--total-timesteps", "3000", "--num-envs", "4",
            "--learning-starts", "500", "--batch-size", "32", "--eval-every", "1000", "--eval-episodes", "3",
            "--log-every", "500", "--no-progress", "--no-cuda", "--torch-threads", "1", "--run-dir", str(run)]
    assert main(argv) == 0
    with open(run / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    return run, records


def test_episode_records_are_whole_cartpole_games(cartpole_run):
    _, records = cartpole_run
    games = [r for r in records if "episodic_return" in r]
    assert len(games) >= 20  # 3000 steps of a mostly random policy: games of ~10-50 steps
    for r in games:
        assert r["episodic_return"] == r["episodic_length"] >= 1  # +1 per step of the game
        assert 0.0 <= r["epsilon"] <= 1.0
    steps = [r["global_step"] for r in games]
    assert steps == sorted(steps)
    # Every step of a finished game was an env step of the run.
    assert sum(r["episodic_length"] for r in games) <= 3000


def test_periodic_evaluations_are_logged_with_mean_and_std(cartpole_run):
    _, records = cartpole_run
    evals = [r for r in records if "eval_return_mean" in r]
    assert [r["global_step"] for r in evals] == [1000, 2000, 3000]
    for r in evals:
        assert r["eval_return_std"] >= 0.0
        assert 1 <= r["eval_return_mean"] <= 500  # CartPole pays 1 per step, 500 steps at most


def test_every_tensorboard_tag_holds_the_values_of_metrics_jsonl(cartpole_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, records = cartpole_run
    assert set(TAGS.values()) == EVERY_TAG
    (events,) = run.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == EVERY_TAG
    for key, tag in TAGS.items():
        expected = [(r["global_step"], r[key]) for r in records if r.get(key) is not None]
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-6, err_msg=tag)
