"""Training loop: it learns on real photos, exact resume, checkpoint safety, schedules, config checks."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401 - Adam imports it lazily (~1.5 s once): pay it here, not in one test
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch_threads import single_thread

from n2ncli.data import LoadedImages, load_training_images
from n2ncli.errors import CheckpointError, ConfigError, N2nError
from n2ncli.nets.unet import UNet
from n2ncli.train import (
    CHECKPOINT_FORMAT,
    Progress,
    TrainConfig,
    TrainingInterrupted,
    load_checkpoint,
    save_checkpoint,
    train,
)

CPU = torch.device("cpu")
KODAK = ("kodim01.png", "kodim03.png", "kodim05.png")
# Small enough for ~0.1 s per step on one busy core; noise, ramped gamma and spike clipping all on.
RESUME_CONFIG = TrainConfig(steps=5, batch_size=2, crop=32, lr=1e-3, noise="gaussian25", seed=3,
                            checkpoint_every=2)

# Learns fast: the reconstruction loss of the last 5 of 12 steps was 0.19-0.45x that of the first 5
# over seeds 0-7 (lr 1e-3 gave up to 0.56x at 16 steps); a 32 crop costs about half a 64 one, as
# the U-Net pads the 16x16 sub-images to 32 anyway.
LEARN_CONFIG = TrainConfig(steps=12, batch_size=2, crop=32, lr=2e-3, noise="gaussian25", seed=0,
                           checkpoint_every=1000)

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(crops: list[np.ndarray]) -> LoadedImages:
    paths = [Path(f"crop{i}.png") for i in range(len(crops))]
    table = dict(zip(paths, crops))
    return load_training_images(paths, table.__getitem__, 3)


@pytest.fixture(scope="module")
def kodak_images(kodak_crop: Callable[..., np.ndarray]) -> LoadedImages:
    """128x128 crops of three Kodak photos (real texture, clean): the training set."""
    return _images([kodak_crop(100, 200, 128, 128, image=name) for name in KODAK])


@dataclasses.dataclass
class Run:
    events: list[Progress]
    result: object
    run_dir: Path

    def steps(self) -> list[Progress]:
        return [p for p in self.events if p.event == "step"]


def _run(config: TrainConfig, images: LoadedImages, run_dir: Path, **kw) -> Run:
    events: list[Progress] = []
    result = train(config, images, device=CPU, run_dir=run_dir, on_progress=events.append, **kw)
    return Run(events, result, run_dir)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def learning_run(kodak_images: LoadedImages, tmp_path_factory: pytest.TempPathFactory) -> Run:
    with single_thread():  # module-scoped fixtures run before one_thread
        return _run(LEARN_CONFIG, kodak_images, tmp_path_factory.mktemp("learn"))


@pytest.fixture(scope="module")
def reference_run(kodak_images: LoadedImages, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """RESUME_CONFIG trained without interruption."""
    with single_thread():  # module-scoped fixtures run before one_thread
        return _run(RESUME_CONFIG, kodak_images, tmp_path_factory.mktemp("reference"))


# ------------------------------------------------------------------------------------ learning


def test_training_lowers_the_reconstruction_loss(learning_run: Run) -> None:
    rec = np.array([p.reconstruction for p in learning_run.steps()])
    assert len(rec) == 12 and np.all(np.isfinite(rec))
    first, last = rec[:5].mean(), rec[-5:].mean()
    assert last < 0.6 * first, f"reconstruction loss did not drop: first 5 {first:.4f}, last 5 {last:.4f}"


def test_result_and_progress_reports(learning_run: Run) -> None:
    result, steps = learning_run.result, learning_run.steps()
    config = LEARN_CONFIG
    assert result.steps == 12 and math.isfinite(result.final_loss)
    assert not result.model.training
    assert next(result.model.parameters()).device.type == "cpu"
    assert result.history == [(12, result.final_loss)]
    assert [p.step for p in steps] == list(range(1, 13))
    for p in steps:
        assert p.total == 12
        assert p.lr == pytest.approx(config.lr_at(p.step - 1))
        assert p.gamma == pytest.approx(config.gamma_at(p.step - 1))
        assert p.loss == pytest.approx(p.reconstruction + p.gamma * p.regulariser, rel=1e-5)
    assert learning_run.events[-1].event == "done"
    assert load_checkpoint(learning_run.run_dir / "checkpoint.pt")["step"] == 12


# ------------------------------------------------------------------------------------ resume


def test_uninterrupted_run_checkpoints_on_schedule_without_temp_files(reference_run: Run) -> None:
    ckpts = [p.step for p in reference_run.events if p.event == "checkpoint"]
    assert ckpts == [2, 4]  # plus the final save at step 5, checked below
    assert sorted(p.name for p in reference_run.run_dir.iterdir()) == ["checkpoint.pt"]
    state = load_checkpoint(reference_run.run_dir / "checkpoint.pt")
    assert state["format"] == CHECKPOINT_FORMAT and state["step"] == 5
    assert TrainConfig.from_dict(state["config"]) == RESUME_CONFIG
    final = reference_run.result.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in state["model"].items())


def test_interrupted_run_resumes_to_exactly_the_same_weights(
        reference_run: Run, kodak_images: LoadedImages, tmp_path: Path) -> None:
    events: list[Progress] = []

    def stop_at_3(p: Progress) -> None:
        events.append(p)
        if p.event == "step" and p.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="step 3/5"):
        train(RESUME_CONFIG, kodak_images, device=CPU, run_dir=tmp_path, on_progress=stop_at_3)
    assert events[-1].event == "interrupted" and events[-1].step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]

    resumed = _run(RESUME_CONFIG, kodak_images, tmp_path, resume=True)
    assert [(p.event, p.step, p.total) for p in resumed.events[:1]] == [("resumed", 3, 5)]
    assert [p.step for p in resumed.steps()] == [4, 5]
    expected = _weights(reference_run.run_dir / "checkpoint.pt")
    got = resumed.result.model.state_dict()
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), f"{k} differs after resume"
    ref_losses = [p.loss for p in reference_run.steps()][3:]
    assert [p.loss for p in resumed.steps()] == ref_losses


def test_ctrl_c_finishes_the_step_and_saves_a_checkpoint(kodak_images: LoadedImages, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)

    def ctrl_c_at_2(p: Progress) -> None:
        if p.event == "step" and p.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    config = dataclasses.replace(RESUME_CONFIG, checkpoint_every=1000)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(config, kodak_images, device=CPU, run_dir=tmp_path, on_progress=ctrl_c_at_2)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGINT) is before


def _write_checkpoint(path: Path, config: TrainConfig = RESUME_CONFIG, step: int = 3) -> None:
    model = UNet(3, features=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    save_checkpoint(path, config, model, optimizer, step, 1.0, {})


@pytest.mark.parametrize(("change", "field"), [({"lr": 2e-3}, "lr"), ({"noise": "gaussian:30"}, "noise"),
                                              ({"seed": 4}, "seed"), ({"steps": 6}, "steps")])
def test_resume_with_other_settings_is_refused(kodak_images: LoadedImages, tmp_path: Path,
                                               change: dict, field: str) -> None:
    """The error names each differing setting with both values: the new one and the checkpoint's."""
    _write_checkpoint(tmp_path / "checkpoint.pt")
    other = dataclasses.replace(RESUME_CONFIG, **change)
    with pytest.raises(CheckpointError) as err:
        train(other, kodak_images, device=CPU, run_dir=tmp_path, resume=True)
    new, old = getattr(other, field), getattr(RESUME_CONFIG, field)
    assert f"{field} {new!r} (the checkpoint's: {old!r})" in str(err.value)


