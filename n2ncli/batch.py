"""One `n2n denoise` run, as the library sees it: plan the files, choose and load the models,
then denoise them all. The CLI parses options into a ``DenoiseRequest`` and draws progress.

Steps, in order (each can be called and tested on its own):

1. ``plan_run``: the jobs, what is skipped (raw kinds n2n does not denoise, existing outputs)
   and what failed before starting (unreadable entries, broken raw headers). No model loaded.
2. ``load_models``: which model serves which kind of file (a ``--model`` must match the kind of
   every input), the predictors, ``--adapt``'s fine-tune, the tile size, and the record a DNG
   carries.
3. ``execute``: ``run_jobs`` over every job; one bad file never stops the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from n2ncli import __version__
from n2ncli.backends import Predictor
from n2ncli.denoise import BatchResult, OutputSettings, TileOptions, choose_tile, run_jobs
from n2ncli.errors import ConfigError, IncompatibleModelError, UnsupportedRawError
from n2ncli.io.dng import DNG_COMPRESSIONS
from n2ncli.io.image import image_format
from n2ncli.jobs import OUTPUT_TAG, Job, JobPlan, check_tag, is_stream, plan_batch, refused_raws
from n2ncli.local_mean import SIGMA_RAW as RAW_MEAN_SIGMA
from n2ncli.noise_guard import NoiseGuarded
from n2ncli.pd import MeanKept, PdSelector, parse_pd
from n2ncli.store import ModelRecord


@dataclass(frozen=True)
class DenoiseRequest:
    """Everything `n2n denoise` was asked, as plain values (see docs/usage.md)."""

    inputs: tuple[Path, ...]
    output: Path | None = None
    model: str | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    tile: str = "auto"  # "auto" (from free memory) or a number of pixels (0: whole image)
    overlap: int = 32
    batch: int = 1
    output_format: str | None = None
    linear: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    self_ensemble: bool = False
    compile: bool = False
    pd: str = "auto"
    adapt: int = 0
    adapt_minutes: float = 5.0
    quality: int | None = None  # lossy outputs; None: the input's own where it was lossy, else the format's default
    dng_compression: str = "lossless"  # raws' DNGs: lossless JPEG tiles, or "none"
    noise_guard: bool = True  # raws: the model's change kept within the noise measured on each raw
    keep_mean: bool = True  # photos and raws: the output given back the input's local mean (n2ncli.local_mean)
    name_suffix: str = OUTPUT_TAG  # between stem and extension: IMG_1.n2n.jpg

    def __post_init__(self) -> None:
        from n2ncli.backends.select import BACKENDS

        parse_pd(self.pd)
        check_tag(self.name_suffix)
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1..100, got {self.quality}")
        if self.dng_compression not in DNG_COMPRESSIONS:
            raise ConfigError(f"--dng-compression must be {' or '.join(DNG_COMPRESSIONS)}, got {self.dng_compression!r}")
        if self.output_format is not None:
            fmt = self.output_format.lower().lstrip(".")
            if fmt != "dng":
                image_format(fmt)  # a clear error for a format n2n does not write
        if self.overwrite and self.skip_existing:
            raise ConfigError("--overwrite and --skip-existing contradict each other: choose one")
        if self.backend.lower() not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r} (use one of {', '.join(BACKENDS)})")
        text = self.tile.strip().lower()
        if text != "auto" and not text.isdigit():
            raise ConfigError(f"--tile must be auto or a number of pixels, got {self.tile!r}")
        self.tile_options()  # validates overlap, batch and the tile size

    def tile_options(self) -> TileOptions:
        auto = self.tile.strip().lower() == "auto"
        return TileOptions(tile=0 if auto else int(self.tile), overlap=self.overlap, batch=self.batch)

    @property
    def suffix(self) -> str | None:
        return None if self.output_format is None else "." + self.output_format.lower().lstrip(".")

    @property
    def one_file(self) -> bool:
        """One input file (or stdin) named alone: its own error is the run's error."""
        return len(self.inputs) == 1 and (is_stream(self.inputs[0]) or self.inputs[0].is_file())


