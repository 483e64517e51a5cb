"""The check every bad-input test makes: exit status 2, one line, no file created."""

from __future__ import annotations

from fastdqn.tools.cli import main


def fails(argv, capsys, workdir, *expected):
    """Run main(argv); expect status 2, a one-line error naming `expected`, no new file in workdir."""
    before = sorted(p.name for p in workdir.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastdqn: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == before, "a bad input created files"
    return lines[0]
