"""Turn a ``/predict`` body into one numpy array of the declared shape and dtype, or refuse it.

The common case is handled by numpy in C: ``np.array(inputs)`` builds the array,
and its inferred shape and dtype kind are compared with the declaration. Only
when that cannot settle the question (a ragged list, strings, nulls, booleans
mixed into numbers, huge integers) does a Python walk over the elements run, and
its job is mostly to say exactly *where* the problem is.

Rules (contract section 3):
- float dtypes take JSON integers and floats; int dtypes take integral numbers
  (``2`` and ``2.0``, not ``1.5``); bool takes ``true``/``false`` only.
- ``true``/``false`` are not numbers: they are refused for numeric dtypes, as
  numbers are refused for bool.
- ``NaN``, ``Infinity``, ``-Infinity`` and overflowing literals such as ``1e999``
  parse as non-finite numbers and are refused by validation, not by the parser;
  so are finite numbers outside the dtype's range (``1e39`` for float32).
"""

from __future__ import annotations

import io
import json
import math
import re
from tokenize import TokenError
from typing import Any

import numpy as np
import orjson

from inference.pointer import InputSpec

NUMPY_DTYPES: dict[str, type[np.number[Any] | np.bool_]] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}
_INT_BOUNDS = {"int64": (-(2**63), 2**63 - 1), "int32": (-(2**31), 2**31 - 1)}
_FLOAT64_MAX = float(np.finfo(np.float64).max)
_FLOAT_LIMITS = {
    "float32": float(np.finfo(np.float32).max),
    "float64": _FLOAT64_MAX,
}
_FAST_KINDS = {
    "float32": "fiu",
    "float64": "fiu",
    "int64": "iuf",
    "int32": "iuf",
    "bool": "b",
}


class InputError(ValueError):
    """The request body is not acceptable; the message names the problem and where."""


NPY_CONTENT_TYPE = "application/x-npy"
_NPY_MAGIC = b"\x93NUMPY"
_NPY_MAX_HEADER = 4096


def is_npy(content_type: str | None) -> bool:
    """Return True when ``content_type`` announces a ``.npy`` body."""
    return (
        content_type is not None
        and content_type.partition(";")[0].strip().lower() == NPY_CONTENT_TYPE
    )


def from_npy(body: bytes, spec: InputSpec, *, max_examples: int) -> np.ndarray:
    """Return the ``.npy`` array in ``body`` as ``[n, *spec.shape]`` of ``spec.dtype``.

    The binary twin of :func:`to_batch`: the same limits, the same value checks
    (non-finite numbers, ranges) and, for a wrong shape, the same message the
    JSON body holding the same array would get. The dtype must be the declared
    one (either byte order); nothing is converted between kinds. Only numpy's
    header is parsed (a Python literal, never a pickle).
    """
    if not body.startswith(_NPY_MAGIC):
        raise InputError(f"body: not a .npy array (Content-Type {NPY_CONTENT_TYPE})")
    shape, fortran_order, dtype, offset = _npy_header(body)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"body: .npy dtype {dtype.str} is not a plain number or boolean type")
    expected = np.dtype(NUMPY_DTYPES[spec.dtype])
    if dtype.kind != expected.kind or dtype.itemsize != expected.itemsize:
        raise InputError(f"inputs: dtype {dtype.name} does not match the model's {spec.dtype}")
    if not shape:
        raise InputError(f"inputs: expected a list of examples, got {_scalar_kind(spec.dtype)}")
    if shape[0] == 0:
        raise InputError("inputs: empty batch, send at least one example")
    if shape[0] > max_examples:
        raise InputError(
            f"inputs: {shape[0]} examples exceed the limit of {max_examples} per request"
        )
    _check_shape(tuple(shape[1:]), spec)
    count = math.prod(shape)
    if len(body) - offset != count * dtype.itemsize:
        raise InputError(
            f"body: the .npy data is {len(body) - offset} bytes; shape {tuple(shape)} of "
            f"{dtype.name} needs {count * dtype.itemsize}"
        )
    array = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran_order else "C")
    # C-ordered, native byte order; checked like a JSON body's array.
    checked = _convert_checked(array.astype(expected, order="C", copy=False), spec.dtype)
    # torch.from_numpy wants a writable array; frombuffer's view of the body is not.
    return checked if checked.flags.writeable else checked.copy()


# What numpy.save writes: {'descr': '<f4', 'fortran_order': False, 'shape': (1, 512), }
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (True|False), "
    rb"'shape': \(((?:\d+, ?)*\d*)\), \} *\n"
)


