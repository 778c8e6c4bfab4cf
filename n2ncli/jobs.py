"""Which files a denoise run reads and where each output goes, before any pixel is touched.

Planning refuses only what would lose data (overwriting an input or an existing output, two
inputs landing on one name that cannot be told apart). Anything wrong with a single entry of a
folder (a symlink loop, a dangling link, a folder that cannot be listed) is reported and left
out, so one bad entry never stops the others.

Output names are predictable: ``<stem>.n2n.<ext>`` beside the input, or in ``-o FOLDER`` with a
folder input's subfolders kept below it. Inputs that share a stem in one place (``IMG_1.png`` and
``IMG_1.tiff`` under ``--format``, a camera's ``IMG_0001.CR2`` + ``IMG_0001.JPG``) keep their
source extension in the name: ``IMG_1.png.n2n.png``, ``IMG_1.tiff.n2n.png``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError, N2nError
from n2ncli.io.image import IMAGE_EXTENSIONS
from n2ncli.io.raw import RAW_EXTENSIONS, is_raw

OUTPUT_TAG = ".n2n"  # default outputs are <stem>.n2n.<ext> (--suffix); folder runs skip such files
#: ``-`` as an input or output: stdin or stdout (images only; the format is sniffed or --format).
STREAM = Path("-")
#: What a raw input can become: the denoised mosaic (DNG) or LibRaw's development of it.
RAW_OUTPUTS = frozenset({".dng"}) | IMAGE_EXTENSIONS
INPUT_EXTENSIONS = IMAGE_EXTENSIONS | RAW_EXTENSIONS


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path

    @property
    def kind(self) -> str:
        return "srgb" if is_stream(self.source) or not is_raw(self.source) else "raw"


@dataclass(frozen=True)
class Found:
    """A readable input file, with the folder it was found under (None: named directly)."""

    path: Path
    root: Path | None = None


@dataclass
class JobPlan:
    """The jobs of a run, and what was left out before it started (one line each)."""

    jobs: list[Job] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "path: reason" entries that cannot be opened
    existing: int = 0  # outputs already there (--skip-existing)


def is_stream(path: Path) -> bool:
    return str(path) == "-"


def check_tag(tag: str) -> str:
    """A --suffix for output names: a plain name part, no folders."""
    if "/" in tag or "\\" in tag or tag in (".", ".."):
        raise ConfigError(f"--suffix {tag!r}: a name part such as .n2n or _denoised, without folders")
    return tag


def is_denoised_output(path: Path, tag: str = OUTPUT_TAG) -> bool:
    """One of our outputs: a ``*.n2n.*`` name (or the run's own ``--suffix``), or a DNG carrying
    n2n's record (even renamed)."""
    if path.stem.endswith(OUTPUT_TAG) or (tag and path.stem.endswith(tag)):
        return True
    if path.suffix.lower() != ".dng":
        return False
    from n2ncli.io.dng import read_processing_record

    try:
        return read_processing_record(path) is not None
    except N2nError:
        return False


def _entry_problem(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a file (loop, dangling link, permissions), or None."""
    try:
        st = path.stat()  # follows links: loops and dangling targets raise here
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way on some paths
        return "symlink loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "dangling symlink (its target does not exist)"
        return exc.strerror or type(exc).__name__
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def walk_inputs(folder: Path, tag: str = OUTPUT_TAG) -> tuple[list[Path], list[str]]:
    """Image and raw files under ``folder`` (recursive, sorted, hidden names skipped) and the
    entries that could not be read, as "path: reason" lines. Never raises for one bad entry."""
    found: list[Path] = []
    problems: list[str] = []

    def on_error(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot list this folder ({exc.strerror or type(exc).__name__})")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in INPUT_EXTENSIONS:
                continue
            path = Path(dirpath, name)
            problem = _entry_problem(path)
            if problem:
                problems.append(f"{path}: {problem}")
            elif not is_denoised_output(path, tag):
                found.append(path)
    return sorted(found), sorted(problems)


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given; folders expanded to their images and raws (recursively), skipping our own
    outputs: ``*.n2n.*`` names and DNGs that carry n2n's processing record."""
    return [f.path for f in find_inputs(inputs)[0]]


def find_inputs(inputs: Iterable[Path], tag: str = OUTPUT_TAG) -> tuple[list[Found], list[str]]:
    """(readable input files, "path: reason" lines for inputs and folder entries that cannot be read)."""
    files: dict[Path, Found] = {}
    problems: list[str] = []
    for p in inputs:
        if p.is_dir():
            found, bad = walk_inputs(p, tag)
            files.update((f, Found(f, p)) for f in found if f not in files)
            problems += bad
        elif p.is_file():
            files.setdefault(p, Found(p))
        else:
            problem = _entry_problem(p) if os.path.lexists(p) else None
            problems.append(f"{p}: {problem or 'file not found'}")
    return list(files.values()), problems


def _output_name(src: Path, ext: str, keep_suffix: bool, tag: str) -> str:
    stem = src.name if keep_suffix else src.stem
    return f"{stem}{tag}{ext}"


def plan_batch(inputs: Sequence[Path], output: Path | None, *, suffix: str | None = None,
               overwrite: bool = False, skip_existing: bool = False, tag: str = OUTPUT_TAG) -> JobPlan:
    """Pair each input with its output path and refuse anything that would lose data.

    ``output`` is a file (one input, an image extension) or a folder; without it outputs go
    beside the inputs as ``<stem>.n2n.<ext>``, where ``ext`` is the input's own for images and
    ``.dng`` for raws (no other raw format is written). ``suffix`` forces the output format.
    ``skip_existing`` drops jobs whose output exists (an interrupted folder run continues).
    ``tag`` goes between stem and extension (``--suffix``). ``-`` (``STREAM``) is stdin as the
    one input, or stdout as ``output`` for one image.
    """
    check_tag(tag)
    if any(is_stream(p) for p in inputs) or (output is not None and is_stream(output)):
        return _stream_plan(inputs, output, suffix, overwrite)
    found, unreadable = find_inputs(inputs, tag)
    if not found and unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        raise ImageReadError(f"{unreadable[0]}{more}")
    if not found:
        raise ConfigError("no input images found")
    if suffix is not None and suffix.lower() not in RAW_OUTPUTS:
        raise ConfigError(f"unsupported output format {suffix!r} (use one of {', '.join(sorted(RAW_OUTPUTS))})")
    single_file = output is not None and output.suffix.lower() in RAW_OUTPUTS and not output.is_dir()
    if single_file and (len(found) > 1 or any(p.is_dir() for p in inputs)):
        raise ConfigError(f"-o {output} names one file but there are {len(found)} inputs; give a folder")
    if output is not None and output.suffix and not single_file and not output.is_dir():
        raise ImageWriteError(f"{output}: unsupported output extension '{output.suffix}' "
                              f"(use {', '.join(sorted(RAW_OUTPUTS))} or a folder)")

    def folder_of(f: Found) -> Path:
        if output is None:
            return f.path.parent
        if f.root is None:
            return output
        return output / f.path.parent.relative_to(f.root)  # a folder input keeps its subfolders

    def ext_of(src: Path) -> str:
        return (suffix or (".dng" if is_raw(src) else src.suffix)).lower()

    # inputs of one folder that would share an output name keep their source extension in it
    groups: dict[tuple[Path, str], list[Found]] = defaultdict(list)
    for f in found:
        groups[(folder_of(f), f.path.stem + ext_of(f.path))].append(f)
    keep = {f.path for members in groups.values() if len(members) > 1 for f in members}

    plan = JobPlan(unreadable=unreadable)
    for f in found:
        src = f.path
        dst = output if single_file else folder_of(f) / _output_name(src, ext_of(src), src in keep, tag)
        if dst.suffix.lower() == ".dng" and not is_raw(src):
            raise ConfigError(f"{src}: only raw files can be written as DNG; choose .png, .tif or .jpg")
        if os.path.abspath(dst) == os.path.abspath(src) or (dst.exists() and dst.resolve() == src.resolve()):
            raise ImageWriteError(f"{dst}: refusing to overwrite the input")
        if dst.exists() and skip_existing:
            plan.existing += 1
            continue
        if dst.exists() and not overwrite:
            raise ImageWriteError(f"{dst}: exists already (use --overwrite to replace it, or --skip-existing)")
        plan.jobs.append(Job(src, dst))
    targets = [os.path.abspath(j.target) for j in plan.jobs]
    if len(set(targets)) != len(targets):
        raise ImageWriteError("two inputs from different folders would be written to the same output name; "
                              "give their common parent folder instead, or separate -o folders")
    return plan


def _stream_plan(inputs: Sequence[Path], output: Path | None, suffix: str | None, overwrite: bool) -> JobPlan:
    """The one job of a run through stdin and/or stdout."""
    if len(inputs) != 1:
        raise ConfigError("- (stdin) is the only input of its run" if any(is_stream(p) for p in inputs)
                          else "-o - (stdout) takes one image; give a folder for several")
    src = inputs[0]
    if is_stream(src) and output is None:
        output = STREAM  # nothing to put an output beside: stdout
    if not is_stream(src):
        if not src.is_file():
            raise ImageReadError(f"{src}: file not found" if not src.exists() else f"{src}: -o - takes one image file")
        if is_raw(src):
            raise ConfigError(f"{src}: raws are not written to stdout (their DNG needs the source file); give -o FILE")
    if suffix is not None and suffix.lower() == ".dng":
        raise ConfigError("only raw files can be written as DNG, and raws do not come through stdin")
    assert output is not None
    if not is_stream(output):
        if output.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ImageWriteError(f"{output}: give an image file name with -o when reading stdin")
        if output.exists() and not overwrite:
            raise ImageWriteError(f"{output}: exists already (use --overwrite to replace it)")
    return JobPlan(jobs=[Job(src, output)])


def plan_jobs(inputs: Sequence[Path], output: Path | None, *, suffix: str | None = None,
              overwrite: bool = False, skip_existing: bool = False) -> list[Job]:
    """``plan_batch``'s jobs alone (for callers that give files they know are readable)."""
    return plan_batch(inputs, output, suffix=suffix, overwrite=overwrite, skip_existing=skip_existing).jobs


def refused_raws(jobs: Sequence[Job]) -> list[tuple[Job, N2nError]]:
    """The raw jobs n2n cannot denoise (X-Trans, LinearRaw, unreadable...), found from headers."""
    from n2ncli.io.raw import probe_raw

    refused = []
    for job in jobs:
        if job.kind == "raw":
            try:
                probe_raw(job.source)
            except N2nError as exc:
                refused.append((job, exc))
    return refused
