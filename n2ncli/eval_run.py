"""`n2n eval` as a library call: resolve the model, the clean sets or real pairs, score, write.

Synthetic noise is scored with the paper's protocol as the official test code runs it (square
reflect padding, fp32); real pairs choose the pixel-shuffle stride, and without a named model
the real-photo model for correlated noise, per image, as denoise does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from n2ncli.backends import Predictor
from n2ncli.errors import ConfigError, IncompatibleModelError
from n2ncli.evaluate import PAPER_SEED, PROTOCOL_PRECISION, EvalResult, SquarePadded, evaluate, evaluate_pairs
from n2ncli.noise import PRESETS, NoiseSpec, parse_noise
from n2ncli.pd import PdSelector, parse_pd

if TYPE_CHECKING:
    from n2ncli.report import CropCollector
    from n2ncli.store import ModelRecord

#: Worker threads computing metrics while the network runs.
METRIC_THREADS = 2
#: Noisy repeats per network call on a GPU when ``batch`` is not given (1 on CPU).
GPU_BATCH = 10


@dataclass(frozen=True)
class EvalRequest:
    """What the user asked ``n2n eval`` for; checked on construction (before any file is read)."""

    dataset: str = "kodak"  # comma-separated registry names or folders
    noise: str = "gaussian25"  # comma-separated noise names, "all" for the four presets
    model: str | None = None  # None: the shipped blind sRGB model (real pairs: and srgb-camera, as denoise)
    data_dir: Path | None = None
    repeats: int | None = None  # None: the paper's per set
    seed: int = PAPER_SEED
    limit: int | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = PROTOCOL_PRECISION
    batch: int | None = None
    pairs: Path | None = None  # a folder of real noisy/clean pairs instead of synthetic noise
    fit_first: bool = False
    fit_steps: int = 200
    self_ensemble: bool = False
    bm3d: bool = False
    json_path: Path | None = None
    csv_path: Path | None = None
    report_dir: Path | None = None
    pd: str = "auto"

    def __post_init__(self) -> None:
        from n2ncli.backends.select import PRECISIONS

        parse_pd(self.pd)
        if self.fit_first and self.pairs is None:
            raise ConfigError("--fit-first needs --pairs FOLDER (it fits on the noisy images of the pairs)")
        if self.fit_steps < 1 or any(v is not None and v < 1 for v in (self.limit, self.repeats)):
            raise ConfigError("--fit-steps, --limit and --repeats must be at least 1")
        if self.precision.lower() not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r} (use one of {', '.join(PRECISIONS)})")

    @property
    def partial(self) -> bool:
        """Fewer images or draws than the paper's: its figures are then not comparable."""
        return self.limit is not None or self.repeats is not None


@dataclass(frozen=True)
class EvalEvent:
    """What :func:`run_eval` reports while it works (the CLI draws it; tests read it).

    ``download``: ``label`` is the file, ``done``/``total`` bytes (total 0 if unknown).
    ``note``: why a backend was chosen (``label``). ``model``: ``label`` the model's name,
    ``detail`` where it runs. ``warning``: ``label`` the message. ``run``: a run starts,
    ``label`` "DATASET NOISE", ``total`` its draws. ``image``: ``done`` of ``total`` draws scored.
    """

    event: str
    label: str = ""
    detail: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class EvalOutcome:
    model: str
    seed: int
    results: list[EvalResult]
    report: Path | None = None  # the HTML page, when asked for
    notes: list[str] = field(default_factory=list)  # what was skipped, also shown in the report


#: ``fit(folder, found pairs, steps, device) -> ModelRecord``: --fit-first, drawn by the caller.
FitPairs = Callable[[Path, Sequence[tuple[str, Path, Path]], int, str], "ModelRecord"]


def parse_noises(text: str) -> list[NoiseSpec]:
    """``--noise``: comma-separated names, ``all`` for the four presets; duplicates dropped, order kept."""
    specs = []
    for item in (n.strip() for n in text.split(",") if n.strip()):
        specs.extend(parse_noise(p) for p in (PRESETS if item.lower() == "all" else (item,)))
    return list(dict.fromkeys(specs))