# How numpy 2's header reader words a header that ast.literal_eval refused (or that
# evaluated to something other than a dict); its other messages (wrong keys, bad
# shape, bad descr) name the problem and are passed on.
_NOT_A_LITERAL_DICT = ("malformed node or string", "Cannot parse header", "Header is not a dict")


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """Return (shape, fortran_order, dtype, data offset) of a .npy body.

    numpy's own header reader runs ``ast.literal_eval`` after a tokenizer pass,
    about 0.1 ms: as much as validating a JSON example. The header numpy.save
    writes is matched directly; any other valid spelling goes to numpy's reader.
    """
    major = body[6] if len(body) > 6 else 0
    start = 12 if major == 2 else 10
    if len(body) < start:
        raise InputError(
            f"body: {len(body)} bytes is too short for a .npy header (at least {start})"
        )
    if major == 1:
        length = int.from_bytes(body[8:10], "little")
    elif major == 2:
        length = int.from_bytes(body[8:12], "little")
    else:
        raise InputError(f"body: invalid .npy header: format version {major} not supported")
    if length > _NPY_MAX_HEADER or len(body) < start + length:
        raise InputError("body: invalid .npy header: header too long or cut short")
    match = _NPY_HEADER.fullmatch(body, start, start + length)
    if match is not None:
        try:
            dtype = np.dtype(match[1].decode())
        except TypeError as exc:
            raise InputError(f"body: invalid .npy header: {exc}") from None
        dims = match[3].replace(b" ", b"").split(b",")
        shape = tuple(int(d) for d in dims if d)
        return shape, match[2] == b"True", dtype, start + length
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        else:
            header = np.lib.format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
    except (ValueError, SyntaxError, TokenError, OSError, TypeError, RecursionError) as exc:
        if isinstance(exc, SyntaxError | TokenError | RecursionError) or str(exc).startswith(
            _NOT_A_LITERAL_DICT
        ):
            # literal_eval's own messages name AST nodes (<ast.Call object at 0x...>).
            raise InputError(
                "body: invalid .npy header: the header is not a plain literal dict"
            ) from None
        raise InputError(f"body: invalid .npy header: {exc}") from None
    shape, fortran_order, dtype = header
    if any(d < 0 for d in shape):
        raise InputError(f"body: invalid .npy header: negative dimension in shape {shape}")
    return tuple(shape), bool(fortran_order), dtype, stream.tell()


def _check_shape(example: tuple[int, ...], spec: InputSpec) -> None:
    # What the JSON walk would say about the first example of this shape.
    for depth, want in enumerate(spec.shape):
        where = _path((0,) * (depth + 1))
        if depth >= len(example):
            raise InputError(
                f"{where}: expected a list of {want} items, got {_scalar_kind(spec.dtype)}"
            )
        if example[depth] != want:
            raise InputError(f"{where}: expected a list of {want} items, got {example[depth]}")
    if len(example) > len(spec.shape):
        problem = _LEAF_CHECKS[spec.dtype]([])
        raise InputError(f"{_path((0,) * (len(spec.shape) + 1))}: {problem}")


def _scalar_kind(dtype: str) -> str:
    return "boolean" if dtype == "bool" else "number"


