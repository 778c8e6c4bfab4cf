"""The `n2n` command: parses arguments, calls the library, draws progress. Nothing else."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from n2ncli import __version__
from n2ncli.device import DEVICE_CHOICES
from n2ncli.errors import N2nError

app = typer.Typer(
    name="n2n", no_args_is_help=True, add_completion=True, pretty_exceptions_show_locals=False,
    help="Remove noise from photos with Neighbor2Neighbor: train on your own noisy images, then denoise. "
         "-v and --debug go before or after the command.",
)
models_app = typer.Typer(no_args_is_help=True, help="List, inspect and remove models in the store.")
app.add_typer(models_app, name="models")
console = Console(stderr=True)
out = Console()
_state = {"debug": False, "verbose": False, "interrupt_said": False}


# --------------------------------------------------------------------------- help and consoles

def _value_name(param: Any) -> str | None:
    """What a parameter's help shows for its value: nothing for a flag, else its METAVAR or a
    click-style name of its type (TEXT, INTEGER, FLOAT, PATH)."""
    if param.metavar is not None:
        return param.metavar or None
    if getattr(param, "is_flag", False) or getattr(param, "secondary_opts", None):
        return None
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    for kind in getattr(annotation, "__args__", None) or (annotation,):
        if kind is bool:
            return None
        names = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}
        if kind in names:
            return names[kind]
    return "VALUE"


def _tidy_help() -> None:
    """Help as the CLIs people know write it.

    typer 0.2x prints every parameter's Python type (``<bool>`` after each flag,
    ``<list[Path]>``) and required arguments as ``{name}``; older typer (click) already
    prints flags bare and ``INPUT...``. Guarded so that another typer keeps its own help.
    """
    core = getattr(typer, "core", None)
    option, argument = getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)
    if option is None or argument is None or not hasattr(option, "display_type_rich"):
        return
    option.display_type_rich = lambda self, ctx: _value_name(self)  # noqa: ARG005
    argument.display_type_rich = lambda self, ctx: None  # noqa: ARG005 - the name column says it
    if hasattr(argument, "_usage_display_name"):
        argument._usage_display_name = lambda self: (self.display_name_raw if self.required
                                                     else f"[{self.display_name_raw}]") + ("..." if self.nargs != 1 else "")
    if hasattr(argument, "_rich_display_name"):
        argument._rich_display_name = lambda self: self.display_name_raw + ("..." if self.nargs != 1 else "")


def _command_help(typer_app: typer.Typer) -> None:
    """Each command's help from its docstring as one paragraph (rich help keeps the docstring's
    line breaks), escaped: help is plain text, never markup. Option help strings are evaluated
    by typer itself, so a literal ``[`` in them is written ``\\[``."""
    for each in [typer_app] + [group.typer_instance for group in typer_app.registered_groups]:
        for command in each.registered_commands:
            if command.help is None and command.callback.__doc__:
                command.help = escape(" ".join(command.callback.__doc__.split()))


def _fit_consoles() -> None:
    """Off a terminal (a log file, a pipe) nothing is cut at 80 columns; COLUMNS still rules."""
    if "COLUMNS" in os.environ:
        return
    for each in (console, out):
        each.width = None if each.is_terminal else 100_000  # type: ignore[assignment]


#: Options every command takes before or after its name (hoisted in front of it).
_GLOBAL_FLAGS = frozenset({"-v", "--verbose", "--debug"})


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """``n2n denoise -v x.png`` as ``n2n -v denoise x.png``: the global flags may follow the
    command (up to a ``--``), as users type them."""
    head: list[str] = []
    rest: list[str] = []
    seen_command = False
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        if seen_command and arg in _GLOBAL_FLAGS:
            head.append(arg)
        else:
            seen_command = seen_command or not arg.startswith("-")
            rest.append(arg)
    return head + rest


def _version(value: bool) -> None:
    if value:
        out.print(f"n2ncli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more about what happens.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    _state["debug"], _state["verbose"] = debug, verbose
    if debug:  # the library's debug log (e.g. what LibRaw said about a file it still read)
        import logging

        class _ConsoleLog(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                console.print(f"[dim]debug: {escape(self.format(record))}[/]", highlight=False, soft_wrap=True)

        log = logging.getLogger("n2ncli")
        if not any(type(h).__name__ == "_ConsoleLog" for h in log.handlers):
            log.addHandler(_ConsoleLog())
        log.setLevel(logging.DEBUG)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _error(message: str, where: Console | None = None) -> None:
    """One file's failure inside a run that goes on (the run's exit status says it failed)."""
    (where or console).print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- denoise

@app.command()
def denoise(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Image files (PNG, JPEG, TIFF incl. 32-bit float, HEIC/HEIF, AVIF, WebP), raw files (DNG, CR2, NEF, ARW, ...), folders, or - for an image on stdin.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (one input) or folder, or - for stdout (one image; the format from --format, else the input's). Default: beside each input as <stem>.n2n.<ext> (.dng for raws); stdout for stdin.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model name in the store, or a model folder. Default: srgb-camera for photos whose noise is correlated between pixels (camera and phone JPEGs), grey-gaussian5-50 for greyscale photos with independent noise, the blind srgb-gaussian5-50 for the others; for raws your newest fitted raw model (or -m raw-camera, shipped).")] = None,
    backend: Annotated[str, typer.Option(help="auto (on a CPU with bf16 units, AVX-512 BF16 or AMX: PyTorch bf16; on other CPUs ONNX Runtime when installed; PyTorch on GPUs), torch or onnx.")] = "auto",
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (fp16 on CUDA, bf16 on CPUs with bf16 units for at most 0.015 dB, else fp32; the status line says which), or fp32, bf16, fp16 on PyTorch (fp16 on a CPU runs as bf16 or fp32).")] = "auto",
    tile: Annotated[str, typer.Option(help="Tile size in pixels (multiple of 32; 0 = whole image), or auto: from free memory (RAM, or VRAM on a GPU).")] = "auto",
    overlap: Annotated[int, typer.Option(help="Pixels blended between neighbouring tiles.")] = 32,
    batch: Annotated[int, typer.Option(help="Tiles per network call.")] = 1,
    output_format: Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", help="Output format for folder runs and stdout: png, tif, jpg, heic, avif, webp, or dng for raws (default: as the input; dng for raws).")] = None,
    quality: Annotated[Optional[int], typer.Option(metavar="1-100", help="Quality of lossy outputs (JPEG, HEIC, AVIF, WebP). Default: an input of the same format is matched (a camera JPEG keeps about its quality and 4:2:0 chroma), else JPEG 95, WebP 95, AVIF 90, HEIC 70.")] = None,
    suffix: Annotated[str, typer.Option(metavar="TEXT", help="Added to output names between stem and extension (IMG_1.n2n.jpg); folder runs skip inputs named with it.")] = ".n2n",
    linear: Annotated[bool, typer.Option(help="Raw to TIFF/PNG: linear 16-bit instead of sRGB gamma.")] = False,
    dng_compression: Annotated[str, typer.Option("--dng-compression", metavar="lossless|none", help="Raw to DNG: lossless JPEG tiles (about the size of a camera's compressed raw), or none (uncompressed, 2 bytes a photosite).")] = "lossless",
    noise_guard: Annotated[bool, typer.Option("--noise-guard/--no-noise-guard", help="Raws: where the model would change an area by more than the noise measured on the raw, keep part of the original (fine detail at low ISO).")] = True,
    keep_mean: Annotated[bool, typer.Option("--keep-mean/--no-keep-mean", help="Give the output back the input's local mean (over about 4-16 px; raws after the noise guard), which the networks shift slightly in colour and brightness.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (never the inputs).")] = False,
    skip_existing: Annotated[bool, typer.Option(help="Skip inputs whose output exists (continue an interrupted folder run).")] = False,
    self_ensemble: Annotated[bool, typer.Option("--self-ensemble", help="Average the 8 flips/rotations (8x slower, usually a little cleaner).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="PyTorch backend through torch.compile: each tile shape compiles once (tens of seconds), worth it for long runs on a GPU.")] = False,
    pd: Annotated[str, typer.Option("--pd", help="Pixel-shuffle stride for sRGB images: auto (2 where the image's noise is correlated between pixels, as in camera JPEGs; else 1), 1, 2 or 3.")] = "auto",
    adapt: Annotated[int, typer.Option("--adapt", metavar="STEPS", help="First fine-tune the sRGB model on these photos for up to STEPS self-supervised steps (0: off); it is used only if it lowered their self-supervised loss.")] = 0,
    adapt_minutes: Annotated[float, typer.Option(help="Time limit of --adapt, in minutes.")] = 5.0,
) -> None:
    """Denoise images and raws with a trained model, in tiles; images keep bit depth, EXIF and ICC
    profile, raws become a DNG of the denoised mosaic or a 16-bit render."""
    from n2ncli.batch import DenoiseRequest, execute, load_models, plan_run

    request = DenoiseRequest(
        inputs=tuple(inputs), output=output, model=model, backend=backend, device=device, precision=precision,
        tile=tile, overlap=overlap, batch=batch, output_format=output_format, linear=linear, overwrite=overwrite,
        skip_existing=skip_existing, self_ensemble=self_ensemble, compile=compile_, pd=pd, adapt=adapt,
        adapt_minutes=adapt_minutes, quality=quality, name_suffix=suffix,
        dng_compression=dng_compression.strip().lower(), noise_guard=noise_guard,
        keep_mean=keep_mean)
    run = plan_run(request)
    for line in run.failed:
        _error(line)
    for line in run.skipped:
        _warn(f"skipped {line}")
    idle = run.idle_reason()
    if idle is not None:
        if run.failed:
            raise typer.Exit(1)
        console.print(escape(idle), highlight=False)
        return
    if adapt and any(job.kind == "srgb" for job in run.jobs):
        _load_adapted(run)
    else:
        load_models(run)
    if _state["verbose"]:
        for note in run.notes:
            console.print(f"[dim]{escape(note)}[/]", highlight=False)
    used = ", ".join(f"[bold]{r.name}[/] ({r.noise}{', noise guard' if k == 'raw' and noise_guard else ''})"
                     for k, r in run.records.items())
    if run.camera is not None:
        used = (f"[bold]{run.camera.name}[/] for photos with camera-correlated noise (JPEGs from cameras and phones), "
                f"{used} for the others")
    if run.grey is not None:
        used += f", [bold]{run.grey.name}[/] for greyscale ones"
    console.print(f"model {used} on {escape(run.where)}; {len(run.jobs)} file(s)", highlight=False)
    t0 = time.perf_counter()
    with _progress() as progress:
        files = progress.add_task("images", total=len(run.jobs))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def on_start(job) -> None:  # noqa: ANN001 - every callback runs on this (the main) thread
            name = "<stdin>" if str(job.source) == "-" else job.source.name
            progress.reset(tiles, total=None, visible=True, description=escape(name))  # its own clock

        finished = [0]  # files done or failed, for an interrupted run's last line

        def on_done(job, warnings: tuple[str, ...]) -> None:  # noqa: ANN001
            for w in warnings:
                _warn(f"{job.source}: {w}")
            finished[0] += 1
            progress.update(files, advance=1)
            if _state["verbose"] or len(run.jobs) == 1:
                where = "stdout" if str(job.target) == "-" else escape(str(job.target))
                progress.console.print(f"wrote {where}", highlight=False)

        def on_failed(job, line: str) -> None:  # noqa: ANN001
            finished[0] += 1
            progress.update(files, advance=1)
            _error(line, progress.console)

        def on_retry(smaller, exc: BaseException) -> None:  # noqa: ANN001
            _warn(f"out of memory; retrying with --tile {smaller.tile}")

        def on_skipped(job, line: str) -> None:  # noqa: ANN001 - a raw kind found only by its decode
            finished[0] += 1
            progress.update(files, advance=1)
            if request.one_file:
                _error(line, progress.console)
            else:
                _warn(f"skipped {line}")

        try:
            result = execute(run, on_start=on_start, on_done=on_done, on_failed=on_failed, on_retry=on_retry,
                             on_skipped=on_skipped, on_tile=lambda d, n: progress.update(tiles, completed=d, total=n))
        except KeyboardInterrupt:
            progress.stop()
            done = finished[0]
            left = len(run.jobs) - done
            again = "" if request.skip_existing else " with --skip-existing"
            console.print(f"[yellow]interrupted[/] after {done} of {len(run.jobs)} file(s) in "
                          f"{time.perf_counter() - t0:.0f} s; nothing half-written was left behind. "
                          f"To do the other {left}, run the same command again{again}.", highlight=False)
            _state["interrupt_said"] = True
            raise typer.Exit(130) from None
        progress.update(tiles, visible=False)
    failed = len(run.failed) + len(result.failed)
    if request.one_file and (failed or result.skipped):
        raise typer.Exit(1)  # one file asked for: its error line above says it all
    counts = [f"wrote {len(result.written)}"]
    skipped = len(run.skipped) + len(result.skipped) + run.plan.existing
    if skipped:
        counts.append(f"skipped {skipped}")
    if failed:
        counts.append(f"[red]failed {failed}[/]")
    console.print(f"denoised in {time.perf_counter() - t0:.1f} s: {', '.join(counts)} file(s)", highlight=False)
    if failed:
        raise typer.Exit(1)


def _load_adapted(run) -> None:  # noqa: ANN001
    """load_models with --adapt's fine-tune drawn as a progress bar, then its verdict."""
    from n2ncli.adapt import MAX_IMAGES
    from n2ncli.batch import load_models
    from n2ncli.pd import CORRELATED

    photos = sum(job.kind == "srgb" for job in run.jobs)
    with _progress(TextColumn("{task.fields[loss]}")) as progress:
        task = progress.add_task(f"adapting to {min(photos, MAX_IMAGES)} photo(s)", total=run.request.adapt, loss="")

        def on_progress(p) -> None:  # noqa: ANN001
            if p.event == "step":
                progress.update(task, completed=p.step, loss=f"loss {p.loss:.5f}")

        load_models(run, on_adapt=on_progress)
    done = run.adapted
    c = done.check
    name = run.adapted_from.name
    if c is None:
        console.print(f"--adapt: [yellow]skipped[/]: these photos' noise is correlated (luma {done.luma:.2f} > "
                      f"{CORRELATED}), where a fine-tune on the photos alone cannot check itself and lowered real "
                      "camera pairs by 0.6 dB (docs/real-noise.md); denoising as without --adapt", highlight=False)
        return
    verdict = (f"[green]used[/]: their self-supervised loss {c.before:.6f} -> {c.after:.6f} ({c.change:+.1%})" if done.used
               else f"[yellow]not used[/]: it raised their self-supervised loss {c.before:.6f} -> {c.after:.6f} "
                    f"({c.change:+.1%}); denoising with {name} as it is")
    console.print(f"--adapt: {done.steps} step(s) of {name} in {done.seconds:.0f} s at pd {done.pd}; {verdict}",
                  highlight=False)


def _progress(*extra: TextColumn) -> "Progress | _LineProgress":
    """Bars on a terminal; plain lines at a steady interval in a log file or a pipe."""
    if not console.is_terminal:
        return _LineProgress(*extra)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)


