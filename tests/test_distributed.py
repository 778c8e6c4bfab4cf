"""Training over several processes (DDP) on CPU with gloo: equivalence, failures, resume, the CLI.

The tests that start processes (``--gpus 2 --device cpu``: torchrun's launcher, spawned ranks)
cost a few seconds each in process start-up alone, hence ``slow``; the rest check what is refused
before any process starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import n2ncli.fit
from n2ncli import cli
from n2ncli.distributed import DistributedError, World, per_process_batch
from n2ncli.errors import ConfigError, DatasetError
from n2ncli.fit import FitRequest, fit, scale_lr
from n2ncli.nets.unet import UNet
from n2ncli.store import find_model, load_state, runs_dir
from n2ncli.train import Progress, TrainConfig, TrainingInterrupted, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread", "short_timeout")

# Small enough for ~0.1 s a step on one core; noise and spike clipping on; checkpoints every 2 steps.
BASE = dict(steps=4, crop=32, noise="gaussian25", init="none", device="cpu", seed=3, checkpoint_every=2)


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung collective fails the test in a minute instead of the default half hour."""
    monkeypatch.setenv("N2N_DIST_TIMEOUT", "60")


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """Three 64x64 Kodak crops and one 24x40 image (smaller than the crop: used whole, its own group)."""
    folder = tmp_path_factory.mktemp("ddp-train")
    for i, name in enumerate(("kodim01.png", "kodim03.png", "kodim05.png")):
        Image.fromarray(kodak_crop(100, 200, 64, 64, image=name)).save(folder / f"c{i}.png")
    Image.fromarray(kodak_crop(50, 60, 24, 40, image="kodim07.png")).save(folder / "small.png")
    return folder


def _weights(name: str) -> dict[str, torch.Tensor]:
    return load_state(find_model(name))


def _assert_same_weights(a: str, b: str) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6), f"{k}: max diff {float((wa[k] - wb[k]).abs().max())}"


def _steps(events: list[Progress]) -> list[int]:
    return [p.step for p in events if p.event == "step"]


