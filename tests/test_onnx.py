"""ONNX export and the ONNX Runtime backend: parity with PyTorch, the export cache, providers, CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from n2ncli.backends.onnx import CPU, CUDA, OnnxPredictor, choose_providers  # noqa: E402
from n2ncli.backends.select import make_predictor  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.errors import ConfigError, IncompatibleModelError  # noqa: E402
from n2ncli.export import cached_onnx, export_onnx, onnx_cache_dir  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402


@pytest.fixture(scope="module")
def record():
    return default_model("srgb")


@pytest.fixture(scope="module")
def exported(record, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fp32 export shared by the module (each export costs ~2 s of tracing), made by the
    cache so that its integrity record lies beside it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("N2N_HOME", str(tmp_path_factory.mktemp("onnx_home")))
        return cached_onnx(record)


@pytest.fixture(scope="module")
def torch_predictor(record) -> TorchPredictor:
    return TorchPredictor(build_model(record), "cpu")


@pytest.fixture
def seeded_cache(record, exported: Path) -> Path:
    """The module's export and its integrity record placed where ``cached_onnx`` looks, so
    tests needn't re-export."""
    target = onnx_cache_dir() / f"{record.sha256}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exported, target)
    shutil.copyfile(exported.with_suffix(".json"), target.with_suffix(".json"))
    return target


def _identity_onnx(path: Path) -> None:
    """A valid graph with the export's input and output names that returns its input unchanged."""
    from onnx import TensorProto, helper

    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _noisy(crop: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (crop.astype(np.float32) / 255 + rng.normal(0, 25 / 255, crop.shape)).astype(np.float32)


@pytest.mark.parametrize("size", [(96, 128), (75, 101), (19, 37)])
def test_onnx_matches_torch_on_kodak(size, exported: Path, torch_predictor, kodak_crop: Callable) -> None:
    """fp32 ONNX Runtime output equals PyTorch's to 1e-4, also at sides that are not multiples of 32
    and at sides under 32 (where the U-Net replicates instead of reflecting)."""
    x = _noisy(kodak_crop(200, 300, *size))[None]
    onnx_out = OnnxPredictor(exported, 3, threads=1).predict(x)
    torch_out = torch_predictor.predict(x)
    assert onnx_out.shape == x.shape and onnx_out.dtype == np.float32
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_exported_graph_pads_itself_at_odd_sizes(exported: Path, torch_predictor, kodak_crop: Callable) -> None:
    """The file alone (no numpy padding) handles sizes that are not multiples of 32, in a batch."""
    x = np.stack([_noisy(kodak_crop(0, 0, 75, 101), s) for s in (1, 2)])
    session = ort.InferenceSession(str(exported), providers=[CPU])
    y = session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0].transpose(0, 2, 3, 1)
    assert np.abs(y - torch_predictor.predict(x)).max() < 1e-4


def test_export_is_valid_onnx_with_metadata(exported: Path, record) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["n2ncli_sha256"] == record.sha256 and meta["n2ncli_precision"] == "fp32"
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_cached_onnx_exports_once_and_records_its_hash(record, n2n_home: Path) -> None:
    import json

    from n2ncli.store import sha256_file

    notes: list[str] = []
    path = cached_onnx(record, notes=notes)
    assert path == n2n_home / "cache" / "onnx" / f"{record.sha256}.onnx"
    first = path.stat().st_mtime_ns
    assert cached_onnx(record, notes=notes) == path
    assert path.stat().st_mtime_ns == first and notes == []
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved == {"weights_sha256": record.sha256, "fp16": False, "opset": 17, "onnx_sha256": sha256_file(path)}
    # no temp files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == [path.with_suffix(".json").name, path.name]


