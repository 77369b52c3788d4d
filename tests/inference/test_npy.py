"""The binary request body: one ``.npy`` array, validated like JSON with the same messages."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

NPY = {"Content-Type": "application/x-npy"}


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def post_npy(client, array_or_bytes, headers=NPY):
    body = array_or_bytes if isinstance(array_or_bytes, bytes) else npy(array_or_bytes)
    return client.post("/predict", content=body, headers=headers)


def post_json(client, text: str):
    return client.post("/predict", content=text, headers={"Content-Type": "application/json"})


ROWS = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]


def test_npy_gives_the_same_answer_as_json(serve_cached) -> None:
    with serve_cached() as client:
        by_json = client.post("/predict", json={"inputs": ROWS})
        by_npy = post_npy(client, np.array(ROWS, dtype=np.float32))
        big_endian = post_npy(client, np.array(ROWS, dtype=">f4"))
        fortran = post_npy(client, np.asfortranarray(np.array(ROWS, dtype=np.float32)))
        with_params = post_npy(
            client,
            np.array(ROWS, dtype=np.float32),
            {"Content-Type": "Application/X-NPY; charset=binary"},
        )
    assert by_json.status_code == 200
    for answer in (by_npy, big_endian, fortran, with_params):
        assert answer.status_code == 200
        assert answer.json() == by_json.json()


def test_other_dtypes(serve_cached) -> None:
    with serve_cached("int64") as client:
        ints = post_npy(client, np.array([[1, 2, 3]], dtype=np.int64))
        as_json = client.post("/predict", json={"inputs": [[1, 2, 3]]})
    assert ints.status_code == 200 and ints.json() == as_json.json()
    with serve_cached("bool") as client:
        bools = post_npy(client, np.array([[True, False]]))
        as_json = client.post("/predict", json={"inputs": [[True, False]]})
    assert bools.status_code == 200 and bools.json() == as_json.json()


# The same array sent both ways must be refused with the same message.
SAME_MESSAGE = [
    (np.array([[1, 2, 3]], dtype=np.float32), "[[1, 2, 3]]"),
    (np.array([1, 2, 3, 4], dtype=np.float32), "[1, 2, 3, 4]"),
    (np.ones((1, 4, 1), dtype=np.float32), "[[[1], [1], [1], [1]]]"),
    (np.array([[1, float("nan"), 3, 4]], dtype=np.float32), "[[1, NaN, 3, 4]]"),
    (np.array([[1, 2, float("inf"), 4]], dtype=np.float32), "[[1, 2, Infinity, 4]]"),
    (np.zeros((0, 4), dtype=np.float32), "[]"),
    (np.zeros((6, 4), dtype=np.float32), "[" + ", ".join(["[0, 0, 0, 0]"] * 6) + "]"),
]


@pytest.mark.parametrize(("array", "json_inputs"), SAME_MESSAGE)
def test_refused_like_json(serve_cached, array, json_inputs) -> None:
    with serve_cached(max_batch_size=5) as client:
        by_json = post_json(client, f'{{"inputs": {json_inputs}}}')
        by_npy = post_npy(client, array)
    assert by_json.status_code == by_npy.status_code == 422
    assert by_npy.json() == by_json.json()


def test_int_values_out_of_range_like_json(serve_cached) -> None:
    with serve_cached("int32") as client:
        ok = post_npy(client, np.array([[1, 2, 3]], dtype=np.int32))
        wrong_dtype = post_npy(client, np.array([[1, 2, 3]], dtype=np.int64))
    assert ok.status_code == 200
    assert wrong_dtype.status_code == 422
    assert wrong_dtype.json() == {"detail": "inputs: dtype int64 does not match the model's int32"}


def npy_v1(header: bytes) -> bytes:
    """A version 1.0 .npy body with ``header`` as written, newline-terminated (no data)."""
    header += b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


F32 = npy(np.ones((1, 4), dtype=np.float32))
BAD_BODIES = [
    (b'{"inputs": [[1, 2, 3, 4]]}', "body: not a .npy array (Content-Type application/x-npy)"),
    (
        npy(np.ones((1, 4), dtype=np.float64)),
        "inputs: dtype float64 does not match the model's float32",
    ),
    (F32[:-4], "body: the .npy data is 12 bytes; shape (1, 4) of float32 needs 16"),
    (npy(np.array(3.0, dtype=np.float32)), "inputs: expected a list of examples, got number"),
    (
        npy(np.array([[{"a": 1}] * 4], dtype=object)),
        "body: .npy dtype |O is not a plain number or boolean type",
    ),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n", "body: invalid .npy header"),
    (
        npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 4), }") + bytes(16),
        "body: invalid .npy header: negative dimension in shape (-1, 4)",
    ),
    (
        npy_v1(b"{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1, 4)}"),
        "body: invalid .npy header: the header is not a plain literal dict",
    ),
    (npy_v1(b"[1, 2]"), "body: invalid .npy header: the header is not a plain literal dict"),
    # An unclosed brace: numpy's Python 2 fallback tokenizes it and fails differently.
    (
        npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4),"),
        "body: invalid .npy header: the header is not a plain literal dict",
    ),
    (b"\x93NUMPY", "body: 6 bytes is too short for a .npy header (at least 10)"),
    (
        b"\x93NUMPY\x02\x00\x01\x00\x00",
        "body: 11 bytes is too short for a .npy header (at least 12)",
    ),
    (b"\x93NUMPY\x07\x00\x01\x00\x00", "body: invalid .npy header: format version 7 not supported"),
]


@pytest.mark.parametrize(("body", "detail"), BAD_BODIES)
def test_bad_npy_bodies(serve_cached, body, detail) -> None:
    with serve_cached() as client:
        answer = post_npy(client, body)
        after = client.post("/predict", json={"inputs": ROWS})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(detail)
    assert "<ast." not in answer.json()["detail"]
    assert after.status_code == 200


def test_pickled_objects_are_never_loaded(serve_cached, tmp_path) -> None:
    canary = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (canary.write_text, ("ran",))

    array = np.empty((1, 4), dtype=object)
    array[0, 0] = Payload()
    with serve_cached() as client:
        answer = post_npy(client, npy(array))
    assert answer.status_code == 422
    assert not canary.exists()


def test_size_limit_applies(serve_cached) -> None:
    with serve_cached(max_body_bytes=1024) as client:
        answer = post_npy(client, np.zeros((100, 4), dtype=np.float32))
    assert answer.status_code == 413


def test_openapi_documents_the_binary_body(serve_cached) -> None:
    with serve_cached() as client:
        document = client.get("/openapi.json").json()
    body = document["paths"]["/predict"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "application/x-npy"}
    assert body["content"]["application/x-npy"]["schema"] == {"type": "string", "format": "binary"}
    assert "numpy.save" in body["description"]
    # JSON stays the default: a body without a Content-Type is read as JSON.
    with serve_cached() as client:
        answer = client.post("/predict", content=orjson.dumps({"inputs": ROWS}))
    assert answer.status_code == 200
