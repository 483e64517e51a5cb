#!/usr/bin/env bash
# One prepared check of fastdqn's CUDA path, in under 6 minutes on one GPU and 16 cores
# (under 8 where Ray is installed and the --actors runs take their 100 s).
#
#   bash bench/gpu_check.sh OUT_DIR [--smoke]      (OUT_DIR defaults to $OUT)
#
# On a GPU machine without a package index, first make the project importable there:
# `. .gpu/setup.sh` (the kit under .gpu/ unpacks EnvPool and installs fastdqn offline).
#
# Parts, each with its own time limit, each written under OUT_DIR and summed up in
# OUT_DIR/summary.txt (one line per part: ok, FAILED (exit status) or skipped):
#   system.txt        the card, driver, torch, CUDA, numba and envpool versions
#   pytest-cuda.txt   the CUDA tests (`pytest -m cuda`)
#   bench-*.json/.txt `fastdqn bench --device cuda`: learner, feed and device sections
#                     (80 s), then the n-step + prioritized + dueling section (30 s)
#   train-*/ *.txt    Breakout-v5 trained for a fixed wall time with 32 envs; stopped with
#                     SIGINT, which writes a checkpoint, so its metrics.jsonl is complete
#                     (on the CPU: 3,000 steps with 8 envs, ended by the step count)
#   train-actors-*/   Breakout-v5 with --actors 1, 2, 4, 8 feeding the GPU learner, 25 s each
#                     (GPU and Ray only)
# Without a GPU the CUDA parts are skipped (said so in summary.txt) and the rest runs on
# the CPU with small sizes, so that CI checks the script's plumbing. --smoke shortens
# every part to seconds (for CI).
set -u
out=${1:-${OUT:-}}
if [ -z "$out" ]; then
    echo "gpu_check.sh: error: pass an output folder (or set OUT)" >&2
    exit 2
fi
smoke=0
[ "${2:-}" = "--smoke" ] && smoke=1
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.." || exit 2
py=${PYTHON:-python3}
summary="$out/summary.txt"
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# run_part NAME SECONDS LOG CMD...: run CMD under a time limit, log it, note the outcome.
# SIGINT at the limit lets `fastdqn train` save a checkpoint; status 130 is then success.
run_part() {
    local name=$1 limit=$2 log=$3
    shift 3
    local start=$SECONDS status
    timeout --preserve-status -s INT -k 30 "$limit" "$@" >"$log" 2>&1
    status=$?
    if [ "$status" = 0 ] || { [ "$status" = 130 ] && [ "${name#train}" != "$name" ]; }; then
        note "$name: ok ($((SECONDS - start)) s)"
    else
        note "$name: FAILED (exit status $status after $((SECONDS - start)) s; see $(basename "$log"))"
        tail -n 20 "$log" | sed 's/^/    /'
    fi
}

