"""Stable-Baselines3's own DQN tests with fastdqn's ``SB3ReplayBuffer`` swapped in.

The tests come from the sdist of the installed stable-baselines3 (``pip download``; they are
SB3's code and stay out of this repository). A ``conftest.py`` written beside them swaps
``SB3ReplayBuffer`` in wherever SB3 would build its own ``ReplayBuffer`` for a ``DQN``
(``replay_buffer_class`` left None, observations not a ``Dict``, ``n_steps=1``) and notes
each test in which the swap happened.

    python tests/sb3_suite.py compare [WORKDIR]   # SB3's DQN tests both ways (about 20 min
                                                  # on 2 cores); exit 1 if any fails only with ours
    python tests/sb3_suite.py record [WORKDIR]    # the same, and rewrites RECORD

``RECORD`` (``tests/data/sb3_suite.json``) lists, for the SB3 version it was made with, the
tests that pass with SB3's buffer and build fastdqn's when swapped: ``tests/test_sb3_suite.py``
runs only those, only with fastdqn's buffer, and reruns any that fail with SB3's to tell a
failure of ours from one of the machine. Record again when SB3's version changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

RECORD = Path(__file__).resolve().parent / "data" / "sb3_suite.json"
SELECT = "DQN or dqn"
DESELECTED = {
    "tests/test_logger.py::test_fps_logger[DQN]": "asserts a minimum FPS that a loaded 2-core machine "
                                                   "does not reach, with either buffer",
}
# Left out of CI's run (tests/test_sb3_suite.py) to keep it within its time, still run by
# `compare` and `record`: the longest training runs, whose storage paths other listed tests
# and fastdqn's own tests cover (Discrete observations, CNN policies on image observations).
CI_LEFT_OUT = {
    "tests/test_identity.py::test_discrete[env0-DQN]": "trains DQN to a reward threshold on a Discrete "
                                                       "identity env (about 50 s); test_spaces stores Discrete",
    "tests/test_cnn.py::test_cnn[False-DQN]": "a CnnPolicy training run (30-100 s); the CnnPolicy save/load "
                                              "tests store the same image observations",
    "tests/test_cnn.py::test_features_extractor_target_net[False-DQN]": "CnnPolicy training runs (20-60 s), "
                                                                        "as test_cnn",
}

CONFTEST = '''\
import os

import pytest
from gymnasium import spaces
from stable_baselines3 import DQN

_swapped = []

if os.environ.get("FASTDQN_SB3_BUFFER") == "1":
    from fastdqn.integrations.sb3 import SB3ReplayBuffer

    _setup_model = DQN._setup_model

    def _setup_with_fastdqn(self):
        if (self.replay_buffer_class is None and self.n_steps == 1
                and not isinstance(self.observation_space, spaces.Dict)):
            self.replay_buffer_class = SB3ReplayBuffer
            _swapped.append(True)
        _setup_model(self)

    DQN._setup_model = _setup_with_fastdqn


def pytest_collection_modifyitems(config, items):
    # FASTDQN_SB3_ONLY: a file of node ids to run; the rest are deselected. A module that
    # cannot be imported here (a package missing) is one collection error, not a stop.
    only = os.environ.get("FASTDQN_SB3_ONLY")
    if only:
        wanted = set(open(only).read().split())
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in wanted])
        items[:] = [i for i in items if i.nodeid in wanted]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    _swapped.clear()
    yield
    if _swapped and os.environ.get("FASTDQN_SB3_SWAPPED"):
        with open(os.environ["FASTDQN_SB3_SWAPPED"], "a") as f:
            f.write(item.nodeid + "\\n")
'''


def sb3_version() -> str:
    import stable_baselines3

    return stable_baselines3.__version__


def fetch(workdir: Path, version: str) -> Path:
    """SB3's ``tests/`` and pytest settings of ``version`` in ``workdir/suite``, with the
    swapping ``conftest.py``. Raises ``RuntimeError`` when pip cannot get the sdist."""
    src = workdir / f"stable_baselines3-{version}"
    if not (src / "tests").is_dir():
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
                              "--no-deps", f"stable-baselines3=={version}", "-d", str(workdir)],
                             capture_output=True, text=True)
        sdists = list(workdir.glob(f"stable_baselines3-{version}.tar.gz"))
        if got.returncode != 0 or not sdists:
            raise RuntimeError(f"pip download of the stable-baselines3=={version} sdist failed: "
                               f"{(got.stderr or got.stdout).strip()[-300:]}")
        with tarfile.open(sdists[0]) as tar:
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(workdir, **safe)
    # Only tests/ and the pytest settings: the sdist's package folder would shadow the installed one.
    suite = workdir / "suite"
    shutil.rmtree(suite, ignore_errors=True)
    shutil.copytree(src / "tests", suite / "tests")
    shutil.copy(src / "pyproject.toml", suite)
    (suite / "tests" / "conftest.py").write_text(CONFTEST)
    return suite


def run(suite: Path, ours: bool, tests: list[str] | None = None, timeout: float | None = None) -> dict:
    """Run SB3's DQN tests (or the node ids ``tests``) with fastdqn's buffer (``ours``) or
    SB3's; returns ``{"outcomes": {node id: passed/failed/skipped}, "swapped": [node ids],
    "summary": pytest's last line}``."""
    tag = "fastdqn" if ours else "sb3"
    junit, swapped, only = suite / f"{tag}.xml", suite / f"{tag}.swapped", suite / f"{tag}.only"
    swapped.unlink(missing_ok=True)
    args = [sys.executable, "-m", "pytest", "tests", "-p", "no:cacheprovider", "-q", "-rf",
            "--continue-on-collection-errors", f"--junitxml={junit}"]
    env = {**os.environ, "FASTDQN_SB3_BUFFER": "1" if ours else "0", "FASTDQN_SB3_SWAPPED": str(swapped)}
    if tests is None:
        args += ["-k", SELECT, *(f"--deselect={t}" for t in DESELECTED)]
    else:
        only.write_text("\n".join(tests) + "\n")
        env["FASTDQN_SB3_ONLY"] = str(only)
    done = subprocess.run(args, cwd=suite, env=env, capture_output=True, text=True, timeout=timeout)
    (suite / f"{tag}.log").write_text(done.stdout + done.stderr)
    lines = done.stdout.strip().splitlines()
    return {"outcomes": outcomes(junit) if junit.exists() else {},
            "swapped": swapped.read_text().split() if swapped.exists() else [],
            "summary": lines[-1] if lines else done.stderr.strip()[-300:]}