# ------------------------------------------------------------------------------------ equivalence


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_doubled_batch(train_dir: Path) -> None:
    """2 ranks x 2 crops == 1 process x 4 crops: the same crops, noise and masks, gradients averaged."""
    events: list[Progress] = []
    two = fit(FitRequest(inputs=(train_dir,), name="two", batch_size=2, gpus=2, sharding="replicate", **BASE),
              on_progress=events.append)
    one = fit(FitRequest(inputs=(train_dir,), name="one", batch_size=4, **BASE))

    _assert_same_weights("two", "one")
    assert two.result.final_loss == pytest.approx(one.result.final_loss, rel=1e-5)
    assert _steps(events) == [1, 2, 3, 4]  # rank 0 alone reports
    assert [p.step for p in events if p.event == "checkpoint"] == [2, 4]
    assert events[-1].event == "done"
    a, b = find_model("two").training, find_model("one").training
    assert a["processes"] == 2 and a["batch_size"] == 4 and a["sharding"] == "replicate" and a["images"] == 4
    assert b["processes"] == 1 and b["sharding"] == "none"
    differ = {"processes", "sharding", "seconds", "final_loss"}
    assert {k: v for k, v in a.items() if k not in differ} == {k: v for k, v in b.items() if k not in differ}
    assert not (runs_dir() / "two" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------ failures


def _rank_1_dies_at_step_4(request: FitRequest, send: Any) -> Any:
    """A launched rank; rank 1 kills itself (SIGKILL) as it starts step 4, after the step-2 checkpoint."""
    if os.environ.get("RANK") == "1":
        import n2ncli.train

        real = n2ncli.train.sample_generator

        def generator(seed: int, step: int, sample: int, device: torch.device) -> torch.Generator:
            if step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(seed, step, sample, device)

        n2ncli.train.sample_generator = generator
    from n2ncli.fit import _fit_rank

    return _fit_rank(request, send)


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_resume_finishes_it(train_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = dict(BASE, steps=6)
    with monkeypatch.context() as patch, pytest.raises(
            DistributedError, match=r"rank 1 of 2 stopped \(killed by SIGKILL\); the checkpoint at step 2 is kept, "
                                    r"continue with --resume"):
        patch.setattr(n2ncli.fit, "_fit_rank", _rank_1_dies_at_step_4)
        fit(FitRequest(inputs=(train_dir,), name="k", batch_size=2, gpus=2, sharding="replicate", **run))
    assert torch.load(runs_dir() / "k" / "checkpoint.pt", weights_only=True)["step"] == 2

    # One process continues the two-process run: the global batch (4) is kept.
    events: list[Progress] = []
    resumed = fit(FitRequest(inputs=(train_dir,), name="k", resume=True, **run), on_progress=events.append)
    fit(FitRequest(inputs=(train_dir,), name="uninterrupted", batch_size=4, **run))

    assert _steps(events) == [3, 4, 5, 6]
    assert resumed.record.training["batch_size"] == 4 and resumed.record.training["processes"] == 1
    _assert_same_weights("k", "uninterrupted")


@pytest.mark.slow
def test_an_error_on_one_rank_reaches_the_user_as_that_error(train_dir: Path, tmp_path: Path) -> None:
    """Rank 1's shard is empty: every rank stops, and its own message comes back, not a hang."""
    one_file = tmp_path / "one"
    one_file.mkdir()
    (one_file / "c0.png").write_bytes((train_dir / "c0.png").read_bytes())
    with pytest.raises(DatasetError, match=r"shard of rank 1 of 2 \(0 of 1 files\).*--sharding replicate"):
        fit(FitRequest(inputs=(one_file,), name="s", batch_size=1, gpus=2, sharding="shard", **BASE))
    assert not (runs_dir() / "s").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_one_step_with_a_checkpoint(train_dir: Path, tmp_path: Path,
                                                                n2n_home: Path) -> None:
    """Ctrl-C in a terminal reaches the launcher and both ranks: they agree on the step, rank 0
    saves it, the command exits 130; one process then resumes the run from the next step."""
    options = ("fit", train_dir, "--gpus", "2", "--device", "cpu", "--steps", "60", "--checkpoint-every", "2",
               "--crop", "32", "--batch-size", "1", "--init", "none", "--name", "c")
    checkpoint = n2n_home / "runs" / "c" / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "n2ncli", *map(str, options)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "no checkpoint appeared"
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: to the whole process group
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = int(re.search(r"interrupted at step (\d+)/60", " ".join(err.split())).group(1))
    assert 2 <= stopped < 60 and torch.load(checkpoint, weights_only=True)["step"] == stopped

    def stop_after_one_step(p: Progress) -> None:
        if p.event == "step":
            first.append(p.step)
            raise KeyboardInterrupt

    first: list[int] = []
    with pytest.raises(TrainingInterrupted):
        fit(FitRequest(inputs=(train_dir,), name="c", resume=True, steps=60, crop=32, init="none",
                       device="cpu", checkpoint_every=2), on_progress=stop_after_one_step)
    assert first == [stopped + 1]


# ------------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_cli_fit_gpus_on_cpu_writes_one_store_entry(train_dir: Path, n2n_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``n2n fit --gpus 2 --device cpu``: sharded files, linear lr scaling, one model written by rank 0."""
    monkeypatch.setattr(sys, "argv", ["n2n", "fit", str(train_dir), "--gpus", "2", "--device", "cpu",
                                      "--steps", "2", "--crop", "32", "--batch-size", "1", "--init", "none",
                                      "--lr", "1e-3", "--lr-scaling", "linear", "--sharding", "shard",
                                      "--name", "d1"])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err

    assert code == 0, err
    assert "done:" in err and "model d1 from 4 image(s), 2 steps" in " ".join(err.split())
    meta = json.loads((n2n_home / "models" / "d1" / "model.json").read_text())
    training = meta["training"]
    assert training["processes"] == 2 and training["batch_size"] == 2 and training["images"] == 4
    assert training["lr"] == pytest.approx(2e-3) and training["lr_scaling"] == "linear"
    assert training["sharding"] == "shard"
    assert sorted(p.name for p in (n2n_home / "models").iterdir()) == ["d1"]


# ------------------------------------------------------------------------------------ refused up front


def _checkpoint(name: str, batch_size: int) -> None:
    config = TrainConfig(steps=4, batch_size=batch_size, crop=32)
    model = UNet(3, features=8)
    save_checkpoint(runs_dir() / name / "checkpoint.pt", config, model, torch.optim.Adam(model.parameters()), 2, 1.0, {})


def test_a_resume_whose_batch_does_not_split_is_refused_before_starting(train_dir: Path) -> None:
    _checkpoint("r", batch_size=4)
    with pytest.raises(ConfigError, match=r"global batch of 4 crops does not split over 3 processes; use 1, 2, 4"):
        fit(FitRequest(inputs=(train_dir,), name="r", resume=True, gpus=3, **BASE))
    with pytest.raises(ConfigError, match=r"--batch-size 4 over 2 process\(es\) makes a global batch of 8, but the "
                                          r"run's is 4; leave --batch-size out"):
        fit(FitRequest(inputs=(train_dir,), name="r", resume=True, gpus=2, batch_size=4, **BASE))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpus_without_cuda_points_to_device_cpu(train_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"--gpus 2 needs 2 CUDA GPUs and none is visible; add --device cpu"):
        fit(FitRequest(inputs=(train_dir,), name="g", gpus=2, **dict(BASE, device="auto")))


def test_gpus_under_torchrun_is_refused(train_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under torchrun leave it out"):
        fit(FitRequest(inputs=(train_dir,), name="g", gpus=2, **BASE))


@pytest.mark.parametrize(("change", "message"), [
    ({"gpus": 0}, "--gpus must be >= 1"),
    ({"lr_scaling": "sqrt"}, "--lr-scaling must be one of none, linear, got 'sqrt'"),
    ({"sharding": "stripe"}, "--sharding must be one of auto, shard, replicate, got 'stripe'"),
    ({"batch_size": 0}, "batch size must be >= 1"),
])
def test_bad_distributed_options_are_refused(train_dir: Path, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(FitRequest(inputs=(train_dir,), name="b", **{**BASE, **change}))


def test_lr_scaling() -> None:
    assert scale_lr(3e-4, "none", 8) == 3e-4
    assert scale_lr(3e-4, "linear", 8) == pytest.approx(2.4e-3)
    assert scale_lr(3e-4, "linear", 1) == 3e-4


def test_per_process_batch() -> None:
    assert per_process_batch(8, 4) == 2
    with pytest.raises(ConfigError, match="does not split over 3 processes; use 1, 2, 4, 8"):
        per_process_batch(8, 3)


def test_a_single_process_world_runs_everything_here() -> None:
    world = World()
    assert world.is_main and not world.distributed
    assert world.everywhere(lambda: 5) == 5 and world.on_main(lambda: 6) == 6
    assert world.all_gather("x") == ["x"] and world.broadcast("y") == "y"
    with pytest.raises(DatasetError, match="as it was"):
        world.everywhere(lambda: (_ for _ in ()).throw(DatasetError("as it was")))