@pytest.mark.parametrize("tamper", ["identity-graph", "truncated", "no-record", "other-opset"])
def test_a_changed_cache_entry_is_exported_again_not_run(tamper: str, record, seeded_cache: Path,
                                                         torch_predictor, kodak_crop: Callable) -> None:
    """A cached file replaced by another graph with the same input/output names (or cut short,
    or without its integrity record) is never run: the predictor re-exports it and says so."""
    import json

    from n2ncli.store import sha256_file

    record_file = seeded_cache.with_suffix(".json")
    if tamper == "identity-graph":
        _identity_onnx(seeded_cache)
    elif tamper == "truncated":
        seeded_cache.write_bytes(seeded_cache.read_bytes()[:1000])
    elif tamper == "no-record":
        record_file.unlink()
    else:
        record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "opset": 13}))
    notes: list[str] = []
    predictor = make_predictor(record, "onnx", "cpu", notes)
    why = {"identity-graph": "does not match its recorded sha256", "truncated": "does not match its recorded sha256",
           "no-record": "has no integrity record", "other-opset": "other weights or settings"}[tamper]
    assert any(seeded_cache.name in n and why in n and "exported it again" in n for n in notes), notes
    assert json.loads(record_file.read_text())["onnx_sha256"] == sha256_file(seeded_cache)
    x = _noisy(kodak_crop(200, 300, 64, 96))[None]
    assert np.abs(predictor.predict(x) - torch_predictor.predict(x)).max() < 1e-4
    again: list[str] = []
    make_predictor(record, "onnx", "cpu", again)
    assert not any("ONNX cache" in n for n in again)  # the fresh export is trusted from then on