#: Seconds between two progress lines of a task off a terminal (N2N_PROGRESS_SECONDS overrides).
LINE_PROGRESS_SECONDS = 15.0


class _Line:
    """One task of :class:`_LineProgress`."""

    def __init__(self, description: str, total: float | None, visible: bool, fields: dict) -> None:
        self.description, self.total, self.visible, self.fields = description, total, visible, fields
        self.completed = 0.0
        self.started = self.said_at = time.monotonic()
        self.said: float | None = None  # the count of its last line (None: none yet)


class _LineProgress:
    """The part of rich's Progress that the commands use, for output that is not a terminal:
    a redrawn bar would write nothing until the end (or garbage) into a log, so each task
    prints a plain line (count, its fields, rate, ETA) every LINE_PROGRESS_SECONDS, and its
    last state at the end if it printed any."""

    def __init__(self, *columns: TextColumn) -> None:
        self.console = console
        self.columns = columns
        self.tasks: dict[int, _Line] = {}
        env = os.environ.get("N2N_PROGRESS_SECONDS")
        try:
            self.interval = float(env) if env else LINE_PROGRESS_SECONDS
        except ValueError:
            self.interval = LINE_PROGRESS_SECONDS

    def __enter__(self) -> "_LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task in self.tasks.values():
            if task.said is not None and task.said != task.completed:
                self._say(task)

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **fields: Any) -> int:
        key = len(self.tasks)
        self.tasks[key] = _Line(description, total, visible, fields)
        return key

    def reset(self, key: int, *, total: float | None = None, visible: bool = True, description: str | None = None) -> None:
        task = self.tasks[key]
        task.total, task.visible, task.completed = total, visible, 0.0
        task.started, task.said = time.monotonic(), None
        if description is not None:
            task.description = description

    def update(self, key: int, *, completed: float | None = None, total: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               **fields: Any) -> None:
        task = self.tasks[key]
        if description is not None and description != task.description:
            task.description, task.started, task.said = description, time.monotonic(), None
        if visible is not None:
            task.visible = visible
        if total is not None or completed == 0:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance:
            task.completed += advance
        task.fields.update(fields)
        if task.visible and task.completed and time.monotonic() - task.said_at >= self.interval:
            self._say(task)

    def _say(self, task: _Line) -> None:
        now = time.monotonic()
        elapsed = now - task.started
        parts = [f"{task.completed:.0f}/{task.total:.0f} ({task.completed / task.total:.0%})" if task.total
                 else f"{task.completed:.0f}"]
        view = _TaskView(task.description, task.fields)
        parts += [text for text in (c.text_format.format(task=view).strip() for c in self.columns) if text]
        parts.append(f"{_clock(elapsed)} elapsed")
        if task.total and task.completed and elapsed > 0:
            rate = task.completed / elapsed
            parts.append(f"ETA {_clock((task.total - task.completed) / rate)}")
        self.console.print(f"{escape(task.description)}: {', '.join(parts)}", highlight=False)
        task.said_at, task.said = now, task.completed


