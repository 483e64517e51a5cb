"""Same seed, same run: fingerprints of two short fixed-seed trainings.

Prints (or writes with ``--json``) one SHA-256 per run over its ``metrics.jsonl``
training records with the wall-clock field ``sps`` left out, and one over the final
online and target weights. A change that must not alter behaviour (a refactor, a
rename) leaves both unchanged: run this before and after and compare, or pass
``--expect FILE`` to compare against a saved result (exit 1 on any difference).

    python bench/same_run.py --json before.json
    python bench/same_run.py --expect before.json

The runs (about 2 minutes together on 2 cores):
- cartpole: CartPole-v1, plain Double DQN, seed 3, 6,000 steps;
- breakout: Breakout-v5 with --prioritized --n-step 3 --dueling, seed 5, 3,000 steps,
  learning from step 1,000, CPU, no compile (compile would change nothing but time).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {
    "cartpole": ["--env-id", "CartPole-v1", "--seed", "3", "--total-timesteps", "6000",
                 "--eval-episodes", "2"],
    "breakout": ["--env-id", "Breakout-v5", "--seed", "5", "--total-timesteps", "3000",
                 "--num-envs", "4", "--buffer-size", "5000", "--learning-starts", "1000",
                 "--prioritized", "--n-step", "3", "--dueling", "--no-compile", "--no-cuda",
                 "--torch-threads", "1", "--eval-episodes", "0", "--max-episode-steps", "500"],
}


def fingerprint(run_dir: Path) -> dict:
    import torch

    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("sps", None)  # wall-clock speed: differs between any two runs
        records.append(record)
    metrics = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["learner"]
    weights = hashlib.sha256()
    for part in ("online", "target"):
        for name, tensor in sorted(state[part].items()):
            weights.update(name.encode())
            buf = io.BytesIO()
            buf.write(tensor.detach().cpu().contiguous().numpy().tobytes())
            weights.update(buf.getvalue())
    return {"metrics_sha256": metrics, "weights_sha256": weights.hexdigest(), "records": len(records),
            "num_updates": int(state["num_updates"])}


def run_all(names: list[str]) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            run_dir = Path(tmp) / name
            cmd = [sys.executable, "-m", "fastdqn", "train", *RUNS[name], "--run-dir", str(run_dir),
                   "--no-progress"]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results[name] = fingerprint(run_dir)
            print(name, json.dumps(results[name]), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS))
    parser.add_argument("--json", type=Path, help="write the fingerprints to this file")
    parser.add_argument("--expect", type=Path, help="compare with fingerprints written earlier by --json")
    args = parser.parse_args()
    results = run_all(args.runs.split(","))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.expect:
        expected = json.loads(args.expect.read_text())
        differ = [n for n in results if results[n] != expected.get(n)]
        print("identical" if not differ else f"DIFFERENT: {', '.join(differ)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