def test_cli_verbose_shows_the_re_export_of_a_changed_cache_entry(tmp_path: Path, kodak_crop: Callable,
                                                                   seeded_cache: Path, n2n) -> None:
    from PIL import Image

    _identity_onnx(seeded_cache)
    src = tmp_path / "noisy.png"
    noisy = np.clip(_noisy(kodak_crop(100, 100, 64, 64)) * 255 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(src)
    run = n2n("--verbose", "denoise", src, "-o", tmp_path / "out.png", "--backend", "onnx", "--device", "cpu")
    assert run.code == 0, run.err
    assert "exported it again" in (run.out + run.err).replace("\n", " ")
    with Image.open(tmp_path / "out.png") as im:
        assert np.abs(np.asarray(im).astype(int) - noisy).mean() > 2  # denoised, not passed through


def test_cpu_provider_and_threads(exported: Path) -> None:
    predictor = OnnxPredictor(exported, 3, threads=1)
    assert predictor.provider == CPU and predictor.notes == []
    assert predictor.session.get_providers()[0] == CPU


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this ONNX Runtime has CUDA")
def test_requesting_cuda_falls_back_to_cpu_with_a_note(exported: Path) -> None:
    predictor = OnnxPredictor(exported, 3, providers=[CUDA], threads=1)
    assert predictor.provider == CPU
    assert any(CUDA in note for note in predictor.notes)


def test_gpu_providers_are_pinned_to_the_asked_gpu(exported: Path) -> None:
    from n2ncli.backends.onnx import TENSORRT, with_device
    from n2ncli.backends.select import gpu_index

    assert with_device([TENSORRT, CUDA, CPU], 2) == [(TENSORRT, {"device_id": "2"}), (CUDA, {"device_id": "2"}), CPU]
    assert [gpu_index(d) for d in ("cuda:3", "cuda", "cpu", "auto")] == [3, 0, 0, 0]
    with pytest.raises(ConfigError, match="cuda:N"):
        gpu_index("cuda:x")
    # the real CPU build takes the pinned provider list and starts on the CPU
    predictor = OnnxPredictor(exported, 3, providers=[CUDA], threads=1, device_id=1)
    assert predictor.provider == CPU and predictor.device_id == 1


def test_choose_providers_keeps_order_and_ends_with_cpu() -> None:
    available = ["TensorrtExecutionProvider", CUDA, CPU]
    assert choose_providers(None, available) == (available, [])
    assert choose_providers(None, [CPU]) == ([CPU], [])
    chosen, notes = choose_providers([CUDA], [CPU])
    assert chosen == [CPU] and len(notes) == 1


def test_channel_mismatch_is_incompatible(exported: Path) -> None:
    with pytest.raises(IncompatibleModelError):
        OnnxPredictor(exported, 4)


def test_corrupt_onnx_file_is_our_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(IncompatibleModelError):
        OnnxPredictor(bad, 3)


def test_make_predictor_auto_picks_onnx_on_cpu(record, seeded_cache: Path) -> None:
    notes: list[str] = []
    predictor = make_predictor(record, "auto", "cpu", notes)
    assert isinstance(predictor, OnnxPredictor) and predictor.provider == CPU and notes


def test_make_predictor_without_onnxruntime(record, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        make_predictor(record, "onnx", "cpu", [])
    notes: list[str] = []
    assert isinstance(make_predictor(record, "auto", "cpu", notes), TorchPredictor)
    assert any("not installed" in n for n in notes)


def test_unknown_backend_is_config_error(record) -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        make_predictor(record, "tensorflow", "cpu", [])


def test_cli_onnx_output_matches_torch(tmp_path: Path, kodak_crop: Callable, seeded_cache: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from n2ncli.cli import app

    src = tmp_path / "noisy.png"
    Image.fromarray(np.clip(_noisy(kodak_crop(100, 100, 75, 101)) * 255 + 0.5, 0, 255).astype(np.uint8)).save(src)
    runner = CliRunner()
    outs = {}
    for backend in ("torch", "onnx"):
        target = tmp_path / f"{backend}.png"
        result = runner.invoke(app, ["denoise", str(src), "-o", str(target), "--backend", backend, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        with Image.open(target) as im:
            outs[backend] = np.asarray(im).astype(int)
    assert outs["onnx"].shape == (75, 101, 3)
    assert np.abs(outs["onnx"] - outs["torch"]).max() <= 1


@pytest.mark.slow
def test_cli_models_export_writes_valid_onnx_and_refuses_overwrite(tmp_path: Path, record) -> None:
    target = tmp_path / "model.onnx"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "n2ncli", "models", "export", record.name, "-o", str(target)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(str(target))
    mtime = target.stat().st_mtime_ns
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert target.stat().st_mtime_ns == mtime


def test_fp16_export_keeps_float32_io(tmp_path: Path) -> None:
    """fp16 files take and give float32 (callers never change dtype) and stay close to fp32."""
    import torch

    from n2ncli.nets.unet import UNet

    torch.manual_seed(0)
    net = UNet(3, features=8).eval()
    path16 = export_onnx(net, tmp_path / "small16.onnx", fp16=True)
    path32 = export_onnx(net, tmp_path / "small32.onnx")
    x = np.random.default_rng(0).random((1, 40, 52, 3), dtype=np.float32)
    y16 = OnnxPredictor(path16, 3, threads=1).predict(x)
    y32 = OnnxPredictor(path32, 3, threads=1).predict(x)
    assert y16.dtype == np.float32 and np.abs(y16 - y32).max() < 1e-2


def test_ort_allocation_failure_is_out_of_memory() -> None:
    """ORT's allocation failures become ``OutOfMemory``, which tiling retries at a smaller tile."""
    from n2ncli.backends import OutOfMemory
    from n2ncli.backends.onnx import _translate
    from n2ncli.errors import N2nError

    fail = type("RuntimeException", (Exception,), {})
    err = _translate(fail("Failed to allocate memory for requested buffer of size 123456"), "model.onnx")
    assert isinstance(err, OutOfMemory) and isinstance(err, N2nError)
    assert not isinstance(_translate(fail("something else"), "model.onnx"), OutOfMemory)


def test_precision_bf16_takes_pytorch_and_onnx_refuses_it(record) -> None:
    from n2ncli.backends.select import describe

    notes: list[str] = []
    predictor = make_predictor(record, "auto", "cpu", notes, precision="bf16")
    assert isinstance(predictor, TorchPredictor) and describe(predictor) == "torch cpu bf16"
    assert any("--precision bf16" in n for n in notes)
    with pytest.raises(ConfigError, match="torch backend"):
        make_predictor(record, "onnx", "cpu", [], precision="bf16")
    with pytest.raises(ConfigError, match="unknown precision"):
        make_predictor(record, "torch", "cpu", [], precision="int4")


@pytest.mark.parametrize(("flag", "kind", "where"), [
    ("1", TorchPredictor, "torch cpu bf16 (the CPU has bf16 units; --precision fp32 for full precision)"),
    ("0", None, "onnxruntime CPU"),
])
def test_auto_on_a_cpu_takes_bf16_only_where_it_has_bf16_units(record, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
                                                                flag: str, kind: type | None, where: str) -> None:
    from n2ncli.backends.select import describe

    monkeypatch.setenv("N2N_CPU_BF16", flag)  # the detection's documented override
    notes: list[str] = []
    predictor = make_predictor(record, "auto", "cpu", notes)
    assert describe(predictor) == where
    assert kind is None or isinstance(predictor, kind)
    torch_auto = make_predictor(record, "torch", "cpu", [])
    assert torch_auto.precision == ("bf16" if flag == "1" else "fp32")


def test_cpu_bf16_detection_reads_the_kernels_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this Linux machine the answer is what /proc/cpuinfo says (the override unset)."""
    from n2ncli.device import BF16_CPU_FLAGS, cpu_has_native_bf16

    monkeypatch.delenv("N2N_CPU_BF16")
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("not Linux")
    flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    assert cpu_has_native_bf16() == bool(flags & BF16_CPU_FLAGS)


@pytest.mark.parametrize("flag", ["0", "1"])
def test_fp16_on_a_cpu_runs_as_bf16_or_fp32_and_says_so(record, monkeypatch: pytest.MonkeyPatch, flag: str) -> None:  # noqa: ANN001
    from n2ncli.backends.select import describe

    monkeypatch.setenv("N2N_CPU_BF16", flag)
    predictor = make_predictor(record, "torch", "cpu", [], precision="fp16")
    mapped = "bf16" if flag == "1" else "fp32"
    assert predictor.precision == mapped and predictor.amp != torch.float16
    assert f"{mapped}: CPUs have no fp16 units" in describe(predictor)


@pytest.mark.slow
def test_compile_takes_pytorch_and_gives_the_eager_result(record, kodak_crop: Callable) -> None:  # noqa: ANN001
    """--compile runs the network through torch.compile (here its aot_eager backend: the same
    dynamo tracing and graph capture without minutes of C++ code generation on CI)."""
    from n2ncli.backends.select import describe, make_predictor

    with pytest.raises(ConfigError, match="needs the torch backend"):
        make_predictor(record, "onnx", "cpu", compile=True)
    notes: list[str] = []
    auto = make_predictor(record, "auto", "cpu", notes, compile=True)
    assert isinstance(auto, TorchPredictor) and "torch.compile" in describe(auto)
    assert any("--compile" in n for n in notes)
    x = (kodak_crop(100, 100, 64, 96).astype(np.float32) / 255)[None]
    eager = TorchPredictor(build_model(record), "cpu")
    compiled = TorchPredictor(build_model(record), "cpu", compile="aot_eager")
    assert np.abs(compiled.predict(x) - eager.predict(x)).max() < 1e-5


_TORCH_PROBE = """
import sys
from n2ncli.cli import main
sys.argv = ["n2n", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("torch imported" if "torch" in sys.modules else "no torch", file=sys.stderr)
"""


@pytest.mark.slow
def test_help_and_a_cached_onnx_denoise_never_import_torch(tmp_path: Path, kodak_crop: Callable) -> None:  # noqa: ANN001
    """torch's import is a second or more of start-up; `--help` and the ONNX Runtime path with
    its exported file cached do without it (the first run exports, which needs torch)."""
    from PIL import Image

    Image.fromarray(kodak_crop(0, 0, 48, 64)).save(tmp_path / "p.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "N2N_HOME": str(tmp_path / "home")}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE, *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        return proc.stderr.strip().splitlines()[-1]

    assert run("--help") == "no torch"
    denoise = ("denoise", "p.png", "-o", "out.png", "--backend", "onnx", "--device", "cpu", "--overwrite")
    assert run(*denoise) == "torch imported"  # exports the models into the cache
    assert run(*denoise) == "no torch"
    assert (tmp_path / "out.png").exists()