# ---- what this machine is --------------------------------------------------------------
{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$py" - <<'PY'
import os, platform
import numba, numpy, torch
try:
    import envpool
    envpool_version = envpool.__version__
except ImportError:
    envpool_version = "not installed"
cuda = torch.cuda.is_available()
print(f"gpu: {torch.cuda.get_device_name(0) if cuda else 'none'}")
print(f"torch {torch.__version__} (cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}) | "
      f"numpy {numpy.__version__} | numba {numba.__version__} | envpool {envpool_version}")
print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores")
PY
} >"$out/system.txt" 2>&1
cat "$out/system.txt"
has_cuda=$("$py" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

if [ "$has_cuda" = 1 ]; then
    device=cuda; cuda_flag=--cuda
    # Two bench parts, each with its own limit and JSON, so one that runs long cannot cost
    # the other's figures: the GPU figures (updates/s, the feed, sampling from GPU frames),
    # then the cost of n-step + prioritized replay + dueling in the loop.
    bench_parts=("core:80:--sections learner,feed,device" "rainbow:30:--quick --sections rainbow")
    [ "$smoke" = 1 ] && bench_parts=("core:60:--quick --sections learner")
    # A fixed wall time (SIGINT at the limit saves a checkpoint): the step rate is the figure.
    train_seconds=50; [ "$smoke" = 1 ] && train_seconds=20
    steps=100000000; num_envs=32; buffer=200000; starts=20000; log_every=20000; compile=--compile
else
    note "CUDA: no device visible to torch; the CUDA parts (CUDA tests, CUDA bench, CUDA training) are SKIPPED and the rest runs on the CPU"
    device=cpu; cuda_flag=--no-cuda
    bench_parts=("core:150:--quick --sections replay,learner --no-compile --repeats 1")
    [ "$smoke" = 1 ] && bench_parts=("core:150:--quick --sections learner --no-compile --repeats 1")
    # A fixed number of steps, so a slow start on a busy machine cannot cut the run short;
    # the time limit is only a safety net.
    train_seconds=300; steps=3000; [ "$smoke" = 1 ] && steps=1500
    num_envs=8; buffer=20000; starts=1000; log_every=500; compile=--no-compile
fi

# ---- the CUDA tests --------------------------------------------------------------------
if [ "$has_cuda" = 1 ]; then
    run_part pytest-cuda 130 "$out/pytest-cuda.txt" "$py" -m pytest -q -m cuda tests --benchmark-disable
else
    note "pytest-cuda: skipped (no CUDA device)"
fi

# ---- fastdqn bench ---------------------------------------------------------------------
for part in "${bench_parts[@]}"; do
    IFS=: read -r part_name part_limit part_args <<<"$part"
    read -r -a part_args <<<"$part_args"
    run_part "bench-$device-$part_name" "$part_limit" "$out/bench-$part_name.txt" \
        "$py" -m fastdqn bench --device "$device" --json "$out/bench-$part_name.json" "${part_args[@]}"
done

# summarize NAME: one summary line from the run folder NAME's metrics.jsonl.
summarize() {
    local name=$1
    "$py" - "$out/$name/metrics.jsonl" "$name" <<'PY' | tee -a "$summary"
import json, sys
path, name = sys.argv[1], sys.argv[2]
try:
    records = [json.loads(line) for line in open(path) if line.strip()]
except OSError:
    print(f"{name}: no metrics.jsonl")
    sys.exit(0)
train = [r for r in records if "sps" in r]
if not train:
    print(f"{name}: no training record yet (run shorter than --log-every)")
else:
    last = train[-1]
    loss = f"td_loss {last['td_loss']:.4f}" if "td_loss" in last else "no update yet"
    extra = ""
    if "replay_ratio" in last:
        per_actor = [v for k, v in sorted(last.items()) if k.startswith("actor") and k.endswith("_sps")]
        ratio = "none yet" if last["replay_ratio"] is None else f"{last['replay_ratio']:.2f}"
        extra = (f", replay ratio {ratio}, {last['updates_per_s']:,.0f} updates/s, actors "
                 + " ".join(f"{v:,.0f}" for v in per_actor) + " env steps/s")
    print(f"{name}: {last['global_step']:,} env steps, {last['sps']:,.0f} env steps/s "
          f"(mean since start, compile included), {loss}{extra}")
PY
}

# ---- Breakout-v5 training for a fixed wall time ------------------------------------------
# Replay frames on the host; a --replay-device flag, where this version has one, adds a run
# with frames on the GPU.
replay_devices=(default)
if [ "$has_cuda" = 1 ] && "$py" -m fastdqn train --help 2>/dev/null | grep -q -- "--replay-device"; then
    replay_devices=(cpu cuda)
fi
for replay in "${replay_devices[@]}"; do
    name="train-$device-replay-$replay"
    extra=(); [ "$replay" != default ] && extra=(--replay-device "$replay")
    run_part "$name" "$train_seconds" "$out/$name.txt" \
        "$py" -m fastdqn train --env-id Breakout-v5 $cuda_flag --num-envs "$num_envs" \
        --buffer-size "$buffer" --learning-starts "$starts" --total-timesteps "$steps" \
        --log-every "$log_every" "$compile" --eval-episodes 0 --checkpoint-every 0 --no-progress \
        --run-dir "$out/$name" "${extra[@]}"
    summarize "$name"
done

# ---- Breakout-v5 with Ray actors feeding the GPU learner (--actors 1, 2, 4, 8) -------------
# Total env steps/s against the one-process runs above, at CleanRL's replay ratio (the rate
# limiter on), each for a fixed wall time; 8 envs per actor. Needs Ray on the machine (the
# .gpu kit does not carry it: the part is then skipped, and said so).
if [ "$has_cuda" != 1 ]; then
    note "train-actors: skipped (no CUDA device; the scaling runs measure the GPU learner)"
elif ! "$py" -c "import ray" 2>/dev/null; then
    note "train-actors: skipped (Ray is not installed here; pip install 'fastdqn[ray]' where an index is reachable)"
else
    actor_seconds=25; [ "$smoke" = 1 ] && actor_seconds=15
    actor_counts=(1 2 4 8); [ "$smoke" = 1 ] && actor_counts=(2)
    for n in "${actor_counts[@]}"; do
        name="train-actors-$n"
        run_part "$name" "$actor_seconds" "$out/$name.txt" \
            "$py" -m fastdqn train --env-id Breakout-v5 $cuda_flag --actors "$n" --num-envs 8 \
            --buffer-size "$buffer" --learning-starts "$starts" --total-timesteps "$steps" \
            --log-every 5000 "$compile" --eval-episodes 0 --checkpoint-every 0 --no-progress \
            --run-dir "$out/$name"
        summarize "$name"
    done
fi

echo "---- summary ($out/summary.txt)"
cat "$summary"
grep -q "FAILED" "$summary" && exit 1
exit 0
