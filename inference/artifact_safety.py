"""Refuse model archives that would run their author's code while being loaded.

Both loaders run code from the file: ``torch.export.load`` unpickles whatever its
configs ask it to (``torch.load(..., weights_only=False)`` and plain
``pickle.loads`` in torch 2.13's ``torch/export/pt2_archive/_package.py``),
resolves graph targets by ``getattr`` on the ``torch`` module (``torch.os.system``
is a valid target), parses shape expressions with ``sympy.sympify`` (which is
``eval``) and, in ``ExportedProgram.module()``, ``exec``\\ s the archive's guard
code; TorchScript runs ``__setstate__`` methods while loading and any operator
(``aten::from_file``, ``aten::save``) while running. This module reads the
archive as data, without torch and without unpickling anything, and refuses
every one of those paths with a sentence a person can act on. It is imported by
the validation sandbox (``dashboard/registry/validate_worker.py``) and by the
inference service's loader (``inference/loader.py``), so the same rules hold in
both; it imports only the standard library.

The operator policy is data (:data:`ALLOWED_NAMESPACES`, :data:`FORBIDDEN_OPERATORS`,
:data:`NETWORK_NAMESPACES`): the graph scans in both places apply it to the
operators they find.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

# --- the operator policy ----------------------------------------------------

# Namespaces of operators a model may call: tensor maths, quantized kernels,
# CPU backends and profiler markers. Anything else (c10d networking, symmetric
# memory, debug loaders, test ops, custom extensions) is refused.
ALLOWED_NAMESPACES = frozenset(
    {
        "aten",
        "prim",
        "prims",
        "quantized",
        "_quantized",
        "quantization",
        "onednn",
        "mkldnn",
        "mkldnn_prepacked",
        "mkl",
        "sparse",
        "rngprims",
        "profiler",
    }
)
# Operators of an allowed namespace that reach outside the process.
FORBIDDEN_OPERATORS = {
    "aten::from_file": "file system",  # maps any path, read or (shared=True) write
    "aten::save": "file system",  # writes a tensor to any path
    "prim::PythonOp": "process",  # calls back into Python
}
# Namespaces whose operators open connections to other processes or hosts.
NETWORK_NAMESPACES = frozenset(
    {"c10d", "_c10d_functional", "_c10d_functional_autograd", "symm_mem", "_dtensor"}
)
# TorchScript's bound C++ classes a model may hold: the packed weights of
# quantized and CPU-optimised kernels. Others (dist_c10d stores and process
# groups open sockets) are refused.
ALLOWED_CLASS_NAMESPACES = frozenset({"quantized", "xnnpack", "mkldnn", "onednn"})
# torch.export graphs also call these higher-order operators (control flow).
ALLOWED_HIGHER_ORDER = frozenset(
    {
        "cond",
        "while_loop",
        "map_impl",
        "scan",
        "associative_scan",
        "wrap_with_set_grad_enabled",
        "wrap_with_autocast",
        "invoke_subgraph",
        "auto_functionalized",
        "auto_functionalized_v2",
    }
)
# Python-level targets torch.export writes for symbolic shape arithmetic.
ALLOWED_PYTHON_TARGETS = frozenset(
    {f"_operator.{name}" for name in (
        "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos",
        "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
        "lshift", "rshift",
    )}
    | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt", "exp", "log")}
    | {
        "torch.sym_int", "torch.sym_float", "torch.sym_max", "torch.sym_min", "torch.sym_not",
        "torch.sym_ite", "torch.sym_sum", "torch._sym_sqrt", "torch.sym_sqrt",
    }
)  # fmt: skip


class NotAnArchive(ValueError):
    """The file is not an archive of the declared format (nothing unsafe found)."""


class UnsafeArtifact(ValueError):
    """The archive asks its loader to run code, or calls an operator that reaches
    outside the process. ``kind`` is one of ``pickle``, ``native_code``, ``code``,
    ``file_system``, ``network``, ``operator``; the message is the reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def operator_refusal(name: str) -> UnsafeArtifact | None:
    """Return why the operator ``namespace::name`` is refused, or None if allowed."""
    namespace = name.split("::", 1)[0] if "::" in name else ""
    if namespace == "torch.classes":
        owner = name.split("::", 1)[1].split(".", 1)[0]
        if owner in ALLOWED_CLASS_NAMESPACES:
            return None
        return UnsafeArtifact(
            "operator",
            f"the model uses the C++ class torch.classes.{_shown(name.split('::', 1)[1])}, "
            "which is not allowed",
        )
    category = FORBIDDEN_OPERATORS.get(name)
    if category == "file system":
        return UnsafeArtifact("file_system", f"the model touched the file system: it calls {name}")
    if category is not None:
        return UnsafeArtifact("operator", f"the model calls {name}, which runs Python code")
    if namespace in NETWORK_NAMESPACES:
        return UnsafeArtifact("network", f"the model reaches for the network: it calls {name}")
    if namespace not in ALLOWED_NAMESPACES:
        return UnsafeArtifact(
            "operator",
            f"the model calls {name}, an operator outside the allowed namespaces "
            f"({', '.join(sorted(ALLOWED_NAMESPACES))})",
        )
    return None


