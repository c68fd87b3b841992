"""The reactor's process keeps its secrets from processes of the same user.

The database password may reach the reactor through its environment (the unit file's
``EnvironmentFile``, ``REACTOR_DATABASE__PASSWORD``, ``PGPASSWORD``), and taking it out
of ``os.environ`` does not change ``/proc/<pid>/environ``, which is the environment the
process was started with. Any process of the same user (the detector child among them,
should an image exploit the decoder) can read that file, and ``ptrace`` the reactor too.

``forbid_dumps`` marks the process non-dumpable on Linux (``prctl(PR_SET_DUMPABLE, 0)``):
its ``/proc/<pid>`` files then belong to root, so ``environ``, ``mem`` and ``ptrace`` are
closed to the same user, and no core dump is written. A child started by ``exec`` (the
detector's spawn) is dumpable again, so the reactor still reads its children's memory use.
The service files pass the password as a file instead (systemd ``LoadCredential``,
``database.password_file``), so it is not in any environment to begin with.
"""

from __future__ import annotations

import ctypes
import sys

# prctl(2) option (linux/prctl.h).
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def forbid_dumps() -> bool:
    """Make this process non-dumpable (Linux); True if the kernel took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def dumpable() -> bool | None:
    """Whether this process is dumpable (Linux); None where it cannot be told."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return int(ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)) == 1
    except (OSError, AttributeError):
        return None