class _TaskView:
    """What a TextColumn's format string reads of a task."""

    def __init__(self, description: str, fields: dict) -> None:
        self.description, self.fields = description, fields


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --------------------------------------------------------------------------- fit

@app.command()
def fit(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Folders or files of noisy photos or raw files (or clean ones with --noise).", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Model name in the store (default: the folder's name).")] = None,
    kind: Annotated[str, typer.Option(help="auto (raw when the inputs are raw files), srgb or raw: which files of a mixed folder to train on.")] = "auto",
    noise: Annotated[Optional[str], typer.Option(help="Add synthetic noise to clean images: gaussian25, gaussian5-50, poisson30, poisson5-50, gaussian:SIGMA, poisson:LAMBDA, jpeg (Gaussian sigma 5-50 saved as an 8-bit file: JPEG 4:2:0, 4:4:4 or none; jpeg:SIGMA, jpeg:LO-HI), camera (real-camera noise: a random camera and ISO, developed to 8-bit/JPEG); for clean raws poisson-gaussian:A,B (variance A*x+B, normalised).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the images (default 100, as the paper).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Training steps (instead of --epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Crops per step in each process (default 4); the global batch is this x the number of processes. A resume keeps the run's global batch.")] = None,
    crop: Annotated[int, typer.Option(help="Crop size in pixels (smaller images are used whole); for raws in 2x2 cells, so 256 covers 512x512 sensor pixels.")] = 256,
    lr: Annotated[Optional[float], typer.Option(help="Adam learning rate, halved at 20/40/60/80 % of training (default: 3e-4 from scratch as the paper, 1e-4 when warm-starting and for raws).")] = None,
    reg_weight: Annotated[Optional[float], typer.Option(help="Regulariser weight gamma at the end of its linear ramp from 0 (default 2, raw 1: the paper's).")] = None,
    reg_constant: Annotated[bool, typer.Option(help="Keep gamma constant instead of ramping it.")] = False,
    sampler: Annotated[str, typer.Option(help="random (the paper) or fixed (the ablation).")] = "random",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Data-loading worker processes (default: 0 when the images fit in memory, else up to 4).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run of this --name from its last checkpoint.")] = False,
    val: Annotated[Optional[Path], typer.Option(help="Validation folder: noisy/ + clean/ pairs, or clean images with --noise.")] = None,
    init: Annotated[str, typer.Option(help="Start from: default (the shipped model), none, or a model name/path.")] = "default",
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA), fp32, bf16, fp16.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (also every 5 minutes and on Ctrl-C).")] = 500,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model of this name.")] = False,
    gpus: Annotated[int, typer.Option(help="Train with N processes on this machine, one per GPU (DDP). With --device cpu: N CPU processes (gloo). Under torchrun leave it out.")] = 1,
    lr_scaling: Annotated[str, typer.Option(help="With several processes: none keeps --lr, linear multiplies it by the number of processes.")] = "none",
    sharding: Annotated[str, typer.Option(help="With several processes: replicate (every process decodes every file; the same run as one process), shard (each decodes 1/N of the files) or auto (shard only when the decoded set outgrows memory).")] = "auto",
    pd: Annotated[str, typer.Option("--pd", help="Pixel-shuffle stride of the training inputs: auto (2 when the photos' noise is correlated between pixels, as in camera JPEGs), 1, 2 or 3.")] = "auto",
    self_check: Annotated[bool, typer.Option("--self-check/--no-self-check", help="Hold back 1 in 8 images (up to 4; with fewer than 5, a strip of each) and check the fit on them: self-supervised loss and colour (channel means); a raw fit that fails never becomes the default.")] = True,
) -> None:
    """Train a denoiser on your own noisy photos or raws (self-supervised), or on clean ones with --noise."""
    from n2ncli.distributed import env_rank
    from n2ncli.fit import FitRequest, default_name
    from n2ncli.fit import fit as run_fit
    from n2ncli.pd import CORRELATED

    if name is None:
        name = default_name(inputs)
    request = FitRequest(
        inputs=tuple(inputs), name=name, kind=kind.lower(), noise=noise, steps=steps, epochs=epochs, batch_size=batch_size, crop=crop,
        lr=lr, gamma_end=reg_weight, gamma_constant=reg_constant, sampler=sampler, seed=seed, device=device,
        workers=workers, resume=resume, val=val, init=init, precision=precision, compile=compile_,
        checkpoint_every=checkpoint_every, overwrite=overwrite, gpus=gpus, lr_scaling=lr_scaling, sharding=sharding,
        pd=pd, self_check=self_check,
    )
    if env_rank() != 0:  # a torchrun rank other than 0: rank 0 shows the progress and the outcome
        run_fit(request)
        return
    columns = (TextColumn("{task.fields[stats]}{task.fields[val]}"),)
    with _progress(*columns) as progress:
        task = progress.add_task("loading", total=None, stats="", val="")  # no figures before the first step

        def on_loading(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_progress(p) -> None:  # noqa: ANN001
            if p.event == "step":
                progress.update(task, description=f"training {escape(name)}", completed=p.step, total=p.total,
                                stats=f"loss {p.loss:.5f}  γ {p.gamma:.2f}  lr {p.lr:.1e}  {p.steps_per_second:.2f} it/s")
            elif p.event == "validation":
                progress.update(task, val=f"  val {p.val_psnr:.2f} dB")
            elif p.event == "resumed":
                progress.console.print(f"resuming {escape(name)} from its checkpoint at step {p.step} of {p.total}",
                                       highlight=False)
            elif p.event == "checkpoint" and _state["verbose"]:
                progress.console.print(f"checkpoint at step {p.step}: {escape(str(p.checkpoint))}", highlight=False)
            elif p.event == "unverifiable":
                progress.console.print(
                    f"[yellow]warning:[/] these photos' noise is correlated (luma {p.noise_luma:.2f} > {CORRELATED}): "
                    "the self-check will not be able to tell whether this fit helps (on real camera pairs such fits "
                    "lost 0.7 dB while lowering its loss); training anyway", highlight=False)

        outcome = run_fit(request, on_progress=on_progress, on_loading=on_loading)
    for line in outcome.skipped:
        _warn(f"skipped {line}")
    r = outcome.result
    val = f", val PSNR {r.val_psnr:.2f} dB" if r.val_psnr is not None else ""
    resumed = f" (resumed at step {outcome.resumed_from})" if outcome.resumed_from is not None else ""
    console.print(
        f"[green]done:[/] model [bold]{outcome.record.name}[/] from {outcome.images} {'raw file' if outcome.record.kind == 'raw' else 'image'}(s), {r.steps} steps{resumed} in "
        f"{r.seconds / 60:.1f} min (init: {outcome.init}, pd {outcome.pd}: {outcome.pd_reason}), final loss "
        f"{r.final_loss:.5f}{val} -> {escape(str(outcome.record.folder))}",
        highlight=False)
    _fit_verdict(outcome)


def _fit_verdict(outcome) -> None:  # noqa: ANN001 - fit.FitOutcome
    """The self-check's result and any reason not to trust the model, in plain words."""
    from n2ncli.fit import SCRATCH_MIN_STEPS
    from n2ncli.pd import CORRELATED

    raw = outcome.record.kind == "raw"
    if outcome.too_brief:
        _warn(f"trained from scratch for only {outcome.result.steps} steps (a model from scratch needs "
              f"{SCRATCH_MIN_STEPS} or more): expect blur and wrong colours; leave out --init none to start "
              "from the shipped model")
    if outcome.unchecked:
        _warn(f"not self-checked ({outcome.unchecked})")
    check = outcome.check
    if check is None:
        return
    where = (f"strips of {check.images} {'raw file' if raw else 'image'}(s)" if check.held == "strips"
             else f"{check.images} {'raw file' if raw else 'image'}(s)")
    loss = (f"held-out loss {check.before:.6f} -> {check.after:.6f} ({check.change:+.1%}) on {where} "
            "the fit did not train on")
    colour = check.colour_after
    if check.loss_passed and check.colour_passed and not check.verifiable:
        _warn(f"this fit cannot be checked on these photos: their noise is correlated (luma {check.noise_luma:.2f} > "
              f"{CORRELATED}), where fits on the photos alone lowered real camera pairs by 0.7 dB while lowering "
              f"the self-check's loss, as this one did ({loss}); keep using the model you used before "
              "(docs/real-noise.md)")
        return
    if check.passed:
        kept = f"; colours kept ({colour.describe()}, limit {check.colour_limit:.0%})" if colour else ""
        console.print(f"self-check: {loss}: better than {check.baseline}{kept}", highlight=False)
        return
    problems = []
    if not check.loss_passed:
        problems.append(f"{loss}, against {check.baseline}")
    if not check.colour_passed:
        problems.append(f"the fitted model shifts the colours ({colour.describe()} on held-out patches, "
                        f"at most {check.colour_limit:.0%} expected)")
    if not raw:
        kept = "keep using the model you used before"
    elif outcome.raw_default:
        kept = f"kept {outcome.raw_default} as the default raw model"
    else:
        kept = "no raw model is the default (name one with -m, e.g. -m raw-camera)"
    hints = "more images, more steps" + (" or --pd 2" if not check.loss_passed and not raw and outcome.pd == 1 else "") + \
        (", without --init none" if outcome.init == "none" else "")
    _warn(f"this fit made things WORSE: {'; '.join(problems)}; {kept} (try {hints})")


# --------------------------------------------------------------------------- eval

@app.command("eval")
def evaluate_cmd(
    dataset: Annotated[str, typer.Option(help="Dataset name(s), comma-separated (kodak, bsd300, cbsd68, set14, mcmaster), or a folder of clean images.")] = "kodak",
    noise: Annotated[str, typer.Option(help="gaussian25, gaussian5-50, poisson30, poisson5-50, gaussian:SIGMA, poisson:LAMBDA, or all (the four presets); comma-separated for several.")] = "gaussian25",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model name or folder (default: the shipped blind model).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Local copy of the dataset (skips the download).")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="Noise draws per image (default: the paper's: Kodak 10, BSD300 3, Set14 20, others 1).")] = None,
    seed: Annotated[int, typer.Option(help="Noise seed (the paper's code uses 101).")] = 101,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N images.")] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    backend: Annotated[str, typer.Option(help="auto (the fastest available), torch or onnx.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 (the paper's protocol), auto (the backend's choice: fp16 on CUDA, bf16 on CPUs with bf16 units), bf16 or fp16 (PyTorch autocast).")] = "fp32",
    batch: Annotated[Optional[int], typer.Option(help="Noisy repeats denoised per network call (default: up to 10 on a GPU, 1 on CPU).")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="Score on real noise: a folder of noisy/ + clean/ subfolders, or NAME_real.* + NAME_mean.* files.")] = None,
    fit_first: Annotated[bool, typer.Option("--fit-first", help="With --pairs: first fit a model on the noisy images (self-supervised), then score it.")] = False,
    fit_steps: Annotated[int, typer.Option(help="Training steps for --fit-first.")] = 200,
    self_ensemble: Annotated[bool, typer.Option("--self-ensemble", help="Also score the model averaged over the 8 flips/rotations (8x slower).")] = False,
    bm3d: Annotated[bool, typer.Option("--bm3d", help="Also score BM3D (needs: pip install 'n2ncli\\[bm3d]').")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results (summary and per image) as JSON.")] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Write the per-image scores as CSV.")] = None,
    report_dir: Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report (index.html + crop PNGs) into this folder.", file_okay=False)] = None,
    pd: Annotated[str, typer.Option("--pd", help="Pixel-shuffle stride: auto (with --pairs chosen per image as denoise does; 1 for synthetic noise, the paper's protocol), 1, 2 or 3.")] = "auto",
) -> None:
    """Score a model with the paper's protocol (PSNR/SSIM on uint8, fixed seed, repeats), beside baselines."""
    from n2ncli.eval_run import EvalRequest, run_eval

    request = EvalRequest(
        dataset=dataset, noise=noise, model=model, data_dir=data_dir, repeats=repeats, seed=seed, limit=limit,
        device=device, backend=backend, precision=precision, batch=batch, pairs=pairs, fit_first=fit_first,
        fit_steps=fit_steps, self_ensemble=self_ensemble, bm3d=bm3d, json_path=json_path, csv_path=csv_path,
        report_dir=report_dir, pd=pd)
    with _EvalProgress() as draw:
        outcome = run_eval(request, fit=_eval_fit, on_event=draw)
    out.print(_eval_table(outcome.model, outcome.results, partial=request.partial))
    if outcome.report:
        console.print(f"wrote {escape(str(outcome.report))}", highlight=False)