def parse_json(body: bytes) -> Any:
    """Return the decoded body; raise InputError when it is not JSON at all.

    orjson is tried first because it is fast and strict. It refuses the tokens
    ``NaN``/``Infinity`` and overflowing literals, which the contract says must
    reach validation as non-finite numbers, so only then is the body parsed again
    with Python's ``json`` (which reads them as floats).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise InputError(f"invalid JSON: {exc}") from None


def body_may_contain_booleans(body: bytes) -> bool:
    """Return False only when ``body`` certainly holds no JSON ``true``/``false``.

    numpy silently turns ``true`` into 1 when it meets it among numbers, so the
    fast path is only trusted for numeric dtypes when neither token occurs.
    """
    return b"true" in body or b"false" in body


def to_batch(
    document: Any, spec: InputSpec, *, max_examples: int, may_contain_booleans: bool = True
) -> np.ndarray:
    """Return ``document["inputs"]`` as an array of shape ``[n, *spec.shape]``, ``spec.dtype``.

    Raises InputError naming the first problem found, e.g.
    ``inputs[3][1]: expected a number, got string``.
    """
    if not isinstance(document, dict):
        raise InputError(
            f'body: expected a JSON object with an "inputs" list, got {_kind(document)}'
        )
    if "inputs" not in document:
        raise InputError('inputs: field required (body must be {"inputs": [example, ...]})')
    inputs = document["inputs"]
    if not isinstance(inputs, list):
        raise InputError(f"inputs: expected a list of examples, got {_kind(inputs)}")
    if not inputs:
        raise InputError("inputs: empty batch, send at least one example")
    if len(inputs) > max_examples:
        raise InputError(
            f"inputs: {len(inputs)} examples exceed the limit of {max_examples} per request"
        )
    expected_shape = (len(inputs), *spec.shape)

    fast = None
    if spec.dtype == "bool" or not may_contain_booleans:
        try:
            fast = np.array(inputs)
        except (ValueError, TypeError, OverflowError):
            fast = None  # ragged or otherwise irregular: the walk below says where
    if (
        fast is not None
        and fast.shape == expected_shape
        and fast.dtype.kind in _FAST_KINDS[spec.dtype]
    ):
        return _convert_checked(fast, spec.dtype)

    _walk(inputs, spec)
    # Every element is now known to be acceptable, so the conversion cannot lose
    # information beyond float rounding; the range checks still apply.
    return _convert_checked(np.array(inputs, dtype=object), spec.dtype)


def _convert_checked(array: np.ndarray, dtype: str) -> np.ndarray:
    target = NUMPY_DTYPES[dtype]
    if dtype == "bool":
        return array.astype(np.bool_, copy=False)
    if array.dtype == object:
        # Only reached after the walk: Python ints/floats; float64 holds any of them
        # that passed, integers beyond 2**53 excepted, which int64 handles below.
        if dtype in ("int64", "int32"):
            values = [int(v) for v in array.ravel().tolist()]
            low, high = _INT_BOUNDS[dtype]
            for position, value in enumerate(values):
                if not low <= value <= high:
                    index = tuple(int(i) for i in np.unravel_index(position, array.shape))
                    raise InputError(f"{_path(index)}: {_show(value)} is out of range for {dtype}")
            return np.array(values, dtype=target).reshape(array.shape)
        array = array.astype(np.float64)
    if array.dtype.kind == "f" and dtype in _FLOAT_LIMITS and array.size:
        # The common case in two reductions: min and max are NaN when any element
        # is, infinite when any is, so bounds that hold mean every check below passes.
        bound = _FLOAT_LIMITS[dtype]
        if -bound <= array.min() and array.max() <= bound:
            return array.astype(target, copy=array.dtype != target)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            index = _first(~finite)
            raise InputError(f"{_path(index)}: non-finite number ({array[index]}) is not allowed")
    if dtype in ("float32", "float64"):
        with np.errstate(over="ignore"):
            result = array.astype(target)
        if not np.isfinite(result).all():
            index = _first(~np.isfinite(result))
            raise InputError(f"{_path(index)}: {array[index]} is out of range for {dtype}")
        return result
    # int32 / int64
    if array.dtype.kind == "f":
        fractional = array != np.trunc(array)
        if fractional.any():
            index = _first(fractional)
            raise InputError(f"{_path(index)}: expected an integer, got {array[index]}")
    low, high = _INT_BOUNDS[dtype]
    with np.errstate(invalid="ignore"):
        out_of_range = (array < low) | (array > high)
    if array.dtype.kind == "f":
        # float64 cannot represent int64's max exactly: 2**63 compares equal to it.
        out_of_range |= array >= float(high) + 1
    if out_of_range.any():
        index = _first(out_of_range)
        raise InputError(f"{_path(index)}: {array[index]} is out of range for {dtype}")
    return array.astype(target)


def _walk(inputs: list[Any], spec: InputSpec) -> None:
    shape = spec.shape
    leaf = _LEAF_CHECKS[spec.dtype]
    # An explicit stack instead of recursion keeps the index path cheap to carry
    # and turns it into text only when something is wrong.
    stack: list[tuple[Any, tuple[int, ...]]] = [(item, (i,)) for i, item in enumerate(inputs)]
    stack.reverse()
    while stack:
        value, index = stack.pop()
        depth = len(index) - 1
        if depth < len(shape):
            expected = shape[depth]
            if not isinstance(value, list):
                raise InputError(
                    f"{_path(index)}: expected a list of {expected} items, got {_kind(value)}"
                )
            if len(value) != expected:
                raise InputError(
                    f"{_path(index)}: expected a list of {expected} items, got {len(value)}"
                )
            stack.extend((value[i], (*index, i)) for i in range(expected - 1, -1, -1))
        else:
            problem = leaf(value)
            if problem:
                raise InputError(f"{_path(index)}: {problem}")


def _check_float(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite number ({value}) is not allowed"
    if isinstance(value, int) and abs(value) > _FLOAT64_MAX:
        return f"{_show(value)} is out of range for a float"
    return None


def _check_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected an integer, got {_kind(value)}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"non-finite number ({value}) is not allowed"
        if not value.is_integer():
            return f"expected an integer, got {value}"
    return None


def _check_bool(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"expected true or false, got {_kind(value)}"


_LEAF_CHECKS = {
    "float32": _check_float,
    "float64": _check_float,
    "int64": _check_int,
    "int32": _check_int,
    "bool": _check_bool,
}


def _show(value: object) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...{text[-10:]} ({len(text)} digits)"


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _path(index: tuple[int, ...]) -> str:
    return "inputs" + "".join(f"[{i}]" for i in index)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