def eval_precision(precision: str, backend: str, device_type: str) -> str:
    """The precision to ask ``make_predictor`` for, on a device of ``device_type`` ('cpu', 'cuda', 'mps').

    Its 'auto' is fp16 on CUDA, bf16 on CPUs with bf16 units and fp32 elsewhere, so fp32 stays
    'auto' (ONNX Runtime, the faster fp32 backend on CPUs) only where 'auto' is fp32; elsewhere
    fp32 is asked for, which runs PyTorch in fp32.
    """
    from n2ncli.device import cpu_has_native_bf16

    precision = precision.lower()
    if precision != "fp32":
        return precision
    if device_type == "mps" or (device_type == "cpu" and (backend.lower() == "onnx" or not cpu_has_native_bf16())):
        return "auto"  # ONNX Runtime on a CPU is fp32 always
    if device_type != "cuda":
        return precision
    if backend.lower() == "onnx":
        raise ConfigError("eval scores in fp32 (the paper's protocol) and ONNX Runtime runs fp16 on GPUs: "
                          "use --backend torch (or auto), or --precision auto to score fp16")
    return precision


def run_eval(request: EvalRequest, *, fit: FitPairs | None = None,
             on_event: Callable[[EvalEvent], None] | None = None) -> EvalOutcome:
    """Score the model of ``request`` and write the files it asks for; the results in run order.

    ``fit`` is called for ``request.fit_first`` (the caller draws the training); with
    ``request.pairs`` the model is scored on real noise, else on each clean set x noise.
    """
    from n2ncli.datasets import find_pairs, load_clean_sets, read_pairs
    from n2ncli.store import trained_stride

    emit = on_event or (lambda event: None)
    stride = parse_pd(request.pd)
    found = find_pairs(request.pairs)[:request.limit] if request.pairs is not None else []
    noises = parse_noises(request.noise) if request.pairs is None else []
    sets = [] if request.pairs is not None else load_clean_sets(
        request.dataset, request.data_dir, request.limit,
        on_download=lambda f, d, t: emit(EvalEvent("download", f, done=d, total=t)))
    record = _model(request, found, fit)
    predictor, gpu = _predictor(request, record, emit)
    skipped = _check_bm3d(request.bm3d)
    for message in skipped:
        emit(EvalEvent("warning", message))
    bm3d = request.bm3d and not skipped
    crops = None
    if request.report_dir:
        from n2ncli.report import CropCollector

        crops = CropCollector()

    def progress(label: str, total: int) -> Callable[[int, int], None]:
        emit(EvalEvent("run", label, total=total))
        return lambda done, n: emit(EvalEvent("image", label, done=done, total=n))

    results: list[EvalResult] = []
    label = record.name
    if request.pairs is not None:
        name = request.pairs.name
        label, served = _as_denoise(request, record, predictor, stride, emit)
        baselines = _baselines(predictor, False, bm3d, None)
        if request.self_ensemble:
            from n2ncli.baselines import SelfEnsemble

            baselines = {"self-ensemble": served(SelfEnsemble), **baselines}
        on_image = progress(f"{name} real noise", len(found))
        results.append(evaluate_pairs(
            served(lambda p: p), read_pairs(found), dataset=name, threads=METRIC_THREADS, baselines=baselines,
            on_output=crops.hook(name, "real") if crops else None, on_image=on_image))
    # the official test's padding; the network alone, as the paper scores it (no local mean kept)
    model = SquarePadded(PdSelector(predictor, stride or 1, trained_stride(record), keep_mean=False))
    for clean in sets:
        for spec in noises:
            reps = request.repeats or clean.repeats
            on_image = progress(f"{clean.name} {spec.name}", len(clean.images) * reps)
            sigma = spec.lo if spec.kind == "gaussian" and spec.lo == spec.hi else None
            results.append(evaluate(
                model, clean.images, spec, dataset=clean.name, repeats=reps, seed=request.seed,
                batch=request.batch or (min(reps, GPU_BATCH) if gpu else 1), threads=METRIC_THREADS,
                baselines=_baselines(SquarePadded(predictor), request.self_ensemble, bm3d, sigma),
                on_output=crops.hook(clean.name, spec.name) if crops else None, on_image=on_image))
    return _write(request, EvalOutcome(label, request.seed, results, notes=skipped), crops)


class _AsDenoise:
    """Each image of a batch denoised as ``n2n denoise`` does it: whole, inside the mirrored
    context of ``TileOptions``, by the predictor the selector picks for that image."""

    def __init__(self, selector: PdSelector) -> None:
        self.selector, self.channels = selector, selector.channels

    def predict(self, batch: np.ndarray) -> np.ndarray:
        from n2ncli.denoise import TileOptions, denoise_array

        return np.stack([denoise_array(b, self.selector.for_image(b), TileOptions(tile=0)) for b in batch])


