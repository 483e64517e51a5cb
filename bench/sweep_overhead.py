"""What the sweep machinery costs: a sweep of one run beside the same ``fastdqn train`` run.

    python bench/sweep_overhead.py --pairs 5

Each pair runs ``fastdqn train`` and ``fastdqn sweep`` (one env, one seed, local Ray
instance) with the same run: the flags and thread settings the sweep gives its run are
given to the plain train run too, and so is the niceness Ray gives its workers (15, which
their children inherit), so that on a shared machine both get the same share of the CPUs.
The two commands alternate which goes first, so both see the same machine load; the figure
is the median over pairs of the wall-time difference. Wall time is the whole command, from
process start to exit (Ray's start and stop included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Where a sweep's extra time goes: Ray's start, one trivial task (a fresh worker process),
# Ray's stop; each in its own process, as a sweep does it.
RAY_PHASES = """
import json, time
t0 = time.perf_counter()
from fastdqn.tools.sweep import _import_ray, _start_ray
ray = _import_ray(local=True)
t1 = time.perf_counter()
_start_ray(ray, None)
t2 = time.perf_counter()
ray.get(ray.remote(lambda: 0).options(num_cpus=1).remote())
t3 = time.perf_counter()
ray.shutdown()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "start_s": t2 - t1, "first_task_s": t3 - t2, "stop_s": t4 - t3}))
"""


def wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--total-timesteps", type=int, default=5000)
    parser.add_argument("--nice", type=int, default=15,
                        help="niceness of the plain train run (default: Ray's worker niceness, 15)")
    parser.add_argument("--json", default=None, help="also write the timings here")
    args = parser.parse_args()
    fastdqn = [sys.executable, "-m", "fastdqn"]
    flags = ["--total-timesteps", str(args.total_timesteps), "--eval-episodes", "2"]
    # What fastdqn sweep sets for a run that reserves one CPU.
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    train_threads = ["--torch-threads", "1", "--env-threads", "1", "--no-cuda"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            train = ["nice", "-n", str(args.nice), *fastdqn, "train", "--env-id", args.env_id, "--seed", "1", *flags, *train_threads,
                     "--run-dir", str(Path(tmp) / f"train{i}")]
            sweep = [*fastdqn, "sweep", "--env-ids", args.env_id, "--seeds", "1", *flags,
                     "--sweep-dir", str(Path(tmp) / f"sweep{i}")]
            if i % 2:
                t_sweep, t_train = wall(sweep, os.environ.copy()), wall(train, env)
            else:
                t_train, t_sweep = wall(train, env), wall(sweep, os.environ.copy())
            rows.append({"train_s": t_train, "sweep_s": t_sweep, "overhead_s": t_sweep - t_train})
            print(f"pair {i + 1}: train {t_train:.1f} s, sweep {t_sweep:.1f} s, overhead {t_sweep - t_train:+.1f} s",
                  flush=True)
    phases = []
    for _ in range(args.pairs):
        out = subprocess.run([sys.executable, "-c", RAY_PHASES], check=True, capture_output=True, text=True).stdout
        phases.append(json.loads(out.strip().splitlines()[-1]))
    med_phases = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    print("Ray alone, median of", len(phases), "runs: "
          + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f} s" for k, v in med_phases.items()))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median over {len(rows)} pairs: train {med['train_s']:.1f} s, sweep {med['sweep_s']:.1f} s, "
          f"overhead {med['overhead_s']:+.1f} s (range {min(r['overhead_s'] for r in rows):+.1f} to "
          f"{max(r['overhead_s'] for r in rows):+.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "pairs": rows, "median": med,
                                               "ray_phases": phases}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
