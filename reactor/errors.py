"""The root of the errors a user can cause (``ReactorError``) and the command-line's own.

What went wrong with one image is not an error of this tree: see ``reactor.failure_types``.
"""

from __future__ import annotations


class ReactorError(Exception):
    """The root of the errors a user can cause and fix. ``reactor.cli.main`` catches it once:
    the message, one line that says what to do next, goes to stderr (passwords masked) and the
    command exits with ``exit_code``. Every layer may raise it: this module sits at the bottom."""

    exit_code: int = 2


class UsageError(ReactorError):
    """A user error found by a command-line handler; one line, exit code 2."""
