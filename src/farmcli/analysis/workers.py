"""Training runs side by side, each in its own process (``farm ablate --jobs``): small models use many threads
poorly, so several runs with a share of the threads each train more samples per second in all.

Processes are ``spawn``ed (no forked torch state) and watched here, not by a pool, so an interrupt reaches each:
Ctrl-C or SIGTERM sends every worker SIGINT and Lightning stops it at a clean point, keeping its last checkpoint.
A parent killed with SIGKILL cannot ask, so the kernel (``PR_SET_PDEATHSIG``; elsewhere a thread watching the
parent's pid) stops the worker as on Ctrl-C, and it exits within ``ORPHAN_SECONDS``: no orphan trains beside a re-run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from farmcli.errors import UserError

STOP_SECONDS = 120  # an interrupted worker's time to write its checkpoint state and exit before it is terminated
ORPHAN_SECONDS = 10  # an orphaned worker's time to stop at a clean point before it exits regardless


class WorkerCrashed(RuntimeError):
    """A worker failed with something other than a user error: a bug, reported with the worker's traceback."""


@dataclass
class Job:
    name: str  # for messages and the process title
    args: tuple[Any, ...]
    key: Any = None  # the caller's own record of the job, handed back to the callbacks


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[Job],
    parallel: int,
    threads: int,
    on_start: Callable[[Job], None],
    on_end: Callable[[Job, str], None],
) -> None:
    """``fn(*job.args)`` (a module-level function) for every job, ``parallel`` at a time, with ``threads`` torch
    threads each. ``on_end(job, error)``: '' or a ``UserError``'s message; any other exception stops the rest and
    raises ``WorkerCrashed``, an interrupt ``KeyboardInterrupt``.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = list(jobs)
    running: dict[Any, tuple[Job, Any, Any]] = {}  # sentinel -> (job, process, connection)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=_worker, args=(fn, job.args, threads, writer, os.getpid()), name=f"farm {job.name}"
                )
                process.start()
                writer.close()
                running[process.sentinel] = (job, process, reader)
                on_start(job)
            for sentinel in multiprocessing.connection.wait(list(running)):
                job, process, reader = running.pop(sentinel)
                process.join()
                kind, text = reader.recv() if reader.poll() else ("crash", f"exit code {process.exitcode}")
                reader.close()
                if kind == "interrupted":
                    raise KeyboardInterrupt
                if kind == "crash":
                    raise WorkerCrashed(f"{job.name} failed in its worker process:\n{text}")
                on_end(job, text)
    finally:
        _stop([process for _, process, _ in running.values()])
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop(processes: Sequence[Any]) -> None:
    """SIGINT to each live worker (a second one after a terminal's Ctrl-C is ignored), then terminate what is alive
    after STOP_SECONDS."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(STOP_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join()


def _worker(fn: Callable[..., Any], args: tuple[Any, ...], threads: int, writer: Any, parent: int = 0) -> None:
    # SIGINT stops a worker: Ctrl-C's handler even where it started ignored (a parent in a background shell job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if parent:
        die_with_parent(parent)
    import torch

    from farmcli.allocator import keep_freed_memory

    torch.set_num_threads(threads)
    keep_freed_memory()  # each worker is a training process of its own (farmcli/allocator.py)
    try:
        fn(*args)
        result = ("ok", "")
    except UserError as e:
        result = ("user", str(e))
    except KeyboardInterrupt:
        result = ("interrupted", "")
    except BaseException:
        result = ("crash", traceback.format_exc())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped already: a later one would break the exit's cleanup
    with contextlib.suppress(OSError):  # the parent is gone: no one to tell
        writer.send(result)
        writer.close()


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Stop this process as on Ctrl-C when ``parent`` dies, and end it ``ORPHAN_SECONDS`` later: the kernel's
    parent-death signal on Linux, and in any case a thread that polls the parent's pid."""
    import sys
    import threading
    import time

    kernel = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            kernel = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0) == 0

    def watch() -> None:
        from farmcli import io, locks

        died_before = os.getppid() != parent  # before prctl took effect: the kernel will not send it
        while os.getppid() == parent:
            time.sleep(0.5)
        if died_before or not kernel:  # send the signal the kernel would have sent
            with contextlib.suppress(OSError):
                os.kill(os.getpid(), signal.SIGINT)
        time.sleep(ORPHAN_SECONDS)
        io.remove_active_temps()
        locks.release_all()
        os._exit(1)

    threading.Thread(target=watch, name="farm-parent-watch", daemon=True).start()
