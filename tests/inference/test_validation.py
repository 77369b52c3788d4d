"""The /predict body rules of contract section 3, checked on the validator itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.pointer import InputSpec
from inference.validation import InputError, body_may_contain_booleans, parse_json, to_batch

F32 = InputSpec(shape=(4,), dtype="float32")


def check(body: bytes | str, spec: InputSpec = F32, max_examples: int = 1024) -> np.ndarray:
    raw = body.encode() if isinstance(body, str) else body
    return to_batch(
        parse_json(raw),
        spec,
        max_examples=max_examples,
        may_contain_booleans=body_may_contain_booleans(raw),
    )


def refused(body: bytes | str, spec: InputSpec = F32, max_examples: int = 1024) -> str:
    with pytest.raises(InputError) as info:
        check(body, spec, max_examples)
    return str(info.value)


def test_float_dtype_takes_integers_and_floats():
    batch = check('{"inputs": [[1, 2.5, -3, 0], [0.25, 1e3, 7, -0.0]]}')
    assert batch.dtype == np.float32
    assert batch.shape == (2, 4)
    np.testing.assert_array_equal(batch, [[1, 2.5, -3, 0], [0.25, 1000, 7, 0]])


def test_float64_keeps_precision():
    batch = check('{"inputs": [[0.1, 0.2, 0.3, 1e300]]}', InputSpec(shape=(4,), dtype="float64"))
    assert batch.dtype == np.float64
    assert batch[0, 3] == 1e300


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_int_dtypes_take_integral_numbers(dtype):
    batch = check('{"inputs": [[1, -2, 3.0]]}', InputSpec(shape=(3,), dtype=dtype))
    assert batch.dtype == np.dtype(dtype)
    assert batch.tolist() == [[1, -2, 3]]


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_int_dtypes_refuse_fractions(dtype):
    message = refused('{"inputs": [[1, 1.5, 3]]}', InputSpec(shape=(3,), dtype=dtype))
    assert message == "inputs[0][1]: expected an integer, got 1.5"


def test_int32_refuses_out_of_range():
    message = refused('{"inputs": [[1, 2147483648]]}', InputSpec(shape=(2,), dtype="int32"))
    assert message == "inputs[0][1]: 2147483648 is out of range for int32"


@pytest.mark.parametrize(
    "literal", ["9223372036854775808", "1e19", "100000000000000000000000000000"]
)
def test_int64_refuses_out_of_range(literal):
    message = refused(f'{{"inputs": [[1], [{literal}]]}}', InputSpec(shape=(1,), dtype="int64"))
    assert message.startswith("inputs[1][0]: ")
    assert message.endswith("is out of range for int64")


def test_int64_accepts_its_extremes():
    body = '{"inputs": [[-9223372036854775808, 9223372036854775807]]}'
    batch = check(body, InputSpec(shape=(2,), dtype="int64"))
    assert batch.tolist() == [[-(2**63), 2**63 - 1]]


def test_bool_takes_true_and_false_only():
    spec = InputSpec(shape=(2,), dtype="bool")
    assert check('{"inputs": [[true, false]]}', spec).tolist() == [[True, False]]
    assert (
        refused('{"inputs": [[true, 1]]}', spec)
        == "inputs[0][1]: expected true or false, got number"
    )
    assert (
        refused('{"inputs": [[0, 1]]}', spec) == "inputs[0][0]: expected true or false, got number"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (F32, "inputs[1][2]: expected a number, got boolean"),
        (InputSpec(shape=(4,), dtype="int64"), "inputs[1][2]: expected an integer, got boolean"),
    ],
)
def test_booleans_are_not_numbers(spec, expected):
    assert refused('{"inputs": [[1, 2, 3, 4], [1, 2, true, 4]]}', spec) == expected


def test_boolean_token_elsewhere_in_the_body_does_not_matter():
    batch = check('{"inputs": [[1, 2, 3, 4]], "note": "true story", "flag": false}')
    assert batch.tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize(("value", "kind"), [('"a"', "string"), ("null", "null"), ("{}", "object")])
def test_wrong_element_type_is_named_with_its_position(value, kind):
    body = f'{{"inputs": [[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,{value},3,4]]}}'
    assert refused(body) == f"inputs[3][1]: expected a number, got {kind}"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ("[[1, 2, 3, 4], [1, 2, 3]]", "inputs[1]: expected a list of 4 items, got 3"),
        ("[[1, 2, 3, 4, 5]]", "inputs[0]: expected a list of 4 items, got 5"),
        ("[1, 2, 3, 4]", "inputs[0]: expected a list of 4 items, got number"),
        ("[[1, 2, 3, [4]]]", "inputs[0][3]: expected a number, got list"),
        ("[[[1, 2, 3, 4]]]", "inputs[0]: expected a list of 4 items, got 1"),
        ("[[[1], [2], [3], [4]]]", "inputs[0][0]: expected a number, got list"),
    ],
)
def test_wrong_shape_is_named(inputs, expected):
    assert refused(f'{{"inputs": {inputs}}}') == expected


def test_multi_dimensional_examples():
    spec = InputSpec(shape=(2, 3), dtype="float32")
    batch = check('{"inputs": [[[1, 2, 3], [4, 5, 6]], [[0, 0, 0], [1, 1, 1]]]}', spec)
    assert batch.shape == (2, 2, 3)
    assert refused('{"inputs": [[[1, 2, 3], [4, 5]]]}', spec) == (
        "inputs[0][1]: expected a list of 3 items, got 2"
    )


def test_scalar_examples():
    spec = InputSpec(shape=(), dtype="float64")
    assert check('{"inputs": [1, 2.5]}', spec).tolist() == [1.0, 2.5]
    assert refused('{"inputs": [1, [2]]}', spec) == "inputs[1]: expected a number, got list"


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        ("NaN", "nan"),
        ("Infinity", "inf"),
        ("-Infinity", "-inf"),
        ("1e999", "inf"),
        ("-1e999", "-inf"),
    ],
)
def test_non_finite_numbers_are_refused_by_validation_not_parsing(token, shown):
    message = refused(f'{{"inputs": [[1, 2, 3, 4], [1, {token}, 3, 4]]}}')
    assert message == f"inputs[1][1]: non-finite number ({shown}) is not allowed"


def test_python_json_dumps_output_with_nan_is_read():
    body = json.dumps({"inputs": [[1.0, float("nan"), 0.0, 0.0]]})
    assert "NaN" in body
    assert refused(body) == "inputs[0][1]: non-finite number (nan) is not allowed"


def test_non_finite_with_int_dtype():
    spec = InputSpec(shape=(2,), dtype="int64")
    assert (
        refused('{"inputs": [[1, NaN]]}', spec)
        == "inputs[0][1]: non-finite number (nan) is not allowed"
    )


def test_float32_range():
    assert (
        refused('{"inputs": [[1, 2, 3, 1e39]]}')
        == "inputs[0][3]: 1e+39 is out of range for float32"
    )
    huge = "1" + "0" * 400  # an integer literal too large for any float
    message = refused(f'{{"inputs": [[1, 2, 3, {huge}]], "x": NaN}}')
    assert message.startswith("inputs[0][3]: 1000000000...")
    assert message.endswith("is out of range for a float")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"inputs": []}', "inputs: empty batch, send at least one example"),
        ('{"inputs": 5}', "inputs: expected a list of examples, got number"),
        ('{"inputs": {"a": 1}}', "inputs: expected a list of examples, got object"),
        (
            '{"examples": [[1, 2, 3, 4]]}',
            'inputs: field required (body must be {"inputs": [example, ...]})',
        ),
        ("[[1, 2, 3, 4]]", 'body: expected a JSON object with an "inputs" list, got list'),
        ('"hello"', 'body: expected a JSON object with an "inputs" list, got string'),
    ],
)
def test_body_structure(body, expected):
    assert refused(body) == expected


def test_batch_size_limit():
    body = json.dumps({"inputs": [[0, 0, 0, 0]] * 3})
    assert check(body, max_examples=3).shape == (3, 4)
    assert refused(body, max_examples=2) == "inputs: 3 examples exceed the limit of 2 per request"


@pytest.mark.parametrize("body", [b"", b"{", b'{"inputs": [1, 2', b"\xff\xfe", b"{'inputs': []}"])
def test_invalid_json(body):
    assert refused(body).startswith("invalid JSON: ")


def test_deep_nesting_is_a_clean_error():
    body = "[" * 100_000 + "]" * 100_000
    assert refused(body).startswith("invalid JSON: ")


def test_large_batch_converts_exactly():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1024, 4)).tolist()
    batch = check(json.dumps({"inputs": values}))
    np.testing.assert_array_equal(batch, np.array(values, dtype=np.float32))
