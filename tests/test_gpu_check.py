"""bench/gpu_check.sh: on a machine without a GPU it says the CUDA parts were skipped and
runs its CPU parts end to end, so the script is known to work before a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; on a GPU run the script itself")
def test_gpu_check_without_a_gpu_skips_cuda_and_runs_the_rest(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "CUDA parts (CUDA tests, CUDA bench, CUDA training) are SKIPPED" in summary
    assert "pytest-cuda: skipped" in summary and "FAILED" not in summary
    assert "gpu: none" in (tmp_path / "system.txt").read_text()
    bench = json.loads((tmp_path / "bench-core.json").read_text())
    assert any(f["name"].startswith("learner") for f in bench["figures"])
    records = [json.loads(line) for line in (tmp_path / "train-cpu-replay-default" / "metrics.jsonl")
               .read_text().splitlines()]
    steps = [r["global_step"] for r in records if "sps" in r]
    assert steps and steps[-1] >= 1500  # the smoke run's step count
    # The run ended by its step count and saved its final checkpoint.
    assert (tmp_path / "train-cpu-replay-default" / "checkpoint.pt").is_file()
    assert f"{steps[-1]:,} env steps" in summary