def _as_denoise(request: EvalRequest, record: ModelRecord, predictor: Predictor, stride: int | None,
                emit: Callable[[EvalEvent], None]) -> tuple[str, Callable[[Callable[[Predictor], Predictor]], Predictor]]:
    """Real pairs as ``n2n denoise`` runs them: the label of what is scored, and a function
    that builds it with each network served through ``wrap`` (the self-ensemble, or as is).

    Without a named (or first fitted) model, photos whose noise is correlated go to the shipped
    real-photo model at its stride and blend, beside ``record``; the stride is picked per photo.
    """
    from n2ncli.store import correlated_default, trained_blend, trained_second_pass, trained_stride

    camera = None if request.model or request.fit_first else correlated_default()
    if camera is not None and camera.name == record.name:
        camera = None
    net = _predictor(request, camera, emit, "for correlated noise")[0] if camera is not None else None

    def build(wrap: Callable[[Predictor], Predictor]) -> Predictor:
        own = {"blend": trained_blend(record), "second_pass": trained_second_pass(record)}
        if camera is None:
            return _AsDenoise(PdSelector(wrap(predictor), stride, trained_stride(record), **own))
        return _AsDenoise(PdSelector(wrap(predictor), stride, trained_stride(record), wrap(net), trained_stride(camera),
                                     correlated_blend=trained_blend(camera),
                                     correlated_second_pass=trained_second_pass(camera), **own))

    return (record.name if camera is None else f"{record.name} + {camera.name}"), build


def _model(request: EvalRequest, found: Sequence[tuple[str, Path, Path]], fit: FitPairs | None) -> ModelRecord:
    """The sRGB model to score: fitted first on the pairs' noisy images, named, or the shipped default."""
    from n2ncli.store import default_model, find_model

    if request.fit_first:
        if fit is None:
            raise ConfigError("fit_first needs a fit function")
        record = fit(request.pairs, found, request.fit_steps, request.device)
    else:
        record = find_model(request.model) if request.model else default_model("srgb")
    if record.kind != "srgb":
        raise IncompatibleModelError(f"model {record.name!r} is a {record.kind} model; eval scores sRGB models")
    return record


def _predictor(request: EvalRequest, record: ModelRecord, emit: Callable[[EvalEvent], None],
               role: str = "") -> tuple[Predictor, bool]:
    """The backend for ``record`` at the request's precision, and whether it runs on a GPU;
    ``role`` follows the model's name in the event (what it is used for)."""
    from n2ncli.backends.select import describe, make_predictor

    notes: list[str] = []
    precision = eval_precision(request.precision, request.backend, _device_type(request.device))
    predictor = make_predictor(record, request.backend, request.device, notes, precision=precision)
    for note in notes:
        emit(EvalEvent("note", note))
    where = describe(predictor)
    emit(EvalEvent("model", f"{record.name} {role}".strip(), where))
    return predictor, "cpu" not in where.lower()


def _device_type(device: str) -> str:
    """'cpu', 'cuda', 'mps'... of ``--device`` (auto as torch resolves it); the name itself is checked later."""
    from n2ncli.device import resolve_device

    head = device.lower().split(":")[0]
    return resolve_device("auto").type if head == "auto" else head


def _check_bm3d(wanted: bool) -> list[str]:
    """The note for a --bm3d that cannot run (the package missing): it is skipped, not an error."""
    from n2ncli import baselines

    if wanted and not baselines.bm3d_available():
        return [f"BM3D skipped: the bm3d package is not installed ({baselines.BM3D_HINT})"]
    return []


def _baselines(predictor: Predictor, self_ensemble: bool, bm3d: bool, sigma: float | None) -> dict[str, Predictor]:
    """The methods scored beside the model on the same draws; the self-ensemble runs ``predictor``."""
    from n2ncli.baselines import BM3D, SelfEnsemble

    methods: dict[str, Predictor] = {}
    if self_ensemble:
        methods["self-ensemble"] = SelfEnsemble(predictor)
    if bm3d:
        methods["bm3d"] = BM3D(predictor.channels, sigma)
    return methods


def _write(request: EvalRequest, outcome: EvalOutcome, crops: CropCollector | None) -> EvalOutcome:
    """The --json/--csv files and the --report page; the outcome then names the page."""
    from n2ncli.eval_output import write_results

    write_results(outcome.results, model=outcome.model, seed=outcome.seed, json_path=request.json_path,
                  csv_path=request.csv_path)
    if not request.report_dir:
        return outcome
    from n2ncli.report import write_report

    page = write_report(request.report_dir, outcome.results, model=outcome.model, seed=outcome.seed,
                        crops=crops, notes=outcome.notes)
    return EvalOutcome(outcome.model, outcome.seed, outcome.results, page, outcome.notes)
