"""Runs that must not be lost: a diverging run, a run at the largest seed, a resumed run
whose total grows (epsilon must not jump) and a metrics file with unreadable records."""

from __future__ import annotations

import json

import pytest
import torch

from fastdqn.run.checkpoint import load_checkpoint
from fastdqn.tools.cli import main
from fastdqn.run.config import SEED_LIMIT, linear_schedule
from fastdqn.run.logger import METRICS_NAME, RunLogger

QUICK = ["--env-id", "CartPole-v1", "--num-envs", 4, "--learning-starts", 200, "--batch-size", 32,
         "--no-progress", "--no-cuda", "--torch-threads", 1]


def train(*args) -> int:
    return main([str(a) for a in ("train", *args)])


def records(run):
    return [json.loads(line) for line in (run / METRICS_NAME).read_text().splitlines()]


def test_divergence_saves_the_state_before_the_bad_update(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*QUICK, "--total-timesteps", 2000, "--learning-rate", 1e30, "--eval-episodes", 0,
                 "--run-dir", run) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastdqn: error: training diverged at step ")
    assert "lower --learning-rate (this run: 1e+30)" in err[0]
    assert f"fastdqn train --resume {run} --learning-rate" in err[0]
    bad_update = int(err[0].split("(update ")[1].split(":")[0])
    state = load_checkpoint(run)
    # The update that failed was never applied: the count stops before it, every weight is finite.
    assert state["learner"]["num_updates"] == bad_update - 1
    for name in ("online", "target"):
        assert all(bool(torch.isfinite(t).all()) for t in state["learner"][name].values())
    step = state["trainer"]["global_step"]
    assert 200 < step < 2000 and f"step {step:,}" in err[0]


def test_divergence_mid_run_keeps_the_run_going_after_resume(tmp_path, capsys, monkeypatch):
    """A bad update after 30 good ones: the checkpoint holds the weights of update 30 exactly,
    and the run resumes from it."""
    from fastdqn.learn.learner import Learner

    real_update, seen = Learner.update, {}

    def update(self, batch):
        if self.num_updates == 30:
            seen.update({k: v.clone() for k, v in self.online.state_dict().items()})
            raise FloatingPointError("update 31: td_loss is nan")
        return real_update(self, batch)

    monkeypatch.setattr(Learner, "update", update)
    run = tmp_path / "run"
    assert train(*QUICK, "--total-timesteps", 2000, "--eval-episodes", 0, "--run-dir", run) == 1
    assert "training diverged" in capsys.readouterr().err
    state = load_checkpoint(run)
    assert state["learner"]["num_updates"] == 30
    assert state["learner"]["online"].keys() == seen.keys()
    for key, value in seen.items():
        assert torch.equal(state["learner"]["online"][key], value)
    monkeypatch.setattr(Learner, "update", real_update)
    step = state["trainer"]["global_step"]
    assert train("--resume", run, "--total-timesteps", step + 400, "--no-progress") == 0
    assert load_checkpoint(run)["trainer"]["global_step"] == step + 400


def test_largest_seed_finishes_evaluates_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    top = SEED_LIMIT - 1
    assert train(*QUICK, "--seed", top, "--total-timesteps", 400, "--eval-episodes", 2, "--run-dir", run) == 0
    assert "eval return" in capsys.readouterr().out
    assert train("--resume", run, "--total-timesteps", 800, "--no-progress") == 0
    assert load_checkpoint(run)["trainer"]["global_step"] == 800
    assert [r for r in records(run) if "eval_return_mean" in r][-1]["global_step"] == 800