def refuse_operators(names: Iterable[str]) -> None:
    """Raise :class:`UnsafeArtifact` for the first refused operator (sorted order)."""
    for name in sorted(set(names)):
        refusal = operator_refusal(name)
        if refusal is not None:
            raise refusal


# --- archives ----------------------------------------------------------------

# Bounds for what is read into memory while checking (a config or a graph is
# small; a zip bomb must not become the checker's problem).
MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_CODE_BYTES = 64 * 1024 * 1024
MAX_PICKLE_BYTES = 16 * 1024 * 1024

# torch.save's tensor pickles (sample inputs) may reference only these.
_TENSOR_PICKLE_GLOBALS = frozenset(
    {
        "torch._utils _rebuild_tensor_v2",
        "torch._utils _rebuild_parameter",
        "torch._utils _rebuild_parameter_with_state",
        "collections OrderedDict",
        "builtins set",
        "torch Size",
        "torch device",
    }
    | {
        f"torch {kind}Storage"
        for kind in (
            "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte",
            "Bool", "ComplexFloat", "ComplexDouble", "Untyped",
        )
    }
    | {"torch.storage UntypedStorage"}
)  # fmt: skip
_PICKLE_CALLS = frozenset({"STACK_GLOBAL", "INST", "OBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"})

# Serialized operator targets: torch.ops.<namespace>.<op>.<overload>.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_OP_TARGET = re.compile(rf"torch\.ops\.({_IDENT})\.({_IDENT})(?:\.{_IDENT})?")

# Shape expressions are parsed with sympy.sympify (eval): allow only arithmetic on
# symbols, integers and the sympy functions torch's deserializer names.
_SYMPY_NAMES = frozenset(
    {
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
        "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
        "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
        "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "Max", "Min", "Abs", "Eq", "Ne",
        "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Symbol", "Integer", "true", "false",
        "True", "False", "oo", "positive", "negative", "nonnegative", "nonpositive", "integer",
        "real", "finite", "zero", "nonzero", "Sym",
    }
)  # fmt: skip
_EXPR_TOKEN = re.compile(
    r"\s+|'[a-z]{1,8}[0-9]{1,9}'|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"
    r"|\*\*|==|!=|<=|>=|//|[-+*/%(),<>=&|~]"
)
_SYMBOL_NAME = re.compile(r"[a-z]{1,8}[0-9]{1,9}")
_MAX_EXPR_CHARS = 4000


