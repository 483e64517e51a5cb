"""The Numba kernels in kernels/ must ship as fastdqn.kernels, editable and as a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_kernels_import_as_fastdqn_kernels():
    import fastdqn.kernels

    assert Path(fastdqn.kernels.__file__).resolve().parent == REPO / "kernels"


def test_built_wheel_contains_kernels(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
    )
    (wheel,) = tmp_path.glob("fastdqn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"fastdqn/kernels/{p.name}" for p in (REPO / "kernels").glob("*.py")}
    assert expected, "kernels/ holds no modules"
    assert expected <= names, f"missing from wheel: {sorted(expected - names)}"
    assert "fastdqn/__init__.py" in names


def test_replay_import_does_not_pull_torch_or_envpool():
    code = (
        "import sys; from fastdqn import ReplayBuffer; "
        "bad = [m for m in ('torch', 'envpool') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