def test_epsilon_keeps_its_schedule_when_the_total_grows(tmp_path):
    run = tmp_path / "run"
    # Decay over 0.5 * 1000 = 500 steps; resumed with 3x the total, the decay stays 500 steps long
    # (recomputed from the new total it would be 1500 steps, and epsilon would jump from 0.05 to 0.68).
    assert train(*QUICK, "--total-timesteps", 1000, "--exploration-fraction", 0.5, "--end-e", 0.05,
                 "--train-frequency", 8, "--log-every", 40, "--eval-episodes", 0, "--checkpoint-every", 0, "--run-dir", run) == 0
    before = [r for r in records(run) if "sps" in r]
    assert train("--resume", run, "--total-timesteps", 3000, "--no-progress") == 0
    after = [r for r in records(run) if "sps" in r and r["global_step"] > 1000]
    assert after and before
    for r in before + after:
        assert r["epsilon"] == pytest.approx(linear_schedule(1.0, 0.05, 500, r["global_step"]), abs=1e-12)
    config = json.loads((run / "config.json").read_text())
    assert config["total_timesteps"] == 3000 and config["exploration_fraction"] * 3000 == pytest.approx(500)
    # Given explicitly, the fraction applies to the new total.
    assert train("--resume", run, "--total-timesteps", 3200, "--exploration-fraction", 1.0,
                 "--no-progress") == 0
    latest = [r for r in records(run) if "sps" in r and r["global_step"] > 3000]
    assert [r["global_step"] for r in latest] == list(range(3040, 3201, 40))
    for r in latest:
        assert r["epsilon"] == pytest.approx(linear_schedule(1.0, 0.05, 3200, r["global_step"]), abs=1e-12)


@pytest.mark.parametrize("bad", [b"123\n", b'{"global_step": "abc"}\n', b'{"global_step": true}\n',
                                 b"[1, 2]\n", b"\xff\xfe\xfa not utf-8\n", b'{"global_st'])
def test_unreadable_metrics_records_are_dropped_on_resume(tmp_path, bad):
    run = tmp_path / "run"
    run.mkdir()
    good = [{"global_step": 4, "episodic_return": 1.0}, {"global_step": 8, "td_loss": 0.5},
            {"global_step": 12, "sps": 9.0}]
    (run / METRICS_NAME).write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in good) + bad)
    logger = RunLogger(run, total_timesteps=100, resume_step=8, progress=False)
    logger.log(9, td_loss=0.25)
    logger.close()
    assert records(run) == [*good[:2], {"global_step": 9, "td_loss": 0.25}]


def test_resume_after_a_corrupt_last_metrics_line(tmp_path):
    run = tmp_path / "run"
    assert train(*QUICK, "--total-timesteps", 400, "--eval-episodes", 0, "--run-dir", run) == 0
    with open(run / METRICS_NAME, "ab") as f:
        f.write(b'{"global_step": "abc"}\n\xff\xfe\n')
    assert train("--resume", run, "--total-timesteps", 800, "--no-progress") == 0
    steps = [r["global_step"] for r in records(run)]
    assert steps == sorted(steps) and steps[-1] == 800


def test_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    import errno

    import fastdqn.run.trainer

    real_save, calls = fastdqn.run.trainer.save_checkpoint, []

    def save_checkpoint(run_dir, state, buffer=None):
        calls.append(state["trainer"]["global_step"])
        if len(calls) > 1:  # the disk fills up after the first checkpoint
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "checkpoint.pt"))
        return real_save(run_dir, state, buffer)

    monkeypatch.setattr(fastdqn.run.trainer, "save_checkpoint", save_checkpoint)
    run = tmp_path / "run"
    assert train(*QUICK, "--total-timesteps", 800, "--checkpoint-every", 400, "--eval-episodes", 0,
                 "--run-dir", run) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0]
    assert calls == [400, 800] and load_checkpoint(run)["trainer"]["global_step"] == 400


@pytest.mark.parametrize("flag, value, saved", [("--buffer-size", 600, 500), ("--num-envs", 3, 4)])
def test_resume_with_a_saved_buffer_refuses_a_new_buffer_size_or_num_envs(tmp_path, capsys, flag, value, saved):
    run = tmp_path / "run"
    assert train(*QUICK, "--buffer-size", 500, "--total-timesteps", 400, "--eval-episodes", 0, "--save-buffer",
                 "--run-dir", run) == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert train("--resume", run, flag, value, "--total-timesteps", 800, "--no-progress") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fastdqn: error: {flag}: "), err
    assert f"trained with {saved}, got {value}" in err[0]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # the run is untouched


def test_resume_without_a_saved_buffer_takes_a_new_buffer_size(tmp_path):
    run = tmp_path / "run"
    assert train(*QUICK, "--buffer-size", 500, "--total-timesteps", 400, "--eval-episodes", 0,
                 "--run-dir", run) == 0
    assert train("--resume", run, "--buffer-size", 600, "--total-timesteps", 800, "--no-progress") == 0
    assert load_checkpoint(run)["config"]["buffer_size"] == 600