def check_pt2(source: str | IO[bytes]) -> None:
    """Raise :class:`UnsafeArtifact` when the torch.export archive ``source`` asks
    ``torch.export.load`` (or ``.module()``) to run code. Returns None for an
    archive made only of data: JSON graphs whose targets are operators, raw
    tensor files and tensor-only sample inputs. Raises ValueError (not
    UnsafeArtifact) when ``source`` is not a zip archive at all."""
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise NotAnArchive("it is not a zip archive") from exc
    with archive:
        entries = _entries(archive)
        names = set(entries)
        if "code/__torch__.py" in names or ("data.pkl" in names and "constants.pkl" in names):
            raise NotAnArchive("it is a TorchScript archive")
        if "archive_format" not in names and "serialized_exported_program.json" not in names:
            raise NotAnArchive("it has no archive_format entry")
        if "archive_format" not in names or "archive_version" not in names:
            # torch.export.load falls back to its pre-2.8 format, which loads the
            # state dict with torch.load and retries with weights_only=False.
            raise UnsafeArtifact(
                "pickle",
                "the archive is in torch.export's old format, which torch loads with pickle; "
                "export it again with torch.export.save from torch 2.13",
            )
        for name in names:
            if name.startswith(("data/aotinductor/", "data/executorch/", "data/mtia")):
                raise UnsafeArtifact(
                    "native_code",
                    f"the archive contains compiled native code ({name}), which loading runs",
                )
            if name.startswith("xl_model_weights/"):
                raise UnsafeArtifact(
                    "pickle", f"the archive holds weights in a format torch unpickles ({name})"
                )
        models = sorted(n for n in names if n.startswith("models/") and n.endswith(".json"))
        if not models:
            raise UnsafeArtifact("code", "the archive holds no exported program (models/*.json)")
        for model_file in models:
            model = model_file[len("models/") : -len(".json")]
            for legacy in (f"data/weights/{model}.pt", f"data/constants/{model}.pt"):
                if legacy in names:
                    raise UnsafeArtifact(
                        "pickle",
                        f"the archive holds pickled weights ({legacy}, torch.export's legacy "
                        "layout), which torch would unpickle",
                    )
            _check_payload_config(archive, entries, f"data/weights/{model}_weights_config.json")
            _check_payload_config(archive, entries, f"data/constants/{model}_constants_config.json")
            sample = f"data/sample_inputs/{model}.pt"
            if sample in names:
                _check_tensor_pickle(_read(archive, entries[sample], MAX_PICKLE_BYTES), sample)
            _check_program(_load_json(archive, entries[model_file]), model_file)