def test_resume_without_a_checkpoint_is_refused(kodak_images: LoadedImages, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(RESUME_CONFIG, kodak_images, device=CPU, run_dir=tmp_path, resume=True)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, "truncated"])
def test_corrupt_checkpoint_is_a_checkpoint_error(kodak_images: LoadedImages, tmp_path: Path,
                                                  content: bytes | str) -> None:
    path = tmp_path / "checkpoint.pt"
    if content == "truncated":
        _write_checkpoint(path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="unreadable"):
        train(RESUME_CONFIG, kodak_images, device=CPU, run_dir=tmp_path, resume=True)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="not an n2ncli checkpoint"):
        load_checkpoint(path)


def test_checkpoint_with_unknown_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="bogus"):
        TrainConfig.from_dict({**RESUME_CONFIG.to_dict(), "bogus": 1})


def test_config_round_trips_through_a_dict() -> None:
    config = dataclasses.replace(RESUME_CONFIG, lr_milestones=(0.5, 0.75))
    data = config.to_dict()
    data["lr_milestones"] = list(data["lr_milestones"])  # as a checkpoint stores it
    assert TrainConfig.from_dict(data) == config


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    _write_checkpoint(path, step=2)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, f, *a, **kw) -> None:
        real_save(obj, f, *a, **kw)
        Path(f).write_bytes(Path(f).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        _write_checkpoint(path, step=4)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ------------------------------------------------------------------------------------ divergence


def test_divergence_is_reported_with_a_hint_to_lower_lr(kodak_images: LoadedImages, tmp_path: Path) -> None:
    config = dataclasses.replace(RESUME_CONFIG, lr=1e4, steps=5)
    with pytest.raises(N2nError, match="diverged.*--lr"):
        train(config, kodak_images, device=CPU, run_dir=tmp_path)


@contextlib.contextmanager
def _nan_gradients(at: set[int]) -> Iterator[list[int]]:
    """Make the gradient flowing into the U-Net's output NaN at the given 0-based steps (the
    forward pass, so the loss, stays finite); yields the list of steps optimizer.step ran at."""
    forwards = iter(range(10**6))
    stepped: list[int] = []

    def poison(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if isinstance(module, UNet) and torch.is_grad_enabled():  # one such forward per step
            if next(forwards) in at:
                output.register_hook(lambda g: torch.full_like(g, math.nan))

    forward_hook = torch.nn.modules.module.register_module_forward_hook(poison)
    step_hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: stepped.append(len(stepped)))
    try:
        yield stepped
    finally:
        forward_hook.remove()
        step_hook.remove()


def test_a_step_with_non_finite_gradients_is_skipped(kodak_images: LoadedImages, tmp_path: Path) -> None:
    config = dataclasses.replace(RESUME_CONFIG, steps=4, checkpoint_every=1000)
    with _nan_gradients({1}) as stepped:
        run = _run(config, kodak_images, tmp_path)
    assert run.result.steps == 4 and run.result.skipped_steps == 1
    assert len(stepped) == 3  # optimizer.step ran for the other three steps only
    assert all(math.isfinite(p.loss) for p in run.steps())
    assert all(torch.isfinite(v).all() for v in run.result.model.state_dict().values())


def test_a_skipped_step_leaves_the_weights_as_they_were(kodak_images: LoadedImages, tmp_path: Path) -> None:
    config = dataclasses.replace(RESUME_CONFIG, steps=1, checkpoint_every=1000)
    with _nan_gradients({0}):
        run = _run(config, kodak_images, tmp_path)
    torch.manual_seed(config.seed)
    init = UNet(config.channels).state_dict()
    got = run.result.model.state_dict()
    assert run.result.skipped_steps == 1 and all(torch.equal(got[k], init[k]) for k in init)


def test_many_skipped_steps_in_a_row_are_divergence(kodak_images: LoadedImages, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import n2ncli.train

    monkeypatch.setattr(n2ncli.train, "MAX_SKIPPED_STEPS", 3)
    config = dataclasses.replace(RESUME_CONFIG, steps=5, checkpoint_every=1000)
    with _nan_gradients({0, 1, 2, 3, 4}), pytest.raises(N2nError, match=r"diverged at step 3 \(gradients not finite"):
        train(config, kodak_images, device=CPU, run_dir=tmp_path)


# ------------------------------------------------------------------------------------ precision


def test_fp16_training_on_cpu_is_refused_pointing_to_bf16(kodak_images: LoadedImages, tmp_path: Path) -> None:
    config = dataclasses.replace(RESUME_CONFIG, precision="fp16")
    with pytest.raises(ConfigError, match="fp16 trains on CUDA GPUs only.*--precision bf16"):
        train(config, kodak_images, device=CPU, run_dir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_checkpoint_from_before_loss_scaling_still_resumes(reference_run: Run, kodak_images: LoadedImages,
                                                             tmp_path: Path) -> None:
    state = load_checkpoint(reference_run.run_dir / "checkpoint.pt")
    del state["scaler"]  # checkpoints written before fp16 loss scaling have no such entry
    state["step"] = 4
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = _run(RESUME_CONFIG, kodak_images, tmp_path, resume=True)
    assert [p.step for p in resumed.steps()] == [5]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training (GradScaler) needs CUDA")
def test_fp16_training_on_cuda_scales_the_loss_and_resumes_its_scale(kodak_images: LoadedImages,
                                                                      tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    config = dataclasses.replace(RESUME_CONFIG, precision="fp16", steps=3, checkpoint_every=1)
    first = train(config, kodak_images, device=cuda, run_dir=tmp_path)
    assert first.steps == 3 and math.isfinite(first.final_loss)
    assert all(torch.isfinite(v).all() for v in first.model.state_dict().values())
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["scaler"]["scale"] > 0
    state["scaler"]["scale"], state["step"] = 1024.0, 2  # resume from step 2 with a known scale
    torch.save(state, tmp_path / "checkpoint.pt")
    train(config, kodak_images, device=cuda, run_dir=tmp_path, resume=True)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["scaler"]["scale"] in (1024.0, 512.0)  # kept, not reset


# ------------------------------------------------------------------------------------ schedules


def test_lr_halves_at_20_40_60_80_percent() -> None:
    config = TrainConfig(steps=100, lr=1e-3)
    expected = {0: 1e-3, 19: 1e-3, 20: 5e-4, 39: 5e-4, 40: 2.5e-4, 59: 2.5e-4, 60: 1.25e-4, 79: 1.25e-4,
                80: 6.25e-5, 99: 6.25e-5}
    for step, lr in expected.items():
        assert config.lr_at(step) == pytest.approx(lr), step


def test_lr_milestones_fall_on_the_right_step_for_other_lengths() -> None:
    config = TrainConfig(steps=7, lr=1.0)  # milestones at steps 1.4, 2.8, 4.2, 5.6
    assert [config.lr_at(s) for s in range(7)] == [1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.0625]


def test_cosine_schedule() -> None:
    config = TrainConfig(steps=100, lr=1e-3, lr_schedule="cosine")
    lrs = [config.lr_at(s) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[50] == pytest.approx(5e-4)
    assert lrs[25] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_ramps_linearly_then_follows_the_schedule() -> None:
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    assert config.lr_at(0) == pytest.approx(1e-4)
    assert config.lr_at(4) == pytest.approx(5e-4)
    assert config.lr_at(9) == pytest.approx(1e-3)
    assert config.lr_at(10) == pytest.approx(1e-3)
    assert config.lr_at(20) == pytest.approx(5e-4)


def test_gamma_follows_the_run() -> None:
    ramp = TrainConfig(steps=100, gamma_end=2.0)
    assert [ramp.gamma_at(s) for s in (0, 50, 100)] == pytest.approx([0.0, 1.0, 2.0])
    constant = TrainConfig(steps=100, gamma_end=1.0, gamma_constant=True)
    assert {constant.gamma_at(s) for s in (0, 50, 99)} == {1.0}


# ------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps", 0, "steps"),
    ("batch_size", 0, "batch size"),
    ("crop", 31, "crop"),
    ("crop", 30, "crop"),
    ("crop", 33, "crop"),
    ("lr", 0.0, "learning rate"),
    ("lr", -1e-3, "learning rate"),
    ("sampler", "diagonal", "'diagonal'"),
    ("lr_schedule", "linear", "'linear'"),
    ("checkpoint_every", 0, "checkpoint"),
    ("gamma_end", -1.0, "regulariser"),
    ("noise", "speckle", "'speckle'"),
    ("pd", 4, "pd must be"),
    ("full_pd", 0, "full_pd must be"),
    ("target", "clean", "target must be"),
    ("target", "independent", "needs synthetic noise"),
    ("level_weight", 0.65, "need an independent target"),
])
def test_train_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{"steps": 10, field: value})


def test_train_config_rejects_an_unknown_init() -> None:
    with pytest.raises(ConfigError, match="xavier"):
        TrainConfig(steps=10, net_init="xavier")


def test_train_config_is_frozen() -> None:
    config = TrainConfig(steps=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 20  # type: ignore[misc]


# ------------------------------------------------------------------------------------ PD and targets


def test_pd_training_runs_on_the_sub_images_and_resumes_with_the_same_stride(kodak_images: LoadedImages,
                                                                           tmp_path: Path) -> None:
    config = TrainConfig(steps=2, batch_size=2, crop=64, noise="gaussian25", pd=2, checkpoint_every=1)
    run = _run(config, kodak_images, tmp_path)
    assert run.result.steps == 2 and all(math.isfinite(p.loss) for p in run.steps())
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["pd"] == 2
    with pytest.raises(CheckpointError, match="pd"):
        train(dataclasses.replace(config, pd=1, steps=3), kodak_images, device=CPU, run_dir=tmp_path, resume=True)


def test_pd_sub_images_keep_each_crops_generator(kodak_images: LoadedImages) -> None:
    from n2ncli.train import pd_subimages

    x = torch.rand(2, 3, 36, 40)
    gens = [torch.Generator(), torch.Generator()]
    sub, sub_gens = pd_subimages(x, gens, 3)
    assert sub.shape == (18, 3, 12, 12)  # trimmed to multiples of 6: even sub-images
    assert sub_gens == [gens[0]] * 9 + [gens[1]] * 9


def test_an_independent_camera_target_trains(kodak_images: LoadedImages, tmp_path: Path) -> None:
    config = TrainConfig(steps=2, batch_size=2, crop=64, noise="camera", target="independent", full_pd=2,
                         checkpoint_every=100)
    run = _run(config, kodak_images, tmp_path)
    assert run.result.steps == 2 and all(math.isfinite(p.loss) and p.loss > 0 for p in run.steps())


def test_max_seconds_ends_the_run_early_and_says_how_far_it_got(kodak_images: LoadedImages, tmp_path: Path) -> None:
    run = _run(TrainConfig(steps=50, batch_size=1, crop=32, noise="gaussian25"), kodak_images, tmp_path, max_seconds=0.0)
    assert run.result.steps == 1
    assert run.events[-1].event == "done" and run.events[-1].step == 1
