"""Encode what a model's forward returned as JSON, split into each request's rows.

A tensor becomes its rows as (nested) lists; a tuple or list of outputs becomes a
JSON list with one entry per output; a dict becomes a JSON object. The JSON is
produced by orjson straight from numpy buffers, without ``tolist()``.
Non-finite floats in outputs are written as ``null`` (JSON has no NaN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import torch

_NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
# Types orjson serialises natively from numpy; anything else floating is widened.
_ORJSON_NUMPY_KINDS = frozenset("biuf")


class NotSplittable(Exception):
    """A batched output cannot be cut into per-request rows (wrong leading dimension)."""


class UnsupportedOutput(TypeError):
    """The model returned something other than tensors, tuples/lists and dicts of them.

    Plain Python numbers and strings are refused too: they have no batch dimension,
    so they cannot be the per-request rows the API promises.
    """


def encode_split(output: Any, bounds: Sequence[tuple[int, int]]) -> list[bytes]:
    """Return one JSON document per ``(start, stop)`` row range of a batched ``output``.

    Every tensor in ``output`` must have the batch as its first dimension
    (``bounds[-1][1]`` rows); otherwise NotSplittable is raised.
    """
    total = bounds[-1][1]
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != total:
            raise NotSplittable(f"output of shape {tuple(output.shape)} for {total} rows")
        array = _to_numpy(output)
        return [orjson.dumps(array[start:stop], option=_NUMPY_OPTION) for start, stop in bounds]
    if isinstance(output, tuple | list):
        columns = [encode_split(item, bounds) for item in output]
        return [
            b"[" + b",".join(column[j] for column in columns) + b"]" for j in range(len(bounds))
        ]
    if isinstance(output, dict):
        keys = [orjson.dumps(str(key)) + b":" for key in output]
        columns = [encode_split(item, bounds) for item in output.values()]
        return [
            b"{" + b",".join(k + column[j] for k, column in zip(keys, columns, strict=True)) + b"}"
            for j in range(len(bounds))
        ]
    raise _unsupported(output)


def encode_whole(output: Any) -> bytes:
    """Return ``output`` (the result for exactly one request) as a JSON document."""
    if isinstance(output, torch.Tensor):
        return orjson.dumps(_to_numpy(output), option=_NUMPY_OPTION)
    if isinstance(output, tuple | list):
        return b"[" + b",".join(encode_whole(item) for item in output) + b"]"
    if isinstance(output, dict):
        return (
            b"{"
            + b",".join(orjson.dumps(str(k)) + b":" + encode_whole(v) for k, v in output.items())
            + b"}"
        )
    raise _unsupported(output)


def _unsupported(output: object) -> UnsupportedOutput:
    return UnsupportedOutput(
        "the model output must be a tensor, or a tuple, list or dict of tensors; "
        f"got {type(output).__name__}"
    )


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.is_complex():
        raise UnsupportedOutput(f"complex output ({tensor.dtype}) has no JSON form")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    array = tensor.cpu().numpy()
    if array.dtype.kind not in _ORJSON_NUMPY_KINDS:
        array = array.astype(np.float64)
    # orjson serialises C-contiguous arrays only; slicing rows keeps that property.
    return np.ascontiguousarray(array)
