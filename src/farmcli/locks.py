"""One writer per long-written output (dataset, sample store, study, ablation, report, run): a second farm process
aimed at it is refused at once, naming the process that writes it, instead of spoiling its work.

The lock is ``PARENT/.NAME.farm-lock`` (else ``OUT/.farm-lock``) held with ``fcntl.flock``: the kernel releases it
however its process ends, so a file left by a killed process is taken over. It records the writer's pid, host, start
and command line for the message. Reentrant (``farm ablate`` holds its run's lock while ``train`` takes it). No torch.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from farmcli.errors import UserError

SUFFIX = ".farm-lock"

_held: dict[str, tuple[int, Path, int]] = {}
"""Locks this process holds: resolved output path -> (fd, lock file, count)."""


class Busy(UserError):
    """Another process writes this output now."""


def lock_file(target: str | os.PathLike) -> Path:
    """Where the lock of ``target`` lives: beside it (the output itself may not exist yet, or be replaced)."""
    target = Path(target)
    return target.parent / f".{target.name}{SUFFIX}"


def _key(target: Path) -> str:
    return str(Path(os.path.abspath(target)))


def _busy(target: Path, what: str, info: dict, option: str | None) -> Busy:
    pid, when, host, command = (info.get(k) for k in ("pid", "started", "host", "command"))
    who, stop = "another farm process", "stop it"
    if isinstance(pid, int):
        since = f", since {time.strftime('%H:%M:%S', time.localtime(when))}" if isinstance(when, (int, float)) else ""
        where = f" on {host}" if host and host != socket.gethostname() else ""
        who, stop = f"process {pid}{where}{since}" + (f": `{command}`" if command else ""), f"stop it (kill {pid})"
    other = f", or choose another {option}" if option else ""
    return Busy(
        f"{what} {target} is being written by another farm command ({who}); two writers would spoil "
        f"it, so this one stopped before writing anything. Wait for the other to end, or {stop}{other}."
    )


def _open(target: Path) -> tuple[int, Path] | None:
    """The open lock file of ``target`` (beside it, else inside an existing directory); None where neither can
    be made (no parent directory yet, a read-only place: the write itself fails there, with its own message)."""
    candidates = [lock_file(target)]
    if target.is_dir():
        candidates.append(target / SUFFIX)
    for path in candidates:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), path
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT):
                raise
    return None


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536) or b"{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    """The locked file is still at ``path`` (a releasing holder unlinks it; locking an unlinked file guards nothing)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def holder(target: str | os.PathLike) -> dict | None:
    """The lock's record ({pid, host, started, command}) where another process holds ``target``'s lock, else None."""
    target = Path(target)
    if _key(target) in _held:
        return None
    for path in (lock_file(target), target / SUFFIX):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                return _read(fd)
        finally:
            os.close(fd)  # closing releases a probe's lock
    return None


def check_free(target: str | os.PathLike, what: str, option: str | None = None) -> None:
    """Refuse at once when another process writes ``target`` (before any work of this one)."""
    info = holder(target)
    if info is not None:
        raise _busy(Path(target), what, info, option)


@contextlib.contextmanager
def hold(target: str | os.PathLike, what: str, option: str | None = None) -> Iterator[None]:
    """Hold the lock of ``target`` while the block runs; another holder is a ``Busy`` error naming ``what`` (e.g.
    "the dataset"), ``target``, that process and ``option``. Take it after the checks (``check_free`` refuses before
    any work); nothing is created here, so ``target``'s parent must exist."""
    target = Path(target)
    key = _key(target)
    if key not in _held:  # else this process writes it already (reentrant)
        opened = None
        for _ in range(20):  # a holder unlinking its file between our open and our lock: open the new one
            opened = _open(target)
            if opened is None:
                break
            fd, path = opened
            if not _try_lock(fd):
                info = _read(fd)
                os.close(fd)
                raise _busy(target, what, info, option)
            if _same_file(fd, path):
                break
            os.close(fd)
            opened = None
        if opened is None:  # nowhere to put a lock: the output cannot be written there either, and says so itself
            yield
            return
        fd, path = opened
        argv0 = Path(sys.argv[0]).name
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(["farm", *sys.argv[1:]]) if argv0 in ("farm", "__main__.py") else "",
            "output": str(target),
        }
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, only its record is missing
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(record) + "\n").encode())
        _held[key] = (fd, path, 0)
    fd, path, count = _held[key]
    _held[key] = (fd, path, count + 1)
    try:
        yield
    finally:
        _release(key)


def _release(key: str) -> None:
    fd, path, count = _held[key]
    if count > 1:
        _held[key] = (fd, path, count - 1)
        return
    del _held[key]
    _drop(fd, path)


def _drop(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()  # while still locked: no one can have taken this file meanwhile
    with contextlib.suppress(OSError):
        os.close(fd)


def release_all() -> None:
    """Remove the lock files this process holds (a hard exit: the kernel drops the locks themselves)."""
    for fd, path, _ in list(_held.values()):
        _drop(fd, path)
    _held.clear()
