"""The example runs kept in docs/example-runs: their files parse and `fastdqn plot` draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastdqn.run.config import TrainConfig
from fastdqn.tools.cli import main

RUNS = sorted(p for p in (Path(__file__).resolve().parent.parent / "docs" / "example-runs").iterdir() if p.is_dir())


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_an_example_run_parses_and_plots(run, tmp_path):
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in json.loads((run / "config.json").read_text()).items()
                            if k in TrainConfig.__dataclass_fields__})
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["global_step"] for r in records]
    assert steps and max(steps) <= config.total_timesteps
    assert any("episodic_return" in r for r in records)
    for path in run.glob("eval-*.json"):
        stats = json.loads(path.read_text())
        assert stats["episodes"] == len(stats["scores"])
        assert stats["mean_ci95"][0] <= stats["mean"] <= stats["mean_ci95"][1]
    output = tmp_path / "curve.png"
    assert main(["plot", str(run), "-o", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