@dataclass
class DenoiseRun:
    """A planned run, then its models: what ``execute`` needs and what the CLI reports."""

    request: DenoiseRequest
    plan: JobPlan
    jobs: list[Job]
    skipped: list[str]  # "path: reason" for raws of a kind n2n does not denoise
    failed: list[str]  # "path: reason" for entries that failed before the run
    records: dict[str, ModelRecord] = field(default_factory=dict)  # kind -> model
    camera: ModelRecord | None = None  # the real-photo model for correlated-noise images
    grey: ModelRecord | None = None  # the 1-channel model for greyscale images
    predictors: dict[str, Predictor] = field(default_factory=dict)
    options: TileOptions = field(default_factory=TileOptions)
    where: str = ""  # backend and device, for the status line
    notes: list[str] = field(default_factory=list)  # why choices were made (--verbose)
    writing: OutputSettings = field(default_factory=OutputSettings)
    adapted: Any = None  # n2ncli.adapt.Adapted after --adapt
    adapted_from: ModelRecord | None = None  # the model --adapt started from

    def idle_reason(self) -> str | None:
        """Why there is nothing to run ("nothing to do: ..."), or None when there are jobs.

        Raises ConfigError when no file can be denoised at all and none was merely skipped."""
        if self.jobs:
            return None
        if self.plan.existing and not self.failed:
            return ("nothing left to do: the other outputs exist already (--skip-existing)" if self.skipped
                    else "nothing to do: every output exists already (--skip-existing)")
        if self.failed and not self.skipped:
            return "nothing was denoised"
        raise ConfigError(f"none of the {len(self.skipped) + len(self.failed)} file(s) can be denoised (see above)")


def plan_run(request: DenoiseRequest) -> DenoiseRun:
    """Step 1: the jobs and what is left out, from the file system and raw headers alone."""
    plan = plan_batch(request.inputs, request.output, suffix=request.suffix, overwrite=request.overwrite,
                      skip_existing=request.skip_existing, tag=request.name_suffix)
    if any(is_stream(job.target) for job in plan.jobs) and sys.stdout.isatty():
        raise ConfigError("refusing to write image bytes to a terminal: redirect stdout (> out.png, | ...) "
                          "or give -o FILE")
    refused = refused_raws(plan.jobs)
    if refused and request.one_file:
        raise refused[0][1]
    skipped = [str(exc) for _, exc in refused if isinstance(exc, UnsupportedRawError)]
    failed = list(plan.unreadable) + [str(exc) for _, exc in refused if not isinstance(exc, UnsupportedRawError)]
    jobs = [job for job in plan.jobs if all(job is not r for r, _ in refused)]
    return DenoiseRun(request, plan, jobs, skipped, failed)


def choose_records(jobs: list[Job], model: str | None
                   ) -> tuple[dict[str, ModelRecord], ModelRecord | None, ModelRecord | None]:
    """(kind -> model, real-photo model or None, grey model or None) for these jobs: ``model``
    when named, which must be of the kind of every input; else each kind's default, and beside
    the sRGB default the real-photo model for images whose noise is correlated and the grey
    model for greyscale images."""
    from n2ncli.store import correlated_default, default_model, find_model, grey_default

    if model:
        record = find_model(model)
        other = [job.source for job in jobs if job.kind != record.kind]
        if other:
            what = "raw files" if record.kind == "srgb" else "sRGB images"
            raise IncompatibleModelError(f"model {record.name!r} is a {record.kind} model; it cannot denoise "
                                         f"{what} ({other[0]}{' and more' if len(other) > 1 else ''})")
        return {record.kind: record}, None, None
    records = {k: default_model(k) for k in sorted({job.kind for job in jobs})}
    if "srgb" not in records:
        return records, None, None
    return records, correlated_default(), grey_default()


def dng_record(record: ModelRecord, request: DenoiseRequest, options: TileOptions) -> dict[str, Any]:
    """What a denoised DNG records of how it was made (n2n's XMP processing record)."""
    return {"model": record.name, "sha256": record.sha256, "version": __version__,
            "settings": {"backend": request.backend, "device": request.device, "precision": request.precision,
                         "tile": options.tile, "overlap": options.overlap, "self_ensemble": request.self_ensemble,
                         "noise_guard": request.noise_guard, "keep_mean": request.keep_mean}}