def outcomes(junit: Path) -> dict:
    """Node id -> passed, failed or skipped, read from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        module, _, cls = case.get("classname").partition(".")  # "tests.test_x" or "tests.test_x.Class"
        path = module + "/" + cls.split(".")[0] + ".py"
        rest = cls.split(".")[1:]
        name = "::".join([path, *rest, case.get("name")])
        bad = case.find("failure") is not None or case.find("error") is not None
        out[name] = "skipped" if case.find("skipped") is not None else ("failed" if bad else "passed")
    return out


def failing_only_with_ours(sb3: dict, ours: dict) -> list[str]:
    return sorted(n for n, o in ours.items() if o == "failed" and sb3.get(n) == "passed")


def compare(workdir: Path, record: bool) -> int:
    version = sb3_version()
    suite = fetch(workdir, version)
    print(f"stable-baselines3 {version}, tests in {suite}")
    sb3, ours = run(suite, ours=False), run(suite, ours=True)
    print(f"with SB3's buffer: {sb3['summary']}\nwith fastdqn's: {ours['summary']}")
    only_ours = failing_only_with_ours(sb3["outcomes"], ours["outcomes"])
    for name in only_ours:
        print("fails only with fastdqn's buffer:", name)
    count = lambda r: sum(o == "passed" for o in r["outcomes"].values())  # noqa: E731
    print(f"passed with SB3's buffer: {count(sb3)}, with fastdqn's: {count(ours)}, "
          f"failing only with fastdqn's: {len(only_ours)}; fastdqn's buffer built in {len(ours['swapped'])}")
    if record:
        keep = sorted(n for n in ours["swapped"] if sb3["outcomes"].get(n) == "passed")
        RECORD.write_text(json.dumps({"stable_baselines3": version, "select": SELECT, "deselected": DESELECTED,
                                      "pass_with_sb3_buffer": keep}, indent=1) + "\n")
        print(f"{RECORD}: {len(keep)} tests")
    return 1 if only_ours else 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("compare", "record"):
        sys.exit(f"usage: {sys.argv[0]} compare|record [WORKDIR]")
    where = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(tempfile.mkdtemp(prefix="sb3-suite-"))
    where.mkdir(parents=True, exist_ok=True)
    sys.exit(compare(where.resolve(), sys.argv[1] == "record"))
