"""Several processes training one model: torch.distributed plumbing for DDP.

``n2n fit`` runs unchanged under torchrun (one process per GPU, any number of machines): the
process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...).
``launch`` starts the processes of one machine itself, with torchrun's elastic launcher used as a
library. Every rank runs the same code; the ``World`` helpers make the ranks agree, so an error on
one rank becomes an error on all of them instead of a peer waiting forever, and the work that
must happen once (the model store, checkpoints, progress) runs on rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from n2ncli.device import resolve_device
from n2ncli.errors import ConfigError, N2nError

T = TypeVar("T")

#: Seconds a rank waits for the others in one collective before giving up (env N2N_DIST_TIMEOUT).
DEFAULT_TIMEOUT = 1800.0
TIMEOUT_ENV = "N2N_DIST_TIMEOUT"


class DistributedError(N2nError):
    """Another process of the run stopped or stopped answering, or the processes could not start."""


@dataclass
class World:
    """This process's place among the ranks of a run (one process: rank 0 of 1, no process group)."""

    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    _host_group: Any = dataclasses.field(default=None, repr=False)  # gloo: objects and barriers

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"

    # ---------------------------------------------------------------- collectives

    def all_gather(self, obj: T) -> list[T]:
        """``obj`` of every rank, in rank order (picklable objects, small)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        with self._collective("exchanging state"):
            torch.distributed.all_gather_object(out, obj, group=self._host_group)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        with self._collective("exchanging state"):
            torch.distributed.broadcast_object_list(box, src=0, group=self._host_group)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank; a rank that does not arrive within the timeout is named."""
        if not self.distributed:
            return
        with self._collective("waiting for the other processes"):
            torch.distributed.monitored_barrier(
                group=self._host_group, timeout=datetime.timedelta(seconds=self.timeout))

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the ranks of a small float tensor on this rank's device."""
        if self.distributed:
            with self._collective("summing the loss"):
                torch.distributed.all_reduce(values)
        return values

    # ---------------------------------------------------------------- agreement

    def everywhere(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on every rank; if it fails on any, it fails on all (never a rank left waiting).

        The rank where it failed raises its own error; the others raise a copy naming that rank.
        """
        try:
            value, error = fn(), None
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            value, error = None, exc
        if not self.distributed:
            if error is not None:
                raise error
            return value
        errors = self.all_gather(_portable(error))
        failed = [r for r, e in enumerate(errors) if e is not None]
        if failed:
            origin = failed[0]
            if error is not None:
                raise agreed(error)
            raise _copy_error(errors[origin], f"rank {origin} of {self.size}: ")
        return value  # type: ignore[return-value]

    def on_main(self, fn: Callable[[], T], *, share: bool = True) -> T | None:
        """Run ``fn`` on rank 0 only; its error is raised on every rank, its value shared (or None)."""
        if not self.distributed:
            return fn()
        value, error = None, None
        if self.is_main:
            try:
                value = fn()
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
                error = exc
        value, shared_error = self.broadcast((value if share else None, _portable(error)))
        if error is not None:
            raise agreed(error)
        if shared_error is not None:
            raise _copy_error(shared_error, "")
        return value

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            if is_peer_failure(exc):
                raise DistributedError(f"{self.describe()} lost the other processes while {what} "
                                       f"({first_line(exc)})") from exc
            raise

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


E = TypeVar("E", bound=BaseException)


def agreed(error: E) -> E:
    """Mark ``error`` as raised by every rank alike (the CLI then prints it on rank 0 only)."""
    error.agreed = True  # type: ignore[attr-defined]
    return error


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling, else a DistributedError with its text."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any pickling failure
        return DistributedError(f"{type(error).__name__}: {error}")


def _copy_error(error: BaseException, prefix: str) -> BaseException:
    """The same kind of error with ``prefix`` before its message, marked as shared by all ranks."""
    if not isinstance(error, N2nError):
        error = DistributedError(f"{type(error).__name__}: {error}")
    try:
        copy = type(error)(f"{prefix}{error}")
    except Exception:  # noqa: BLE001 - an error class with another signature
        copy = DistributedError(f"{prefix}{error}")
    return agreed(copy)


def first_line(exc: BaseException) -> str:
    """The gist of a backend error: its first sentence, without gloo's source-file prefix."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", lines[0])
    return text.split(". ")[0][:200]


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says a collective failed: a peer died, hung past the timeout, or reset."""
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    if not isinstance(exc, RuntimeError) or isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


# -------------------------------------------------------------------- process group from the environment


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not under a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _timeout() -> float:
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: give seconds, e.g. 600") from None
    if value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {text!r}")
    return value


def join_from_env(device: str = "auto") -> World:
    """This process's World: joined to torchrun's process group when WORLD_SIZE > 1.

    NCCL on CUDA (one GPU per local rank), gloo on CPU; Apple MPS cannot run DDP.
    """
    size = env_world_size()
    if size == 1:
        return World(device=resolve_device(device))
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"WORLD_SIZE={size} but no valid RANK/LOCAL_RANK in the environment ({exc}); "
                          "start the processes with torchrun") from None
    base = resolve_device(device)
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible here; "
                                   "start at most one process per GPU")
        where, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(where)
    elif base.type == "cpu":
        where, backend = base, "gloo"
        if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of each rank taking all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    else:
        raise ConfigError(f"--device {base.type}: distributed training runs on CUDA GPUs (NCCL) or CPUs (gloo)")
    timeout = _timeout()
    span = datetime.timedelta(seconds=timeout)
    try:
        torch.distributed.init_process_group(backend, timeout=span)
        host = torch.distributed.new_group(backend="gloo", timeout=span) if backend == "nccl" else None
    except Exception as exc:  # noqa: BLE001 - rendezvous and backend errors come in many kinds
        raise DistributedError(f"rank {rank} of {size} could not join the process group "
                               f"({first_line(exc)}); check MASTER_ADDR/MASTER_PORT") from exc
    return World(device=where, rank=rank, size=size, local_rank=local_rank, local_size=local_size,
                 backend=backend, timeout=timeout, _host_group=host)


def per_process_batch(global_batch: int, processes: int) -> int:
    """Crops per process for a global batch: it must split evenly."""
    if global_batch % processes:
        ways = [d for d in range(1, global_batch + 1) if global_batch % d == 0]
        raise ConfigError(f"the run's global batch of {global_batch} crops does not split over {processes} "
                          f"processes; use {', '.join(map(str, ways))} process(es)")
    return global_batch // processes


# -------------------------------------------------------------------- local launch (--gpus N)


def launch(fn: Callable[..., T], args: tuple, processes: int, *,
           on_message: Callable[[Any], None] | None = None) -> T:
    """Run ``fn(*args[, send])`` in ``processes`` local ranks (torchrun's elastic launcher); rank 0's value.

    With ``on_message``, ``fn`` gets a last argument ``send`` (a queue: ``send.put(item)``) and
    this process calls ``on_message(item)`` for each item, from a helper thread. If a rank fails,
    the launcher stops the others and the root cause is raised here: the rank's own N2nError,
    or a DistributedError naming the rank (and the signal that killed it).
    """
    import multiprocessing

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if processes < 1:
        raise ConfigError(f"need at least 1 process, got {processes}")
    fields = {f.name for f in dataclasses.fields(LaunchConfig)}
    options: dict[str, Any] = dict(
        min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"n2n-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
        start_method="spawn",
    )
    if "signals_to_handle" in fields:  # Ctrl-C reaches the ranks from the terminal; they stop in step
        options["signals_to_handle"] = "SIGTERM,SIGHUP,SIGQUIT"
    if "local_addr" in fields:
        options["local_addr"] = "127.0.0.1"
    config = LaunchConfig(**options)
    errors = Path(tempfile.mkdtemp(prefix="n2n-ranks-"))
    queue = multiprocessing.get_context("spawn").Queue() if on_message else None
    drain = _Drain(queue, on_message) if queue is not None else None
    try:
        with _quiet_elastic(), _launcher_signals():
            if drain:
                drain.start()
            try:
                values = elastic_launch(config, _rank_main)(fn, args, str(errors), queue)
            except ChildFailedError as exc:
                raise _root_cause(errors, exc.failures, processes) from None
    finally:
        if drain:
            drain.stop()
        shutil.rmtree(errors, ignore_errors=True)
    if drain and drain.error is not None:
        raise drain.error
    return values[0]


def _rank_main(fn: Callable[..., T], args: tuple, errors: str, send: Any) -> T | None:
    """One launched rank: run ``fn``; on failure leave the error where the launcher finds it."""
    rank = env_rank()
    try:
        value = fn(*args, send) if send is not None else fn(*args)
        return value if rank == 0 else None
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the launching process
        with open(Path(errors) / f"rank{rank}.pickle", "wb") as fh:
            pickle.dump(_portable(exc), fh)
        raise SystemExit(1) from None  # no traceback: the launching process reports it


class _Drain(threading.Thread):
    """Hands rank 0's messages to ``on_message`` in the launching process."""

    def __init__(self, queue: Any, on_message: Callable[[Any], None]) -> None:
        super().__init__(daemon=True, name="n2n-rank-messages")
        self.queue, self.on_message = queue, on_message
        self.error: BaseException | None = None

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.on_message(item)
                except BaseException as exc:  # noqa: BLE001 - raised by launch() once the ranks are done
                    self.error = exc

    def stop(self) -> None:
        self.queue.put(None)
        self.join(timeout=10)
        self.queue.close()


def _root_cause(errors: Path, failures: dict[int, Any], processes: int) -> BaseException:
    """The error to show for a failed launch: an interruption, a rank's own error, or a dead rank."""
    raised: dict[int, BaseException] = {}
    for path in errors.glob("rank*.pickle"):
        try:
            raised[int(path.stem[4:])] = pickle.loads(path.read_bytes())
        except Exception:  # noqa: BLE001 - a rank killed mid-write leaves a partial file
            continue
    for rank in sorted(raised):
        if isinstance(raised[rank], KeyboardInterrupt) or type(raised[rank]).__name__ == "TrainingInterrupted":
            return raised[rank]
    # A rank's own error explains the failure; a lost peer (a DistributedError no other rank
    # shares) is only its consequence, and so is a rank the launcher ended with SIGTERM.
    own = {r: e for r, e in raised.items() if not (isinstance(e, DistributedError) and not getattr(e, "agreed", False))}
    if own:
        rank = min(own)
        error = own[rank]
        if isinstance(error, N2nError):
            return error
        return DistributedError(f"rank {rank} of {processes} failed: {type(error).__name__}: {first_line(error)}")
    killed = {r: f for r, f in failures.items() if r not in raised and getattr(f, "exitcode", 0) < 0}
    if killed:
        rank = min(killed, key=lambda r: (killed[r].exitcode == -signal.SIGTERM, r))
        return DistributedError(f"rank {rank} of {processes} stopped ({_signal_name(killed[rank])})")
    if raised:
        return raised[min(raised)]
    rank = min(failures) if failures else 0
    code = getattr(failures.get(rank), "exitcode", "?")
    return DistributedError(f"rank {rank} of {processes} stopped (exit code {code})")


def _signal_name(failure: Any) -> str:
    try:
        return f"killed by {signal.Signals(-failure.exitcode).name}"
    except (ValueError, AttributeError, TypeError):
        return f"exit code {getattr(failure, 'exitcode', '?')}"


@contextlib.contextmanager
def _quiet_elastic() -> Iterator[None]:
    """The launcher logs every start and failure; n2n reports failures itself, in one line."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith(("torch.distributed", "torch.multiprocessing"))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _launcher_signals() -> Iterator[None]:
    """Keep this process alive on Ctrl-C (the ranks get it from the terminal and stop together),
    and put back the handlers the launcher installs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    saved = {s: signal.getsignal(s) for s in (getattr(signal, n) for n in names if hasattr(signal, n))}
    env = os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE")
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if env is None:
            os.environ.pop("TORCHELASTIC_SIGNALS_TO_HANDLE", None)
        else:
            os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = env
