#!/usr/bin/env bash
# Stable-Baselines3's own DQN tests, run twice: with SB3's ReplayBuffer and with
# fastdqn.integrations.sb3.SB3ReplayBuffer swapped in wherever SB3 would build its own
# ReplayBuffer for a DQN. Fails when a test fails only with fastdqn's buffer. The work is
# tests/sb3_suite.py (its docstring says more); pass `record` first to rewrite the list of
# tests that CI's slow test runs (tests/test_sb3_suite.py).
#
#   bench/sb3_suite.sh [record] [WORKDIR]   (PYTHON=... picks the interpreter; SB3's logger
#                                           tests need pandas, its progress-bar tests rich)
set -euo pipefail
PYTHON=${PYTHON:-python}
MODE=compare
if [ "${1:-}" = record ]; then MODE=record; shift; fi
exec "$PYTHON" "$(dirname "$0")/../tests/sb3_suite.py" "$MODE" "$@"