class _EvalProgress:
    """Draws run_eval's events; the bars open at the first download or run, so never around --fit-first's own."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = self.download = None

    def __enter__(self) -> "_EvalProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event) -> None:  # noqa: ANN001 - an n2ncli.eval_run.EvalEvent
        if event.event == "note":
            if _state["verbose"]:
                console.print(f"[dim]{escape(event.label)}[/]", highlight=False)
        elif event.event == "model":
            console.print(f"model [bold]{escape(event.label)}[/] on {escape(str(event.detail))}", highlight=False)
        elif event.event == "warning":
            _warn(event.label)
        elif event.event in ("download", "run"):
            if self.progress is None:
                self.progress = _progress()
                self.progress.start()
            if event.event == "run":
                if self.download is not None:
                    self.progress.update(self.download, visible=False)
                self.task = self.progress.add_task(event.label, total=event.total)
            else:
                if self.download is None:
                    self.download = self.progress.add_task("download", total=None)
                self.progress.update(self.download, description=f"download {event.label}", completed=event.done,
                                     total=event.total or None)
        elif event.event == "image" and self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=event.done)


def _eval_fit(folder: Path, found, steps: int, device: str):  # noqa: ANN001, ANN202
    """--fit-first: the self-supervised fit on the noisy images of the pairs, stored as eval-fit-NAME."""
    from n2ncli.fit import fit as run_fit
    from n2ncli.fit import pairs_fit_request

    request = pairs_fit_request(folder, [n for _, n, _ in found], steps, device)
    with _progress() as progress:
        task = progress.add_task(f"fitting on {len(found)} noisy image(s)", total=steps)
        outcome = run_fit(request, on_progress=lambda p: progress.update(task, completed=p.step)
                          if p.event == "step" else None)
    verdict = "" if outcome.check is None else f"; {outcome.check.summary()}"
    console.print(f"fitted [bold]{outcome.record.name}[/] in {outcome.result.steps} steps "
                  f"({outcome.result.seconds:.0f} s, init: {outcome.init}, pd {outcome.pd}){verdict}", highlight=False)
    return outcome.record


def _eval_table(model: str, results, partial: bool) -> Table:  # noqa: ANN001
    from n2ncli.report import LABELS

    methods = list(dict.fromkeys(m for r in results for m in r.methods))
    table = Table(title=f"{escape(model)}: PSNR (dB) / SSIM")
    for col in ("dataset", "noise", "images x rep.", "noisy input", f"[bold]{escape(model)}[/]",
                *(LABELS.get(m, m) for m in methods), "paper (Table 1)"):
        table.add_column(col, justify="left" if col in ("dataset", "noise") else "right")
    for r in results:
        s = r.summary()
        cells = [escape(r.dataset), escape(r.noise), f"{s['images']} x {r.repeats}", f"{s['noisy_psnr']:.2f} / {s['noisy_ssim']:.4f}",
                 f"[bold]{s['psnr']:.2f} / {s['ssim']:.4f}[/]"]
        cells += [f"{r.baseline_mean(m, 'psnr'):.2f} / {r.baseline_mean(m, 'ssim'):.4f}" if m in r.methods else ""
                  for m in methods]
        paper = r.paper
        cells.append(f"{paper[0]:.2f} / {paper[1]:.3f}{'*' if partial else ''}" if paper else "")
        table.add_row(*cells)
    if partial and any(r.paper for r in results):
        table.caption = "* the paper's figures compare only to full runs (all images, the paper's repeats)"
    return table


# --------------------------------------------------------------------------- models

@models_app.command("list")
def models_list() -> None:
    """All models: your own first, then the shipped ones."""
    from n2ncli.store import list_models

    table = Table()
    for col in ("name", "kind", "noise", "ch", "source", "σ25 dB", "created"):
        table.add_column(col, no_wrap=col in ("name", "kind", "noise", "ch", "created"), overflow="fold")
    for r in list_models():
        k25 = r.metrics.get("kodak/gaussian25", {}).get("psnr") if isinstance(r.metrics.get("kodak/gaussian25"), dict) else None
        noise = "real" if r.noise.startswith("real") else r.noise  # fitted on noisy photos as they are
        table.add_row(escape(r.name), r.kind, escape(noise), str(r.in_channels), "shipped" if r.shipped else "yours",
                      f"{k25:.2f}" if k25 else "", r.created[:10])
    out.print(table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(metavar="MODEL", help="Model name or folder.")]) -> None:
    """Everything model.json says about a model."""
    from n2ncli.store import find_model

    record = find_model(name)
    data = record.to_json()
    data["folder"] = str(record.folder)
    data["shipped"] = record.shipped
    out.print_json(json.dumps(data))


@models_app.command("rm")
def models_rm(name: Annotated[str, typer.Argument(metavar="MODEL", help="Model name in your store.")]) -> None:
    """Remove one of your models (shipped ones stay)."""
    from n2ncli.store import remove_model

    folder = remove_model(name)
    console.print(f"removed {escape(name)} ({escape(str(folder))})", highlight=False)


@models_app.command("path")
def models_path(name: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="A model (default: the store itself).")] = None) -> None:
    """Print where models live (or where one model lives)."""
    from n2ncli.store import find_model, models_dir

    out.print(str(find_model(name).folder if name else models_dir()), markup=False, highlight=False, soft_wrap=True)


@models_app.command("export")
def models_export(
    name: Annotated[str, typer.Argument(metavar="MODEL", help="Model name or folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write.", dir_okay=False)],
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
    fp16: Annotated[bool, typer.Option("--fp16", help="Store float16 weights and compute in float16 (GPU providers); I/O stays float32.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Export a model to ONNX (NCHW float32 in [0,1]; dynamic batch, height and width)."""
    from n2ncli.errors import ConfigError
    from n2ncli.export import export_onnx
    from n2ncli.store import find_model

    if output.exists() and not overwrite:
        raise ConfigError(f"{output} exists; pass --overwrite to replace it")
    record = find_model(name)
    path = export_onnx(record, output, opset=opset, fp16=fp16)
    console.print(f"exported {record.name} ({'fp16' if fp16 else 'fp32'}, opset {opset}) to {escape(str(path))}", highlight=False)