def _entries(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Map each entry's name without the archive's root folder to its ZipInfo."""
    infos = archive.infolist()
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if len(roots) != 1 or any("/" not in info.filename for info in infos):
        raise NotAnArchive("its entries do not share one root folder")
    return {info.filename.split("/", 1)[1]: info for info in infos}


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise UnsafeArtifact("code", f"{info.filename} is larger than {limit} bytes")
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise UnsafeArtifact("code", f"{info.filename} is larger than {limit} bytes")
    return data


def _load_json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    try:
        return json.loads(_read(archive, info, MAX_JSON_BYTES))
    except ValueError as exc:
        raise UnsafeArtifact("code", f"{info.filename} is not valid JSON") from exc


def _check_payload_config(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], name: str
) -> None:
    info = entries.get(name)
    if info is None:
        return
    document = _load_json(archive, info)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise UnsafeArtifact("code", f"{name} has no config object")
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            raise UnsafeArtifact("code", f"{name}: the entry for {fqn!r} is not an object")
        path = meta.get("path_name")
        if meta.get("use_pickle"):
            raise UnsafeArtifact(
                "pickle",
                f"{name} asks for pickle (use_pickle for {_shown(fqn)}); unpickling runs the "
                "file's code, so the archive is refused",
            )
        if not isinstance(path, str) or not path.startswith(("weight_", "tensor_")):
            # custom_obj_ / opaque_obj_ entries are unpickled whatever use_pickle says.
            raise UnsafeArtifact(
                "pickle",
                f"{name} stores {_shown(fqn)} as an opaque or custom object "
                f"({_shown(path)}), which torch unpickles; only raw tensors are accepted",
            )


def _check_tensor_pickle(data: bytes, name: str) -> None:
    """torch.save writes a zip with one data.pkl; torch.export loads it with
    weights_only=True and retries with weights_only=False, so allow only tensors."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeArtifact("pickle", f"{name} is not a torch.save archive") from exc
    with inner:
        pickles = [i for i in inner.infolist() if i.filename.endswith(".pkl")]
        for info in pickles:
            _check_pickle_opcodes(_read(inner, info, MAX_PICKLE_BYTES), name)


def _check_pickle_opcodes(data: bytes, name: str) -> None:
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in _PICKLE_CALLS:
                raise UnsafeArtifact(
                    "pickle", f"{name} is a pickle that builds objects ({opcode.name})"
                )
            if opcode.name == "GLOBAL" and argument not in _TENSOR_PICKLE_GLOBALS:
                raise UnsafeArtifact(
                    "pickle",
                    f"{name} is a pickle that calls {_shown(str(argument))}, not only tensors",
                )
    except ValueError as exc:
        raise UnsafeArtifact(
            "pickle", f"{name} is a malformed pickle or one the safety check cannot read through"
        ) from exc


def _check_program(document: Any, name: str) -> None:
    if not isinstance(document, dict):
        raise UnsafeArtifact("code", f"{name} is not an exported program")
    guards = document.get("guards_code") or []
    if guards:
        # ExportedProgram.module() exec()s these strings as Python.
        raise UnsafeArtifact(
            "code",
            f"{name} carries guard code, Python source that torch runs when the program is "
            "loaded; export without it",
        )
    for node in _nodes(document):
        target = node.get("target")
        if not isinstance(target, str):
            raise UnsafeArtifact("code", f"{name}: a graph node has no target")
        refusal = target_refusal(target)
        if refusal is not None:
            raise refusal
    for expression in _values_of(document, "expr_str"):
        if not isinstance(expression, str) or not _safe_expression(expression):
            raise UnsafeArtifact(
                "code",
                f"{name}: a shape expression is not plain arithmetic ({_shown(str(expression))}); "
                "torch would evaluate it as Python",
            )


def target_refusal(target: str) -> UnsafeArtifact | None:
    """Return why a serialized torch.export node target is refused, or None."""
    match = _OP_TARGET.fullmatch(target)
    if match is not None:
        namespace, op = match.group(1), match.group(2)
        if namespace == "higher_order":
            if op in ALLOWED_HIGHER_ORDER:
                return None
            return UnsafeArtifact(
                "operator", f"the graph calls the higher-order operator {op}, which is not allowed"
            )
        return operator_refusal(f"{namespace}::{op}")
    if target in ALLOWED_PYTHON_TARGETS:
        return None
    return UnsafeArtifact(
        "code",
        f"the graph calls {_shown(target)}, which is not an operator; torch would resolve it "
        "to any Python function",
    )


def _nodes(document: Any) -> Iterator[dict[str, Any]]:
    """Every graph node, nested subgraphs (control flow) included."""
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "target" in item and "inputs" in item and "outputs" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _values_of(document: Any, key: str) -> Iterator[Any]:
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for name, value in item.items():
                if name == key:
                    yield value
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _safe_expression(expression: str) -> bool:
    if len(expression) > _MAX_EXPR_CHARS:
        return False
    position = 0
    for match in _EXPR_TOKEN.finditer(expression):
        if match.start() != position:
            return False
        token = match.group()
        position = match.end()
        if token[0].isalpha() or token[0] == "_":
            if token not in _SYMPY_NAMES and _SYMBOL_NAME.fullmatch(token) is None:
                return False
    return position == len(expression)


# --- TorchScript ------------------------------------------------------------------

# How serialized TorchScript code names operators: torch.<op>(...) for aten,
# ops.<namespace>.<op>(...) for the others, torch.classes for bound C++ classes.
_SCRIPT_OPS = re.compile(r"\bops\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_SCRIPT_ATEN = re.compile(r"\btorch\.([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_SCRIPT_CLASSES = re.compile(r"\btorch\.classes\.([A-Za-z_][A-Za-z0-9_.]*)")


def check_torchscript(source: str | IO[bytes]) -> None:
    """Raise :class:`UnsafeArtifact` when the TorchScript archive's code calls a
    refused operator. Loading runs ``__setstate__`` methods, so this reads the
    code as text before anything is loaded; the graph scan after loading
    (:func:`scripted_operators`) is the complete one. Raises
    :class:`NotAnArchive` when ``source`` is not a zip archive."""
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise NotAnArchive("it is not a zip archive") from exc
    with archive:
        names = {i.filename.split("/", 1)[-1] for i in archive.infolist()}
        if "code/__torch__.py" not in names and (
            "archive_format" in names or "serialized_exported_program.json" in names
        ):
            raise NotAnArchive("it is a torch.export archive (.pt2), not TorchScript")
        total = 0
        for info in archive.infolist():
            parts = info.filename.split("/")
            if "code" not in parts[:-1] or not info.filename.endswith(".py"):
                continue
            total += info.file_size
            if total > MAX_CODE_BYTES:
                raise UnsafeArtifact("code", f"the archive's code is larger than {MAX_CODE_BYTES}")
            text = _read(archive, info, MAX_CODE_BYTES).decode("utf-8", errors="replace")
            names = {f"torch.classes::{m.group(1)}" for m in _SCRIPT_CLASSES.finditer(text)}
            names |= {f"{m.group(1)}::{m.group(2)}" for m in _SCRIPT_OPS.finditer(text)}
            names |= {f"aten::{m.group(1)}" for m in _SCRIPT_ATEN.finditer(text)}
            refuse_operators(names)


def scripted_operators(torch: Any, compilation_unit: Any) -> set[str]:
    """Every operator kind in every function of a loaded TorchScript compilation
    unit (methods of all modules and classes, ``__setstate__`` included), with
    calls inlined. ``torch`` is the imported module (this file stays torch-free)."""
    kinds: set[str] = set()
    for function in compilation_unit.get_functions():
        graph = function.graph.copy()
        torch._C._jit_pass_inline(graph)
        kinds |= _graph_kinds(graph)
    return kinds


def _graph_kinds(graph: Any) -> set[str]:
    kinds: set[str] = set()
    stack = [graph.nodes()]
    while stack:
        for node in stack.pop():
            kinds.add(node.kind())
            for output in node.outputs():
                type_name = str(output.type())
                if "torch.classes." in type_name:
                    kinds.add("torch.classes::" + type_name.split("torch.classes.", 1)[1])
            stack.extend(block.nodes() for block in node.blocks())
    return kinds


def exported_operators(program: Any) -> set[str]:
    """Every target called by a loaded ExportedProgram's graphs (control-flow
    subgraphs included), as ``namespace::op`` for operators (``higher_order::cond``
    for control flow) and ``module.name`` for Python-level targets."""
    names: set[str] = set()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            target = node.target
            schema = getattr(target, "_schema", None)
            if schema is not None:
                names.add(str(schema.name))
            elif hasattr(target, "namespace") and callable(getattr(target, "name", None)):
                names.add(f"{target.namespace}::{target.name()}")
            else:
                module_name = getattr(target, "__module__", None) or "?"
                names.add(f"{module_name}.{getattr(target, '__name__', '?')}")
    return names


def refuse_exported_operators(names: Iterable[str]) -> None:
    """Raise :class:`UnsafeArtifact` for the first refused name of :func:`exported_operators`."""
    for name in sorted(set(names)):
        if "::" in name:
            namespace, op = name.split("::", 1)
            refusal = target_refusal(f"torch.ops.{namespace}.{op.split('.', 1)[0]}")
        else:
            refusal = target_refusal(name)
        if refusal is not None:
            raise refusal


def _shown(value: object) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= 80 else text[:77] + "..."
