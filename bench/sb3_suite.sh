#!/usr/bin/env bash
# Stable-Baselines3's own DQN tests, run twice: with SB3's ReplayBuffer and with
# fastdqn.integrations.sb3.SB3ReplayBuffer swapped in wherever SB3 would build its own
# ReplayBuffer for a DQN (replay_buffer_class left None, observations not a Dict, n_steps=1).
# The tests come from the sdist of the installed stable-baselines3 (they are SB3's code and
# stay out of this repository). Fails when a test fails only with fastdqn's buffer.
#
#   bench/sb3_suite.sh [WORKDIR]      (PYTHON=... picks the interpreter; extra pytest
#                                      arguments go in PYTEST_ARGS)
set -euo pipefail
PYTHON=${PYTHON:-python}
WORK=${1:-$(mktemp -d)}
VERSION=$("$PYTHON" -c "import stable_baselines3; print(stable_baselines3.__version__)")
SRC="$WORK/stable_baselines3-$VERSION"
if [ ! -d "$SRC/tests" ]; then
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "stable-baselines3==$VERSION" -d "$WORK"
    tar xzf "$WORK/stable_baselines3-$VERSION.tar.gz" -C "$WORK"
fi
# Only tests/ and the pytest settings: the sdist's package folder would shadow the installed one.
SUITE="$WORK/suite"
rm -rf "$SUITE" && mkdir -p "$SUITE"
cp -r "$SRC/tests" "$SUITE/tests"
cp "$SRC/pyproject.toml" "$SUITE/"
cat > "$SUITE/tests/conftest.py" <<'PY'
import os

from gymnasium import spaces
from stable_baselines3 import DQN

if os.environ.get("FASTDQN_SB3_BUFFER") == "1":
    from fastdqn.integrations.sb3 import SB3ReplayBuffer

    _setup_model = DQN._setup_model

    def _setup_with_fastdqn(self):
        if (self.replay_buffer_class is None and self.n_steps == 1
                and not isinstance(self.observation_space, spaces.Dict)):
            self.replay_buffer_class = SB3ReplayBuffer
        _setup_model(self)

    DQN._setup_model = _setup_with_fastdqn
PY
cd "$SUITE"
run() {  # $1: label, $2: FASTDQN_SB3_BUFFER
    FASTDQN_SB3_BUFFER=$2 "$PYTHON" -m pytest tests -k "DQN or dqn" -p no:cacheprovider -q -rf --continue-on-collection-errors \
        --junitxml="$WORK/$1.xml" ${PYTEST_ARGS:-} > "$WORK/$1.log" 2>&1 || true
    echo "$1: $(tail -n 1 "$WORK/$1.log")"
}
echo "stable-baselines3 $VERSION, tests in $SUITE"
run sb3 0
run fastdqn 1
"$PYTHON" - "$WORK/sb3.xml" "$WORK/fastdqn.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

def outcomes(path):
    out = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") is not None or case.find("error") is not None
        out[name] = "skipped" if case.find("skipped") is not None else ("failed" if bad else "passed")
    return out

sb3, ours = outcomes(sys.argv[1]), outcomes(sys.argv[2])
only_ours = sorted(n for n, o in ours.items() if o == "failed" and sb3.get(n) == "passed")
for name in only_ours:
    print("fails only with fastdqn's buffer:", name)
print(f"passed with SB3's buffer: {sum(o == 'passed' for o in sb3.values())}, with fastdqn's: "
      f"{sum(o == 'passed' for o in ours.values())}, failing only with fastdqn's: {len(only_ours)}")
sys.exit(1 if only_ours else 0)
PY
