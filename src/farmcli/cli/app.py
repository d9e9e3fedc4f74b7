"""The root Typer app and the one place user errors become exit code 2 with a message."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from farmcli._version import __version__
from farmcli.errors import UserError

console = Console(emoji=False)  # a column named :gift: stays a column name
err_console = Console(stderr=True, emoji=False)

app = typer.Typer(
    name="farm",
    help="FARM: frequency-aware cross-domain live-streaming recommendation. Train, evaluate and dissect the model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Make, check and look at datasets in the farm-events/1 format.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        console.print(f"farm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show Lightning's and other libraries' messages and warnings."
    ),
) -> None:
    """FARM: frequency-aware cross-domain live-streaming recommendation."""
    from farmcli.interrupts import install_sigterm

    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C: every temporary output is removed on the way out.
    install_sigterm()
    if verbose:
        from farmcli.logs import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """UserError and an unwritable output -> a message and exit 2; Ctrl-C, SIGTERM -> exit 130; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from farmcli.interrupts import command, stopped_by_signal

        try:
            with command():
                return fn(*args, **kwargs)
        except UserError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _interrupted(None)
        except SystemExit as e:
            if e.code not in (0, None) and stopped_by_signal(e):
                _interrupted(e)
            raise
        except Exception as e:
            if (message := os_error_message(e)) is None:
                raise
            fail(message)

    return wrapper


def _interrupted(e: SystemExit | None) -> None:
    how = " (SIGTERM)" if e is not None and e.code == 128 + signal.SIGTERM else ""
    with contextlib.suppress(OSError):
        err_console.print(f"interrupted{how}; nothing half-written was left behind.", markup=False)
    sys.exit(130)


def os_error_message(e: BaseException) -> str | None:
    """The message for an input or output the system refused; None for any other error (a bug, shown whole)."""
    from farmcli.io import disk_full

    if (full := disk_full(e)) is not None:
        return _disk_full_message(full)
    if not isinstance(e, OSError) or e.filename is None:
        return None
    what = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
    if e.errno == errno.EROFS:
        return (
            f"{what}: the file system there is read-only, so nothing could be written to it (nothing "
            f"half-written was left). Choose a path on a writable disk (e.g. another --out)."
        )
    if e.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{what}: permission denied: you may not write (or read) there, so nothing was written. Choose a "
            f"path you may write to (e.g. under your home directory), or change the permissions of "
            f"{Path(e.filename).parent if not os.path.isdir(e.filename) else e.filename}."
        )
    reason = e.strerror or str(e)
    if isinstance(e, FileExistsError) and os.path.isdir(e.filename):
        return (
            f"{e.filename} already exists: another farm command wrote it while this one was checking its options; "
            f"it is left alone. Choose another --out, or pass --overwrite to replace what farm wrote there."
        )
    if isinstance(e, (FileExistsError, NotADirectoryError)) and os.path.isfile(e.filename):
        reason = "a file is in the way where a directory is needed"
    return (
        f"{what}: {reason}. Check that the path exists, is of the right kind (file or "
        f"directory) and that you may write there, or choose another path."
    )


def _disk_full_message(e: OSError) -> str:
    """A full disk (or quota): which output, how much is free, and where else to write."""
    from farmcli.io import active_target

    if e.filename2 is not None:  # a copy into place (a checkpoint moved across disks): its target is cut short
        target = str(e.filename2)
        with contextlib.suppress(OSError):
            if os.path.isfile(target):
                os.unlink(target)
    elif e.filename is not None:
        target = str(e.filename)
    elif (standard := _standard_stream()) is not None:
        return (
            f"cannot write to {standard}: the disk it is redirected to is full (or it is /dev/full). What this "
            f"command wrote to files before is complete; only its messages were lost. Free space there, or "
            f"redirect {standard} elsewhere."
        )
    else:
        target = str(active_target() or "a file this command writes")
    path = Path(target)
    where = next((p for p in (path, *path.parents) if p.is_dir()), None)
    free = ""
    if where is not None:
        with contextlib.suppress(OSError):
            free = f" ({size_text(shutil.disk_usage(where).free)} free there now)"
    problem = "your disk quota is used up" if e.errno == errno.EDQUOT else "no space left on the disk"
    return (
        f"{target}: {problem}{free}, so it could not be written; nothing half-written was left behind. "
        f"Free space on that disk (delete files you do not need there; `df -h {where or path.parent}` shows it), "
        f"or write somewhere else: {_elsewhere(path)}."
    )


def _elsewhere(path: Path) -> str:
    text = path.as_posix()
    if "/samples-" in text or "/samples/" in text:
        return "sample stores go to FARM_HOME/samples (set FARM_HOME, or --data.cache_dir / --cache-dir)"
    if "/checkpoints/" in text or path.name in ("run.json", "config.yaml", "last.ckpt", "best.ckpt"):
        return "runs go to --fit.runs_dir (e.g. --fit.runs_dir /other/disk/farm-runs)"
    return "give the command an output path (--out) on another disk"


def size_text(n: int) -> str:
    """Bytes as people read a free-space figure: 16 KB, 380.9 KB, 2.1 GB."""
    if n < 1000:
        return f"{n} B"
    power = 1 if n < 1000**2 else 2 if n < 1000**3 else 3
    return f"{n / 1000**power:,.1f} {('KB', 'MB', 'GB')[power - 1]}"


def _standard_stream() -> str | None:
    """ "standard output" (or error) when it is /dev/full or a file on a full disk; then pointed at /dev/null, so
    Python's exit does not fail on it again."""
    for name, stream in (("standard output", sys.stdout), ("standard error", sys.stderr)):
        try:
            fd = stream.fileno()
            st = os.fstat(fd)
            if stat.S_ISCHR(st.st_mode):
                full = os.path.exists("/dev/full") and st.st_rdev == os.stat("/dev/full").st_rdev
            else:
                vfs = os.fstatvfs(fd)
                full = stat.S_ISREG(st.st_mode) and vfs.f_bavail * vfs.f_frsize < 1 << 16
        except (OSError, ValueError, AttributeError):
            continue
        if full:
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            return name
    return None
