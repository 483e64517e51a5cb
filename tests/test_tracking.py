"""fastdqn train --track: the scalars reach Weights & Biases under the TensorBoard tags, read
back from W&B's offline run file (WANDB_MODE=offline writes it locally; there is no network
here); --track without wandb is refused before anything starts; wandb is imported lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fastdqn.run.config import TrainConfig
from fastdqn.tools.cli import main

from cli_errors import fails

# The README's table of TensorBoard tags, written out here rather than read from the logger.
README_TAGS = {"episodic_return": "charts/episodic_return", "episodic_length": "charts/episodic_length",
               "epsilon": "charts/epsilon", "sps": "charts/SPS", "td_loss": "losses/td_loss",
               "q_values": "losses/q_values", "eval_return_mean": "eval/return_mean",
               "eval_return_std": "eval/return_std"}


@pytest.fixture
def offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    # wandb reads its environment once per process (its service): start a fresh one per test.
    wandb.teardown()
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path
    wandb.teardown()


def _rows(wandb_dir) -> list[dict]:
    import wandb
    from wandb_records import history

    # finish() can return before wandb's service has written its last records; ending the
    # service (as the process's exit does) flushes them.
    wandb.teardown()
    (path,) = (wandb_dir / "wandb").glob("offline-run-*/run-*.wandb")
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in history(path)]


def test_logger_sends_every_tagged_scalar_at_its_global_step(offline, tmp_path):
    from fastdqn.run.logger import RunLogger
    from fastdqn.run.tracking import WandbTracker

    config = TrainConfig(env_id="CartPole-v1", track=True, wandb_project_name="tests")
    run_dir = tmp_path / "run"
    logger = RunLogger(run_dir, total_timesteps=100, progress=False,
                       tracker=WandbTracker.start(config, run_dir, None))
    # Two games ending at the same step must both arrive (W&B's own step would merge them).
    logger.episodes(40, np.array([12.0, 30.0]), np.array([12, 30]), 0.5)
    logger.log(64, td_loss=0.25, q_values=1.5, epsilon=0.25, sps=1000.0)
    logger.log(100, eval_return_mean=21.5, eval_return_std=float("nan"))  # NaN is logged nowhere
    logger.close()
    assert _rows(offline) == [
        {"global_step": 40, "charts/episodic_return": 12, "charts/episodic_length": 12, "charts/epsilon": 0.5},
        {"global_step": 40, "charts/episodic_return": 30, "charts/episodic_length": 30, "charts/epsilon": 0.5},
        {"global_step": 64, "losses/td_loss": 0.25, "losses/q_values": 1.5, "charts/epsilon": 0.25,
         "charts/SPS": 1000},
        {"global_step": 100, "eval/return_mean": 21.5},
    ]


@pytest.mark.slow
def test_tracked_cartpole_run_logs_what_metrics_jsonl_holds(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--env-id", "CartPole-v1", "--no-progress", "--no-cuda", "--total-timesteps", "800",
                 "--learning-starts", "200", "--log-every", "200", "--eval-episodes", "2", "--run-dir", "run",
                 "--track", "--wandb-project-name", "tests"]) == 0
    expected = []
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        row = {README_TAGS[k]: v for k, v in record.items() if k in README_TAGS and v is not None}
        expected.append({"global_step": record["global_step"], **row})
    rows = _rows(offline)
    assert len(rows) == len(expected) > 0
    for row, want in zip(rows, expected):
        assert row.keys() == want.keys()
        assert row == pytest.approx(want, rel=1e-12)
    tags = set().union(*rows)
    assert {"charts/episodic_return", "losses/td_loss", "charts/SPS", "eval/return_mean"} <= tags


def test_track_without_wandb_names_the_extra(capsys, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    fails(["train", "--env-id", "CartPole-v1", "--track", "--run-dir", "run"], capsys, tmp_path,
          "--track", "pip install 'fastdqn[track]'")


def test_empty_project_name_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(["train", "--env-id", "CartPole-v1", "--track", "--wandb-project-name", ""], capsys, tmp_path,
          "--wandb-project-name")


def test_optional_packages_are_not_imported_by_the_command_line():
    code = ("import sys, fastdqn; from fastdqn.tools.cli import build_parser; build_parser(); "
            "bad = [m for m in ('wandb', 'huggingface_hub', 'safetensors') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wandb_that_cannot_start_stops_the_run_before_its_first_file(offline, capsys, monkeypatch):
    import wandb

    def refuse(**kwargs):
        raise RuntimeError("api_key not configured (no-tty)\nmore detail")

    monkeypatch.setattr(wandb, "init", refuse)
    monkeypatch.chdir(offline)
    assert main(["train", "--env-id", "CartPole-v1", "--no-progress", "--total-timesteps", "600", "--track",
                 "--run-dir", "run"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fastdqn: error: --track") and "api_key not configured" in line
    assert "WANDB_MODE=offline" in line
    # Only the folder's lock, which is no run file: the same command may simply run again.
    assert [p.name for p in (offline / "run").iterdir()] == ["fastdqn.lock"]
