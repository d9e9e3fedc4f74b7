"""Ctrl-C and SIGTERM end any command the same way: a KeyboardInterrupt, which the CLI reports with exit 130.

Every command runs inside ``command()`` (farmcli/cli/app.py's ``user_errors``): SIGTERM unwinds like Ctrl-C, removing
temporaries on the way out. Where the main thread sits in native code that does not return (a DDP rendezvous, a long
polars or torch call), a watchdog thread woken by the signal ends the process after ``GRACE_SECONDS``: it removes the
temporaries and lock files, says why, and exits 130. Light on purpose (no torch).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

GRACE_SECONDS = 8.0
"""How long a command may take to stop at a clean point after SIGTERM or Ctrl-C before the watchdog ends it."""

_running = 0
"""Commands running in this process (``command()`` blocks); the watchdog acts only while one runs."""
_signalled_at: float | None = None
_wakeup: tuple[socket.socket, socket.socket] | None = None
_hooks: list[Callable[[], None]] = []


def stopped_by_signal(e: BaseException) -> bool:
    """Ctrl-C, SIGTERM (the CLI turns it into SystemExit(143)), or Lightning's answer to Ctrl-C: it stops at a
    clean point and calls sys.exit(1) while handling the KeyboardInterrupt (which is then the exit's context)."""
    if not isinstance(e, (KeyboardInterrupt, SystemExit)):
        return False
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, KeyboardInterrupt) or (isinstance(cur, SystemExit) and cur.code == 128 + signal.SIGTERM):
            return True
        cur = cur.__context__
    return False


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM ends the work as Ctrl-C does: a KeyboardInterrupt (exit 130), removing temporaries on the way out."""
    try:
        yield
    except SystemExit as e:
        if stopped_by_signal(e):
            raise KeyboardInterrupt from None
        raise


def _sigterm(signum: int, frame: Any) -> None:
    sys.exit(128 + signum)


def install_sigterm() -> None:
    """SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C: every temporary output is removed on the way out."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)


@contextlib.contextmanager
def command() -> Iterator[None]:
    """Run one CLI command: SIGTERM unwinds like Ctrl-C, and the watchdog ends it if it cannot unwind."""
    global _running, _signalled_at
    previous = None
    main = threading.current_thread() is threading.main_thread()
    if main:
        install_sigterm()
        previous = _arm()
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if not _running:
            _signalled_at = None  # a signal this command answered does not count against the next one
        if main and previous is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(previous)


@contextlib.contextmanager
def on_hard_exit(fn: Callable[[], None]) -> Iterator[None]:
    """Call ``fn`` (quick, no locks) if the watchdog ends the process during the block (a run marks itself stopped)."""
    _hooks.append(fn)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _hooks.remove(fn)


def _arm() -> int | None:
    """The signal's C handler writes its number to a socket that the watchdog thread reads: it wakes even while
    the main thread sits in native code, where Python's own handler cannot run until that code returns."""
    global _wakeup
    try:
        if _wakeup is None:
            r, w = socket.socketpair()
            r.setblocking(True)
            w.setblocking(False)
            _wakeup = (r, w)
            threading.Thread(target=_watch, args=(r,), name="farm-interrupt-watchdog", daemon=True).start()
        return signal.set_wakeup_fd(_wakeup[1].fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        return None


def _watch(sock: socket.socket) -> None:
    global _signalled_at
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        signums = {s for s in data if s in (signal.SIGINT, signal.SIGTERM)}
        if not signums or not _running:
            continue
        name = "SIGTERM" if signal.SIGTERM in signums else "Ctrl-C (SIGINT)"
        waiting = _waits_for_nodes()
        if waiting is not None:
            hard_exit(f"interrupted ({name}) {waiting}")
        if _signalled_at is not None:  # the second one: do not wait any longer
            hard_exit(f"interrupted ({name}, twice)")
        _signalled_at = time.monotonic()
        threading.Thread(target=_deadline, args=(name, _signalled_at), daemon=True).start()


def _deadline(name: str, at: float) -> None:
    global _signalled_at
    time.sleep(GRACE_SECONDS)
    if _signalled_at != at:
        return
    _signalled_at = None
    if _running:
        hard_exit(
            f"interrupted ({name}): the command did not reach a clean point within {GRACE_SECONDS:.0f} s "
            f"(it was inside a library call that does not return early), so farm stopped it"
        )


def _waits_for_nodes() -> str | None:
    """A message when the main thread waits in torch.distributed's rendezvous for other nodes' processes (num_nodes
    > 1): native code that waits out the rendezvous timeout (30 minutes) while no signal reaches Python."""
    frames: list[Any] = []
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    names = {"init_process_group", "rendezvous", "_create_c10d_store", "_env_rendezvous_handler"}
    if not any("torch/distributed" in f.f_code.co_filename and f.f_code.co_name in names for f in frames):
        return None
    nodes = world = None
    for f in frames:
        owner = f.f_locals.get("self")
        if nodes is None and isinstance(getattr(owner, "num_nodes", None), int):
            nodes = owner.num_nodes
        if world is None and isinstance(f.f_locals.get("world_size"), int):
            world = f.f_locals["world_size"]
    n = f"trainer.num_nodes = {nodes}" if nodes is not None else "trainer.num_nodes > 1"
    size = f" ({world} processes in all)" if world is not None else ""
    return (
        f"while farm waited for the other nodes' processes to join the training: {n}{size}, so farm waits until the "
        f"same command runs on every node (NODE_RANK 0 .. num_nodes - 1, with the same MASTER_ADDR and "
        f"MASTER_PORT). On one machine leave trainer.num_nodes at 1 and use trainer.devices. Nothing was trained"
    )


def _children() -> list[int]:
    """This process's child processes (Linux: /proc), e.g. DDP ranks it launched."""
    me, kids = str(os.getpid()), []
    with contextlib.suppress(OSError):
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError, IndexError):
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if fields[1].decode() == me:
                    kids.append(int(entry))
    return kids


def hard_exit(reason: str) -> None:
    """End a process whose main thread cannot unwind: remove its temporaries and locks, stop its children, exit 130."""
    from farmcli import io, locks

    for fn in list(_hooks):
        with contextlib.suppress(Exception):
            fn()
    io.remove_active_temps()
    locks.release_all()
    for pid in _children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
    with contextlib.suppress(OSError):
        os.write(2, f"{reason}; nothing half-written was left behind.\n".encode())
    os._exit(130)
