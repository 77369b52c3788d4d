"""Run the validation worker on an untrusted model file, isolated.

The policy is data (``sandbox_policy.toml`` beside this file); this module turns
it into one command line for Debian's ``bwrap`` (bubblewrap), ``setpriv`` and
``prlimit`` (util-linux), plus a seccomp filter built with libseccomp, and runs
it. Three modes, chosen by the ``VALIDATION_SANDBOX`` setting and never by
accident:

``bwrap``
    The default. New PID, network, IPC, UTS, cgroup and mount namespaces (and a
    user namespace unless the worker is root), a read-only root that holds only
    the system's libraries and Python, a private empty ``/tmp``, another uid,
    no capabilities, ``no_new_privs``, seccomp, rlimits. If bubblewrap is missing
    or cannot create its namespaces, validation fails with the reason.
``container``
    For runtimes that forbid namespaces inside a container (Docker's default
    seccomp profile, Fargate): the validation worker's own container, with no
    credentials, no egress and a read-only root, is the isolation. The worker
    still gets the rlimits, the seccomp filters and an empty environment.
``none-dev``
    Development only (refused in production): like ``container`` on a machine
    where nothing isolates the worker. Every run logs a warning.

The artifact reaches the sandbox as an open, read-only file descriptor of the
already downloaded and verified file; the answer comes back on a pipe of its
own, at most :data:`MAX_ANSWER_BYTES`, and is parsed by the caller.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

POLICY_FILE = Path(__file__).with_name("sandbox_policy.toml")
WORKER_SCRIPT = Path(__file__).with_name("validate_worker.py")
MODES = ("bwrap", "container", "none-dev")
MAX_ANSWER_BYTES = 64 * 1024
_STDERR_KEEP_BYTES = 16 * 1024


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be set up here; the message says why and what to do."""


@functools.cache
def policy() -> dict[str, Any]:
    """The parsed ``sandbox_policy.toml``."""
    with POLICY_FILE.open("rb") as handle:
        return tomllib.load(handle)


def safety_module_file() -> Path:
    """The torch-free archive checks the worker imports (shared with the inference service)."""
    import inference.artifact_safety

    return Path(inference.artifact_safety.__file__).resolve()


@dataclass(frozen=True)
class SandboxRun:
    """What came out of one run: the raw answer bytes (None when there were more
    than :data:`MAX_ANSWER_BYTES`), how the process ended, and its stderr's tail."""

    answer: bytes | None
    returncode: int
    timed_out: bool
    stderr: str
    mode: str


