"""The root Typer app and the one place user errors become exit code 2 with a message."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

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
    import signal

    # SIGTERM (a job scheduler, `kill`) unwinds like Ctrl-C: every temporary output is removed on the way out.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if verbose:
        import os

        from farmcli.logs import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn UserError into a one-paragraph message and exit 2; Ctrl-C into exit 130; never a traceback for either."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            fail(str(e), e.exit_code)
        except OSError as e:  # a user's path: missing, read-only, a file where a directory belongs, a full disk
            if e.filename is None:
                raise
            what = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
            reason = e.strerror or str(e)
            if isinstance(e, (FileExistsError, NotADirectoryError)) and os.path.isfile(e.filename):
                reason = "a file is in the way where a directory is needed"
            fail(
                f"{what}: {reason}. Check that the path exists, is of the right kind (file or "
                f"directory) and that you may write there, or choose another path."
            )
        except KeyboardInterrupt:
            err_console.print("interrupted; nothing half-written was left behind.")
            sys.exit(130)

    return wrapper
