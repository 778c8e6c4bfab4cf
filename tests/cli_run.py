"""Running the real `n2n` entry point in-process, and reading its one-line errors."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from n2ncli import cli


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_n2n(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> Run:
    """``n2n ARGS`` through ``cli.main`` (exit codes as a shell sees them)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["n2n", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def error_line(run: Run) -> str:
    """The single 'error:' line of a failed command; no traceback anywhere."""
    assert "Traceback" not in run.err + run.out
    errors = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.err
    assert run.err.rstrip().splitlines()[-1] == errors[0]
    return errors[0]
