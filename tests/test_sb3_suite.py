"""Stable-Baselines3's own DQN tests pass with fastdqn's buffer swapped in.

Running SB3's DQN tests both ways takes about 20 minutes on 2 cores, past what CI can spend,
so this runs, with fastdqn's buffer only, the tests that ``tests/sb3_suite.py record`` found
to pass with SB3's buffer and to build fastdqn's when swapped (``tests/data/sb3_suite.json``,
made with the SB3 version it names), less the three longest training runs
(``sb3_suite.CI_LEFT_OUT`` says why each). A test that fails here is run again with SB3's buffer:
it fails the check only if it passes that way, so a package this machine lacks (pandas for
SB3's logger tests) or a slow machine counts against neither buffer. Skipped without
stable-baselines3, without pip or the package index, or when the installed SB3 is not the
recorded version (record again: ``python tests/sb3_suite.py record``).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("stable_baselines3")

import sb3_suite  # noqa: E402

pytestmark = pytest.mark.slow


def test_sb3s_own_dqn_tests_pass_with_fastdqn_buffer(tmp_path):
    record = json.loads(sb3_suite.RECORD.read_text())
    version = sb3_suite.sb3_version()
    listed = [t for t in record["pass_with_sb3_buffer"] if t not in sb3_suite.CI_LEFT_OUT]
    if version != record["stable_baselines3"]:
        pytest.skip(f"tests/data/sb3_suite.json was recorded with stable-baselines3 "
                    f"{record['stable_baselines3']}, {version} is installed; run "
                    f"`python tests/sb3_suite.py record` to record it again")
    try:
        suite = sb3_suite.fetch(tmp_path, version)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"SB3's tests could not be fetched (needs pip and the package index): {exc}")
    ours = sb3_suite.run(suite, ours=True, tests=listed, timeout=480)
    outcome = ours["outcomes"]
    ran = [t for t in listed if t in outcome]  # a module that cannot be imported here is absent
    failed = [t for t in ran if outcome[t] != "passed"]
    passed_with_sb3 = []
    if failed:
        theirs = sb3_suite.run(suite, ours=False, tests=failed, timeout=300)
        passed_with_sb3 = [t for t in failed if theirs["outcomes"].get(t) == "passed"]
    assert not passed_with_sb3, (f"fail only with fastdqn's buffer: {passed_with_sb3}; "
                                 f"log: {suite / 'fastdqn.log'}")
    # Most of the list ran here, and the swap happened in every test that passed.
    assert len(ran) >= 0.8 * len(listed), f"only {len(ran)} of {len(listed)} ran: {ours['summary']}"
    assert {t for t in ran if outcome[t] == "passed"} <= set(ours["swapped"])
