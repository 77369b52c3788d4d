"""Runs one instance's command and takes its process group down if the stand-in dies.

The stand-in starts every instance (on Linux) as::

    python -I -S orphan_guard.py STAND_IN_PID GRACE_SECONDS STATUS_FD -- COMMAND...

in a new session, so this guard leads the instance's process group. It asks the
kernel for SIGHUP when its parent dies (``PR_SET_PDEATHSIG``), which covers a
``kill -9`` or a crash of the stand-in, where nothing else would stop the
instance. Then it sends SIGTERM to the whole group, waits up to GRACE_SECONDS
for the command, and sends SIGKILL to the group (itself included), so nothing
the command forked survives either.

A preexec_fn calling prctl in the forked child would save this process, but
the stand-in runs threads (the default executor, the test harness) and
``preexec_fn`` is not safe in a threaded parent.

Otherwise the guard is transparent: the stand-in's SIGTERM and SIGKILL go to
the whole group, so the guard ignores SIGTERM and lets the command decide; it
exits the way the command did (same status, or killed by the same signal), so
the stand-in reports the command's exit. On STATUS_FD it writes
``started PID`` (the command's pid) or, if the command cannot be executed,
``failed ERRNO\\nMESSAGE\\nFILENAME``, and closes it.

Only the standard library is used: the guard runs with ``-I -S``, independent
of the instance's working directory and environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

_PR_SET_PDEATHSIG = 1
# Not SIGTERM: that one the stand-in sends to the whole group on a normal stop,
# and the guard must tell the two apart.
PARENT_DEATH_SIGNAL = signal.SIGHUP
_EXIT_PARENT_GONE = 75
_EXIT_CANNOT_EXECUTE = 127


class _ParentGone(Exception):
    """The stand-in exited: the instance must be stopped."""


class _Guard:
    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self.parent_gone = False
        self.waiting = False

    def on_parent_death_signal(self, signum: int, frame: FrameType | None) -> None:
        # SIGHUP from anyone else while the parent lives is ignored.
        if os.getppid() != self.parent_pid:
            self.parent_gone = True
            if self.waiting:
                raise _ParentGone


def _ignore(signum: int, frame: FrameType | None) -> None:
    # A handler, not SIG_IGN: ignored dispositions survive exec, handlers do not,
    # so the command still gets default SIGTERM behaviour.
    pass


def _set_parent_death_signal() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def _stop_group(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the group, give the command ``grace`` seconds, then SIGKILL the group."""
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.killpg(0, signal.SIGKILL)  # also ends this process


def _exit_like(returncode: int) -> int:
    """Return ``returncode``; if a signal ended the command (negative), die of it too."""
    if returncode < 0:
        if returncode != -signal.SIGKILL:  # its disposition cannot be changed
            signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
    return returncode


def main(argv: list[str]) -> int:
    """Run the command as described in the module docstring; return the exit status."""
    if len(argv) < 5 or argv[3] != "--":
        print(
            "usage: orphan_guard.py STAND_IN_PID GRACE_SECONDS STATUS_FD -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    parent_pid, grace, status_fd, command = int(argv[0]), float(argv[1]), int(argv[2]), argv[4:]
    guard = _Guard(parent_pid)
    signal.signal(PARENT_DEATH_SIGNAL, guard.on_parent_death_signal)
    signal.signal(signal.SIGTERM, _ignore)
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        return _EXIT_PARENT_GONE  # it died before prctl took effect; nothing started yet
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        report = f"failed {exc.errno or 0}\n{exc.strerror or exc}\n{exc.filename or ''}"
        os.write(status_fd, report.encode("utf-8", "surrogateescape"))
        return _EXIT_CANNOT_EXECUTE
    else:
        os.write(status_fd, f"started {child.pid}".encode())
    finally:
        os.close(status_fd)
    guard.waiting = True
    try:
        if guard.parent_gone:
            raise _ParentGone
        # PEP 475: signals whose handler does not raise leave the wait waiting.
        returncode = child.wait()
    except _ParentGone:
        _stop_group(child, grace)
        return _EXIT_PARENT_GONE
    guard.waiting = False
    return _exit_like(returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
