"""`n2n eval` as a library call: the request's checks, the protocol's fp32 and square padding,
real pairs left as denoise runs them, and the files written; on Kodak crops with the shipped model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from n2ncli.denoise import TileOptions
from n2ncli.errors import ConfigError, DatasetError
from n2ncli.eval_output import results_json
from n2ncli.eval_run import EvalEvent, EvalRequest, eval_precision, parse_noises, run_eval
from n2ncli.noise import PRESETS


def test_noise_lists_expand_all_and_drop_repeats() -> None:
    assert [s.name for s in parse_noises("all")] == list(PRESETS)
    assert [s.name for s in parse_noises(" poisson30, all ,gaussian25,")] == [
        "poisson30", *(n for n in PRESETS if n != "poisson30")]
    with pytest.raises(ConfigError, match="speckle"):
        parse_noises("gaussian25,speckle")


@pytest.mark.parametrize(("precision", "backend", "device", "asked"), [
    ("fp32", "auto", "cpu", "auto"),  # auto is fp32 on CPUs and keeps ONNX Runtime there
    ("fp32", "onnx", "cpu", "auto"),
    ("fp32", "auto", "mps", "auto"),
    ("fp32", "auto", "cuda", "fp32"),  # auto would be fp16 on CUDA
    ("fp32", "torch", "cuda", "fp32"),
    ("auto", "auto", "cuda", "auto"),
    ("BF16", "torch", "cpu", "bf16"),
])
def test_eval_precision_keeps_the_protocol_fp32(precision: str, backend: str, device: str, asked: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N2N_CPU_BF16", "0")
    assert eval_precision(precision, backend, device) == asked


@pytest.mark.parametrize(("backend", "asked"), [("auto", "fp32"), ("torch", "fp32"), ("onnx", "auto")])
def test_eval_stays_fp32_on_a_cpu_whose_auto_is_bf16(monkeypatch: pytest.MonkeyPatch, backend: str, asked: str) -> None:
    """On a CPU with bf16 units 'auto' is bf16, so the protocol's fp32 is asked for by name
    (PyTorch fp32), except on ONNX Runtime, which is fp32 on every CPU."""
    monkeypatch.setenv("N2N_CPU_BF16", "1")
    assert eval_precision("fp32", backend, "cpu") == asked


def test_fp32_on_a_gpu_refuses_onnx_runtime_fp16() -> None:
    with pytest.raises(ConfigError, match="--backend torch"):
        eval_precision("fp32", "onnx", "cuda")


@pytest.mark.parametrize(("options", "message"), [
    ({"fit_first": True}, "--fit-first needs --pairs"),
    ({"limit": 0}, "at least 1"),
    ({"repeats": 0}, "at least 1"),
    ({"fit_steps": 0}, "at least 1"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"pd": "5"}, "--pd must be"),
])
def test_request_is_checked_before_anything_runs(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EvalRequest(**options)


def test_default_request_is_the_papers_protocol() -> None:
    request = EvalRequest()

    assert (request.precision, request.seed, request.dataset, request.noise) == ("fp32", 101, "kodak", "gaussian25")
    assert not request.partial and EvalRequest(limit=2).partial


class Spy:
    """Around the real predictor make_predictor builds: records the batch shapes it is given."""

    def __init__(self, inner) -> None:  # noqa: ANN001 - any backend
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name: str):  # noqa: ANN204 - describe() reads device, precision...
        return getattr(self.inner, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return self.inner.predict(batch)


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> list[Spy]:
    """Every predictor run_eval builds, wrapped in a Spy."""
    import n2ncli.backends.select as select

    made: list[Spy] = []
    real = select.make_predictor

    def make(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(Spy(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(select, "make_predictor", make)
    return made


def _folder(root: Path, crops: dict[str, np.ndarray]) -> Path:
    root.mkdir(parents=True)
    for name, crop in crops.items():
        Image.fromarray(crop).save(root / name)
    return root


def _square_by_hand(predictor, noisy: np.ndarray) -> np.ndarray:  # noqa: ANN001
    h, w = noisy.shape[:2]
    side = -(-max(h, w) // 32) * 32
    return predictor.predict(np.pad(noisy, ((0, side - h), (0, side - w), (0, 0)), mode="reflect")[None])[0, :h, :w]


def test_synthetic_noise_runs_square_padded_in_fp32_and_writes_the_files(
        tmp_path: Path, kodak_crop: Callable[..., np.ndarray], spies: list[Spy], one_thread: None) -> None:
    clean = kodak_crop(300, 200, 64, 96, image="kodim03.png")
    folder = _folder(tmp_path / "mine", {"c.png": clean})
    events: list[EvalEvent] = []
    request = EvalRequest(dataset=str(folder), noise="gaussian25", backend="torch", device="cpu", seed=5,
                          json_path=tmp_path / "r.json", csv_path=tmp_path / "r.csv")

    outcome = run_eval(request, on_event=events.append)

    (spy,) = spies
    assert spy.inner.precision == "fp32" and spy.shapes == [(1, 96, 96, 3)]  # the official square, not 64x96
    assert [e.event for e in events] == ["model", "run", "image"]
    assert (events[0].label, events[0].detail) == ("srgb-gaussian5-50", "torch cpu")
    (result,) = outcome.results
    noisy = ((clean.astype(np.float32) / 255).astype(np.float64)
             + np.random.default_rng(5).normal(0.0, 25 / 255, clean.shape)).astype(np.float32)
    est = np.clip(_square_by_hand(spy.inner, noisy), 0, 1)
    mse = np.mean((clean.astype(np.float64) - (est * 255 + 0.5).astype(np.uint8)) ** 2)
    assert result.scores[0].psnr == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    assert (tmp_path / "r.json").read_text() == results_json(outcome.results, model=outcome.model, seed=5)
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["dataset"] == "mine"
    assert (tmp_path / "r.csv").is_file() and outcome.report is None


def test_precision_option_reaches_the_backend(tmp_path: Path, kodak_crop: Callable[..., np.ndarray],
                                              spies: list[Spy], one_thread: None) -> None:
    folder = _folder(tmp_path / "mine", {"c.png": kodak_crop(0, 0, 32, 32)})
    events: list[EvalEvent] = []

    run_eval(EvalRequest(dataset=str(folder), precision="bf16", device="cpu"), on_event=events.append)

    assert spies[0].inner.precision == "bf16"
    assert [e.detail for e in events if e.event == "model"] == ["torch cpu bf16"]
    assert any(e.event == "note" and "PyTorch" in e.label for e in events)  # backend auto took PyTorch for it


def test_real_pairs_run_at_their_own_size(tmp_path: Path, kodak_crop: Callable[..., np.ndarray],
                                          spies: list[Spy], one_thread: None) -> None:
    clean = kodak_crop(100, 200, 64, 96)
    noisy = np.clip(clean + np.random.default_rng(2).normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
    _folder(tmp_path / "real" / "clean", {"x.png": clean})
    _folder(tmp_path / "real" / "noisy", {"x.png": noisy})

    outcome = run_eval(EvalRequest(pairs=tmp_path / "real", backend="torch", device="cpu", pd="1"))

    m = TileOptions().context  # not the paper's protocol: denoise's own mirrored context
    assert spies[0].shapes == [(1, 64 + 2 * m, 96 + 2 * m, 3)]
    (score,) = outcome.results[0].scores
    assert outcome.results[0].noise == "real" and score.psnr > score.noisy_psnr


def test_unknown_dataset_is_refused_before_the_model_loads(spies: list[Spy]) -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        run_eval(EvalRequest(dataset="nope"))

    assert spies == []