def run(
    *,
    artifact: Path,
    arguments: dict[str, Any],
    time_limit_seconds: float,
    memory_limit_mb: int,
    mode: str,
    bwrap: str = "",
) -> SandboxRun:
    """Run the worker on ``artifact`` with ``arguments`` in a sandbox of ``mode``.

    Raises :class:`SandboxUnavailable` when the sandbox cannot be built (bwrap
    missing, namespaces refused): the caller fails the validation with it. The
    whole process tree is killed when the time limit passes or the caller is
    interrupted. ``bwrap`` is the path of bubblewrap (VALIDATION_BWRAP; default:
    ``bwrap`` from /usr/bin or /bin).
    """
    if mode not in MODES:
        raise SandboxUnavailable(f"unknown VALIDATION_SANDBOX {mode!r} (expected one of {MODES})")
    if mode == "bwrap":
        require_bwrap(bwrap)
    elif mode == "none-dev":
        logger.warning(
            "VALIDATION_SANDBOX=none-dev: the model runs WITHOUT the sandbox, as this worker's "
            "user with this machine's files and network in reach; development only"
        )
    as_root = os.geteuid() == 0
    # The filter first: if it cannot be built, nothing has been opened yet.
    seccomp_fd = _seccomp_program() if mode == "bwrap" else None
    artifact_fd = _open_for_sandbox(artifact, as_root=as_root and mode == "bwrap")
    answer_read, answer_write = os.pipe()
    passed = [artifact_fd, answer_write, *([seccomp_fd] if seccomp_fd is not None else [])]
    try:
        command = build_command(
            arguments={**arguments, "artifact_fd": artifact_fd, "answer_fd": answer_write},
            time_limit_seconds=time_limit_seconds,
            memory_limit_mb=memory_limit_mb,
            mode=mode,
            as_root=as_root,
            seccomp_fd=seccomp_fd,
            bwrap=bwrap,
        )
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_host_environment(),
            cwd="/",
            start_new_session=True,  # one process group, killed as a whole
            pass_fds=passed,  # and no other descriptor of this worker
        )
    except BaseException:
        os.close(answer_read)
        raise
    finally:
        for fd in passed:
            os.close(fd)
    assert process.stdout is not None
    answer = _Reader(os.fdopen(answer_read, "rb"), MAX_ANSWER_BYTES, keep_head=True)
    output = _Reader(process.stdout, _STDERR_KEEP_BYTES, keep_head=False)
    answer.start()
    output.start()
    timed_out = False
    try:
        process.wait(timeout=time_limit_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Also reached when the caller is interrupted (Celery's soft time limit).
        # bwrap's --die-with-parent and its PID namespace take the rest of the tree.
        if process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        answer.join(timeout=5)
        output.join(timeout=5)
    return SandboxRun(
        answer=None if answer.overflowed else bytes(answer.data),
        returncode=process.returncode,
        timed_out=timed_out,
        stderr=bytes(output.data).decode("utf-8", errors="replace"),
        mode=mode,
    )


def build_command(
    *,
    arguments: dict[str, Any],
    time_limit_seconds: float,
    memory_limit_mb: int,
    mode: str,
    as_root: bool,
    seccomp_fd: int | None,
    bwrap: str = "",
) -> list[str]:
    """The full command line for ``mode`` (exposed so tests and docs can show it)."""
    import json

    rules = policy()
    limits = rules["rlimits"]
    identity = rules["identity"]
    cpu_seconds = max(1, math.ceil(time_limit_seconds))
    memory = memory_limit_mb * 1024 * 1024
    address_space = (memory_limit_mb + int(limits["as_headroom_mb"])) * 1024 * 1024
    prlimit = [
        _tool("prlimit"),
        f"--nproc={int(limits['nproc'])}",
        f"--nofile={int(limits['nofile'])}",
        f"--fsize={int(limits['fsize_mb']) * 1024 * 1024}",
        f"--core={int(limits['core'])}",
        f"--cpu={cpu_seconds}",
        f"--data={memory}",
        f"--as={address_space}",
        "--",
    ]
    python = [
        sys.executable,
        "-I",  # no PYTHONPATH, user site or script directory on sys.path
        "-B",  # the root is read-only: no .pyc files
        str(WORKER_SCRIPT),
        json.dumps({**arguments, "safety_module": str(safety_module_file())}),
    ]
    if mode != "bwrap":
        return [*prlimit, *python]

    command = [bwrap or _tool("bwrap"), *rules["bwrap"]["flags"]]
    if as_root:
        # No user namespace: root sets up the namespaces, keeps only what setpriv
        # needs to drop to the sandbox's uid (after which it has nothing).
        command += [
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
        ]
        drop = [
            _tool("setpriv"),
            f"--reuid={int(identity['uid'])}",
            f"--regid={int(identity['gid'])}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    else:
        command += [
            "--unshare-user",
            "--uid",
            str(int(identity["uid"])),
            "--gid",
            str(int(identity["gid"])),
            "--disable-userns",
        ]
        drop = []
    for name, value in rules["environment"].items():
        command += ["--setenv", name, str(value)]
    command += _mounts(rules["bwrap"])
    if seccomp_fd is not None:
        command += ["--seccomp", str(seccomp_fd)]
    return [*command, "--", *drop, *prlimit, *python]


def _mounts(rules: dict[str, Any]) -> list[str]:
    # bwrap mounts in order, a later mount over an earlier one: the private
    # /tmp comes first, so a checkout or virtualenv that lives under /tmp
    # (a CI clone made with mktemp) is bound on top of it, not hidden by it.
    size = int(rules["tmpfs_size_mb"]) * 1024 * 1024
    arguments: list[str] = ["--proc", "/proc", "--dev", "/dev"]
    arguments += ["--perms", "1777", "--size", str(size), "--tmpfs", "/tmp"]
    created: set[Path] = {Path("/"), Path("/proc"), Path("/dev"), Path("/tmp")}
    bound: list[Path] = []

    def covered(path: Path) -> bool:
        return any(path.is_relative_to(done) for done in bound)

    def parents(path: Path) -> None:
        # bwrap creates missing parents 0700, which the sandbox's uid cannot cross.
        for parent in reversed(path.parents):
            if parent not in created:
                created.add(parent)
                arguments.extend(["--perms", "0755", "--dir", str(parent)])

    def bind(path: Path) -> None:
        parents(path)
        created.add(path)
        bound.append(path)
        arguments.extend(["--ro-bind", str(path), str(path)])

    for name in rules["ro_binds"]:
        bind(Path(name))
    for name in rules["ro_binds_if_present"]:
        if Path(name).exists():
            bind(Path(name))
    for name in rules["usr_links"]:
        path = Path(name)
        if path.is_symlink():
            arguments.extend(["--symlink", os.readlink(path), str(path)])
            created.add(path)
            bound.append(path)
        elif path.is_dir() and not str(path.resolve()).startswith("/usr/"):
            bind(path)
    # Python itself, the virtualenv, and the two files the worker runs.
    for path in (Path(sys.base_prefix), Path(sys.prefix)):
        resolved = path.resolve()
        if not covered(resolved):
            bind(resolved)
    executable = Path(sys.executable)
    if not covered(executable):
        bind(executable.parent)
    for file in (WORKER_SCRIPT.resolve(), safety_module_file()):
        if not covered(file):
            bind(file)
    return arguments


def _tool(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        raise SandboxUnavailable(
            f"{name} is not installed: install Debian's "
            f"{'bubblewrap' if name == 'bwrap' else 'util-linux'} package (make system-deps)"
        )
    return path


@functools.cache
def _probe(uid: int, path: str) -> str | None:
    """Try the namespaces once per process; return why they fail, or None."""
    del uid  # the cache key: a worker that changes uid probes again
    try:
        bwrap = path or _tool("bwrap")
    except SandboxUnavailable as exc:
        return str(exc)
    if not os.access(bwrap, os.X_OK):
        return f"bubblewrap is not installed at {bwrap}"
    flags = [*policy()["bwrap"]["flags"]]
    if os.geteuid() != 0:
        flags += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    command = [bwrap, *flags, "--ro-bind", "/usr", "/usr"]
    for name in policy()["bwrap"]["usr_links"]:
        if Path(name).is_symlink():
            command += ["--symlink", os.readlink(name), name]
    command += ["--", "/usr/bin/true"]
    try:
        completed = subprocess.run(command, capture_output=True, timeout=30, env={}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not be started: {exc}"
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return (
            "bubblewrap cannot create the sandbox's namespaces here"
            + (f" ({detail[-1][:200]})" if detail else "")
            + ". In a container that forbids namespaces, run validation in its own container "
            "and set VALIDATION_SANDBOX=container (docs/security.md)"
        )
    return None


def require_bwrap(path: str = "") -> None:
    """Raise :class:`SandboxUnavailable` unless bubblewrap works on this machine."""
    reason = _probe(os.geteuid(), path)
    if reason is not None:
        raise SandboxUnavailable(reason)


def _open_for_sandbox(artifact: Path, *, as_root: bool) -> int:
    """Open the verified artifact read-only for the sandbox.

    The worker reopens it through ``/proc/self/fd`` (torch.jit.load wants a
    path; only a path lets it read the archive without a copy in memory). When
    the sandbox's uid is another host uid (root drops to it), that reopen checks
    the file's mode: let the sandbox's group read it. Its folder stays private
    to the worker, so nobody else can reach it by name.
    """
    if as_root:
        os.chown(artifact, -1, int(policy()["identity"]["gid"]))
        os.chmod(artifact, 0o440)
    else:
        os.chmod(artifact, 0o400)
    return os.open(artifact, os.O_RDONLY | os.O_CLOEXEC)


def _host_environment() -> dict[str, str]:
    """bwrap/prlimit need a PATH; nothing of the worker's environment goes further
    (bwrap --clearenv; the policy sets the sandbox's own)."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def _seccomp_program() -> int:
    """Compile the policy's seccomp deny list to BPF in a memfd for ``bwrap --seccomp``."""
    try:
        import pyseccomp as seccomp  # type: ignore[import-untyped]
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so.2 missing
        raise SandboxUnavailable(
            f"the seccomp filter cannot be built ({exc}); install Debian's libseccomp2"
        ) from exc
    rules = policy()["seccomp"]
    program = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in rules["deny"]:
        try:
            program.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            # A syscall this kernel/architecture does not have cannot be called either.
            logger.debug("seccomp: no syscall %s here", name)
    for family in range(0, 64):
        if family not in rules["allowed_socket_families"]:
            program.add_rule(
                seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family)
            )
    fd = os.memfd_create("modeldeck-seccomp", 0)
    with os.fdopen(os.dup(fd), "wb") as sink:
        program.export_bpf(sink)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class _Reader(threading.Thread):
    """Drain a pipe, keeping the first (answer) or last (log) ``keep`` bytes."""

    def __init__(self, stream: IO[bytes], keep: int, *, keep_head: bool) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.keep = keep
        self.keep_head = keep_head
        self.data = bytearray()
        self.overflowed = False

    def run(self) -> None:
        fd = self.stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                if self.keep_head:
                    room = self.keep - len(self.data)
                    if len(chunk) > room:
                        self.overflowed = True
                    self.data += chunk[: max(room, 0)]
                else:
                    self.data += chunk
                    if len(self.data) > self.keep:
                        del self.data[: -self.keep]
        except OSError:
            pass
        finally:
            self.stream.close()
