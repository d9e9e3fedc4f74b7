"""One exception type for mistakes a user can fix; the CLI turns it into exit code 2 and a message."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a path, a flag, a file's content).

    The message is shown as-is, without a traceback, so it should name the file, the column and the fix.
    """

    exit_code = 2
