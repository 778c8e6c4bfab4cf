"""The `n2n` command's conventions: its help, global flags after the command, shell completion,
and output that works in logs and pipes (plain progress lines, tables not cut at 80 columns).

The pipe tests run the real command in a child process with its output going to a pipe, as
under nohup, cron or CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n2ncli import cli
from n2ncli.device import DEVICE_CHOICES
from n2ncli.errors import N2nError
from n2ncli.nets.unet import UNet
from n2ncli.store import save_model
from cli_run import Run

COMMANDS = [[], ["denoise"], ["fit"], ["eval"], ["models"], ["models", "list"], ["models", "show"],
            ["models", "rm"], ["models", "path"], ["models", "export"]]
ANSI = re.compile(r"\x1b\[")


def _help(*command: str, columns: int = 200) -> str:
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(cli.app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    """Help text without the panels' borders and line breaks, to search for wrapped phrases."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "n2n")
def test_help_shows_flags_bare_and_values_by_name(command: list[str]) -> None:
    text = _help(*command)
    for python_type in ("<bool>", "<str>", "<int>", "<float>", "<path>", "list[", "{"):
        assert python_type not in text, f"{python_type} in the help of n2n {' '.join(command)}"


def test_usage_lines_read_as_in_other_clis() -> None:
    assert "Usage: n2n denoise [OPTIONS] INPUT..." in _help("denoise")
    assert "Usage: n2n fit [OPTIONS] INPUT..." in _help("fit")
    assert "Usage: n2n models path [OPTIONS] [MODEL]" in _help("models", "path")
    denoise = _flat(_help("denoise"))
    assert "--tile TEXT" in denoise and "--overlap INTEGER" in denoise and "--adapt STEPS" in denoise
    assert re.search(r"--self-ensemble Average", denoise), "a flag takes no value"


def test_square_brackets_in_help_survive() -> None:
    """Help is plain text: `[bm3d]` is not swallowed as markup."""
    assert "pip install 'n2ncli[bm3d]'" in _flat(_help("eval"))


def test_no_help_text_has_an_unescaped_square_bracket() -> None:
    """typer reads option help as rich markup, so a literal `[` must be written `\\[`."""
    source = Path(cli.__file__).read_text(encoding="utf-8")
    for text in re.findall(r'help="((?:[^"\\]|\\.)*)"', source):
        assert not re.search(r"(?<!\\)\[", text), f"unescaped [ in help: {text}"


def test_every_device_option_lists_the_same_devices() -> None:
    for command in ("denoise", "fit", "eval"):
        assert DEVICE_CHOICES in _flat(_help(command)), command


def test_command_list_keeps_each_summary_on_its_own_lines() -> None:
    """A docstring's line breaks do not break the command list mid-sentence."""
    text = _flat(_help())
    assert "images keep bit depth, EXIF and ICC profile, raws become a DNG" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_and_debug_go_before_or_after_the_command(n2n: Callable[..., Run], tmp_path: Path,
                                                          photo: Path, where: str) -> None:
    args = ["denoise", photo, "-o", tmp_path / "out.png", "--backend", "torch"]
    run = n2n("-v", *args) if where == "before" else n2n(*args, "-v")
    assert run.code == 0, run.err
    assert "--tile auto:" in run.err and (tmp_path / "out.png").exists()  # a --verbose note
    quiet = n2n(*args[:3], tmp_path / "quiet.png", *args[4:])
    assert quiet.code == 0 and "--tile auto:" not in quiet.err
    with pytest.raises(N2nError, match="unknown model"):  # --debug after the command: raised, not one line
        n2n("models", "show", "no-such-model", "--debug")


def test_an_unknown_option_after_the_command_is_still_a_usage_error(n2n: Callable[..., Run], photo: Path) -> None:
    run = n2n("denoise", photo, "--no-such-option")
    assert run.code == 2 and "No such option" in run.err + run.out