_tidy_help()
_command_help(app)


# --------------------------------------------------------------------------- entry point

def _echo(exc: N2nError) -> bool:
    """Whether to print an error. Under torchrun one that every rank raised is printed by rank 0
    alone: those marked agreed, and option or checkpoint errors (every rank has the same)."""
    from n2ncli.distributed import env_rank
    from n2ncli.errors import CheckpointError, ConfigError

    shared = getattr(exc, "agreed", False) or isinstance(exc, (ConfigError, CheckpointError))
    return env_rank() == 0 or not shared


@contextmanager
def _own_stderr() -> Iterator[None]:
    """Python's stderr on its own copy of fd 2 while a command runs: io/raw.py points fd 2 (what
    C libraries print to) at a temporary file around each LibRaw call, and progress or messages
    printed by other threads meanwhile must still reach the terminal."""
    stream = sys.stderr
    try:
        if stream is None or stream.fileno() != 2:
            raise ValueError("already redirected (pytest, a host program): left alone")
        fd = os.dup(2)
    except (AttributeError, OSError, ValueError):
        yield
        return
    stream.flush()
    sys.stderr = os.fdopen(fd, "w", buffering=1, encoding=stream.encoding, errors=stream.errors)
    try:
        yield
    finally:
        mine, sys.stderr = sys.stderr, stream
        with suppress(OSError, ValueError):
            mine.close()


def main() -> None:
    """Console entry point: user errors become one line and exit 1; Ctrl-C exits 130."""
    with _own_stderr():
        _main()


def _main() -> None:
    from n2ncli.errors import TrainingInterrupted

    _fit_consoles()
    try:
        code = app(args=_hoist_global_flags(sys.argv[1:]), standalone_mode=False)
        if code == 130 and not _state["interrupt_said"]:  # typer returns a KeyboardInterrupt as 130
            console.print("[yellow]interrupted[/]; nothing half-written was left behind")
        if isinstance(code, int) and code:
            sys.exit(code)
    except TrainingInterrupted as exc:
        if not _echo(exc):
            sys.exit(130)
        console.print(f"[yellow]{escape(str(exc))}[/]", highlight=False)
        sys.exit(130)
    except N2nError as exc:
        if _state["debug"]:
            raise
        if _echo(exc):
            console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except Exception as exc:  # usage errors arrive here with standalone_mode=False
        # typer may bundle its own click: recognise its exceptions by shape, not by import
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        if _state["debug"]:
            raise
        console.print(f"[red]internal error:[/] {exc.__class__.__name__}: {escape(str(exc))} (run with --debug for details)",
                      highlight=False, soft_wrap=True)
        sys.exit(1)