def load_models(run: DenoiseRun, on_adapt: Callable[[Any], None] | None = None) -> None:
    """Step 2: models, predictors (``--adapt`` fine-tunes first, reporting to ``on_adapt``),
    the tile size and the DNG record, into ``run``."""
    from n2ncli.backends.select import describe, make_predictor
    from n2ncli.store import trained_blend, trained_second_pass, trained_stride

    req = run.request
    records, camera, grey = choose_records(run.jobs, req.model)

    def predictor(record: ModelRecord) -> Predictor:
        return make_predictor(record, req.backend, req.device, run.notes, precision=req.precision, compile=req.compile)

    predictors = {k: predictor(r) for k, r in records.items() if not (k == "srgb" and req.adapt)}
    blend = trained_blend(records["srgb"]) if "srgb" in records else 0.0
    second = trained_second_pass(records["srgb"]) if "srgb" in records else 0.0
    grey_served: Predictor | None = None  # --adapt's fine-tuned grey model, for the greyscale photos
    if req.adapt and "srgb" in records:
        adapted, run.adapted, run.adapted_from = _adapted(records["srgb"], camera, grey, run.jobs, req, on_adapt)
        if run.adapted.check is None or run.adapted_from is grey:
            # not fine-tuned: denoise exactly as without --adapt; or greyscale photos with
            # independent noise: the grey model fine-tuned on them serves them, the rest as without
            predictors["srgb"] = predictor(records["srgb"])
            grey_served = adapted if run.adapted.check is not None else None
        else:
            predictors["srgb"] = adapted
            blend = trained_blend(run.adapted_from)  # the fine-tuned model keeps its origin's PD blend
            second = 0.0  # but not a second pass measured on its origin alone
            camera = grey = None  # the model fine-tuned on these photos serves them all
    first = next(iter(predictors.values()))
    options = req.tile_options()
    if req.tile.strip().lower() == "auto":
        options = TileOptions(tile=choose_tile(first, req.batch, options.context), overlap=req.overlap, batch=req.batch)
        run.notes.append(f"--tile auto: {options.tile} px from the free memory")
    where = describe(first)
    def served(p: Predictor) -> Predictor:
        if not req.self_ensemble:
            return p
        from n2ncli.baselines import SelfEnsemble

        return SelfEnsemble(p)

    predictors = {k: served(p) for k, p in predictors.items()}
    if req.self_ensemble:
        where += ", x8 self-ensemble"
    if "raw" in predictors and req.noise_guard:
        predictors["raw"] = NoiseGuarded(predictors["raw"])
    if "raw" in predictors and req.keep_mean:  # after the guard (denoise_raw)
        predictors["raw"] = MeanKept(predictors["raw"], RAW_MEAN_SIGMA)
    if "srgb" in predictors:
        extra = served(predictor(camera)) if camera else None
        predictors["srgb"] = PdSelector(predictors["srgb"], parse_pd(req.pd), trained_stride(records["srgb"]), extra,
                                        trained_stride(camera) if camera else None,
                                        blend=blend,
                                        correlated_blend=trained_blend(camera) if camera else 0.0,
                                        second_pass=second,
                                        correlated_second_pass=trained_second_pass(camera) if camera else 0.0,
                                        keep_mean=req.keep_mean,
                                        grey=served(grey_served) if grey_served is not None else
                                        _Deferred(lambda: served(predictor(grey)), 1) if grey else None)
        where += f", pd {req.pd.lower()}"
    run.records, run.camera, run.grey = records, camera, grey
    run.predictors, run.options, run.where = predictors, options, where
    raw = records.get("raw")
    run.writing = OutputSettings(linear=req.linear, software=f"n2ncli {__version__}",
                                 record=None if raw is None else dng_record(raw, req, options), quality=req.quality,
                                 dng_compression=req.dng_compression,
                                 stream_format=None if req.suffix in (None, ".dng") else image_format(req.suffix))


class _Deferred:
    """A predictor built on first use: the grey model costs a load (and on CPU an ONNX export)
    that most runs, with no greyscale photo, never need."""

    def __init__(self, build: Callable[[], Predictor], channels: int) -> None:
        self._build, self._built, self.channels = build, None, channels

    def __getattr__(self, name: str):  # noqa: ANN204 - predict, provider... of the built predictor
        if name.startswith("_"):
            raise AttributeError(name)
        if self._built is None:
            self._built = self._build()
        return getattr(self._built, name)


def _adapted(record: ModelRecord, camera: ModelRecord | None, grey: ModelRecord | None, jobs: list[Job],
             req: DenoiseRequest, on_progress: Callable[[Any], None] | None) -> tuple[Predictor, Any, ModelRecord]:
    """--adapt: fine-tune ``record`` (``camera`` for correlated noise, ``grey`` for greyscale
    photos with independent noise, if given) on the photos; returns the predictor, the adapt
    result and the model it started from."""
    from n2ncli.adapt import adapt_to_files
    from n2ncli.backends.torch import TorchPredictor
    from n2ncli.device import resolve_device
    from n2ncli.store import build_model

    dev = resolve_device(req.device)

    started = [record]

    def start(correlated: bool, all_grey: bool):  # noqa: ANN202
        if correlated and camera is not None:
            started[0] = camera
        elif all_grey and not correlated and grey is not None:
            started[0] = grey
        return build_model(started[0])

    done = adapt_to_files(start, [j.source for j in jobs if j.kind == "srgb"], req.adapt, minutes=req.adapt_minutes,
                          device=dev, on_progress=on_progress)
    return TorchPredictor(done.model, dev, req.precision), done, started[0]


def execute(run: DenoiseRun, **callbacks: Any) -> BatchResult:
    """Step 3: denoise every job (``callbacks``: run_jobs's on_start, on_tile, on_done, on_failed, on_retry,
    on_skipped)."""
    return run_jobs(run.jobs, run.predictors, run.options, writing=run.writing, **callbacks)