def test_hoisting_stops_at_double_dash() -> None:
    assert cli._hoist_global_flags(["denoise", "a.png", "-v"]) == ["-v", "denoise", "a.png"]
    assert cli._hoist_global_flags(["denoise", "--", "-v"]) == ["denoise", "--", "-v"]
    assert cli._hoist_global_flags(["--debug", "fit", "x"]) == ["--debug", "fit", "x"]


def test_shell_completion_completes_commands_and_options() -> None:
    env = {**os.environ, "_N2N_COMPLETE": "complete_bash", "COMP_WORDS": "n2n denoise --ski", "COMP_CWORD": "2"}
    proc = subprocess.run([str(Path(sys.executable).parent / "n2n")], env=env,  # the installed command
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--skip-existing"]
    assert "--install-completion" in _flat(_help())


# ------------------------------------------------------------------------------- logs and pipes

def _piped(*args: object, cwd: Path, seconds: str = "0") -> subprocess.CompletedProcess[str]:
    """``n2n ARGS`` with stdout and stderr going to pipes (no terminal, no COLUMNS)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(OMP_NUM_THREADS="1", N2N_PROGRESS_SECONDS=seconds)
    return subprocess.run([sys.executable, "-m", "n2ncli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def photo(tmp_path: Path, kodak_crop) -> Path:  # noqa: ANN001
    path = tmp_path / "photo.png"
    Image.fromarray(kodak_crop(200, 300, 48, 64)).save(path)
    return path


@pytest.fixture
def three_photos(tmp_path: Path, kodak_crop) -> Path:  # noqa: ANN001
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(("kodim01.png", "kodim03.png", "kodim05.png")):
        Image.fromarray(kodak_crop(64 * i, 64, 96, 96, image=name)).save(folder / f"p{i}.png")
    return folder


def test_fit_in_a_pipe_prints_plain_progress_lines(tmp_path: Path, three_photos: Path) -> None:
    proc = _piped("fit", three_photos, "--noise", "gaussian25", "--steps", "4", "--crop", "64", "--name", "piped",
                  "--no-self-check", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    steps = [ln for ln in lines if ln.startswith("training piped: ")]
    assert [re.match(r"training piped: (\d)/4 \(\d+%\)", ln).group(1) for ln in steps] == ["1", "2", "3", "4"]
    assert all(re.search(r"loss \d\.\d{5} .* it/s, \d+:\d\d elapsed, ETA \d+:\d\d$", ln) for ln in steps), steps
    assert not any("nan" in ln for ln in lines), "figures printed before the first step"
    assert not ANSI.search(proc.stderr) and "\r" not in proc.stderr
    assert lines[-1].startswith("done: model piped from 3 image(s)")


def test_a_quick_run_in_a_pipe_prints_no_progress_lines(tmp_path: Path, three_photos: Path) -> None:
    """At the default interval a run of a few seconds logs its outcome only."""
    proc = _piped("denoise", three_photos, "-o", tmp_path / "out", cwd=tmp_path, seconds="600")
    assert proc.returncode == 0, proc.stderr
    assert not any(ln.startswith("images:") for ln in proc.stderr.splitlines()), proc.stderr
    assert "wrote 3 file(s)" in proc.stderr


def test_denoise_in_a_pipe_logs_each_file(tmp_path: Path, three_photos: Path) -> None:
    proc = _piped("denoise", three_photos, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = re.findall(r"^images: (\d)/3 \(\d+%\)", proc.stderr, flags=re.M)
    assert counts[-1] == "3" and counts == sorted(counts)
    assert not ANSI.search(proc.stderr)


def test_piped_tables_are_not_cut_at_80_columns(tmp_path: Path, n2n_home: Path) -> None:
    name = "a-model-with-a-name-much-longer-than-a-table-column-would-allow"
    save_model(name, UNet(3, features=8), kind="srgb", noise="gaussian25", training={"steps": 1},
               root=n2n_home / "models", dtype=torch.float32)
    proc = _piped("models", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert name in proc.stdout and max(map(len, proc.stdout.splitlines())) > 80
