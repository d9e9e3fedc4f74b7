"""One exception type for mistakes a user can fix; the CLI turns it into exit code 2 and a message."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a path, a flag, a file's content); shown without a traceback, so it names the file and the fix."""

    exit_code = 2
