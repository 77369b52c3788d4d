import pytest

from dashboard.registry.names import (
    InvalidName,
    validate_environment_name,
    validate_model_name,
    validate_version_name,
    version_prefix,
)


@pytest.mark.parametrize("name", ["iris", "a", "fraud-detector-2", "0abc", "a" * 63])
def test_valid_model_names(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Iris",
        "-iris",
        "iris_",
        "../x",
        "a/b",
        "a b",
        "a" * 64,
        "iris\n",
        "ırıs",
        "iris\u200b",
        "ｉｒｉｓ",
        None,
        5,
    ],
)
def test_invalid_model_names(name: object) -> None:
    with pytest.raises(InvalidName):
        validate_model_name(name)


@pytest.mark.parametrize("name", ["1", "2026-11-24.1", "v1_2.3-rc1", "A" * 64])
def test_valid_version_names(name: str) -> None:
    assert validate_version_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../x", ".hidden", "-x", "x/y", "x y", "A" * 65, "v1\n", "v１", "v1\x00"],
)
def test_invalid_version_names(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_version_name(name)
    assert "version" in str(info.value)


def test_invalid_name_message_is_bounded() -> None:
    with pytest.raises(InvalidName) as info:
        validate_version_name("x" * 500)
    assert len(str(info.value)) < 300


def test_environment_names() -> None:
    assert validate_environment_name("production") == "production"
    with pytest.raises(InvalidName):
        validate_environment_name("Prod")


def test_prefix_never_built_from_bad_name() -> None:
    assert version_prefix("iris", "1.0") == "models/iris/1.0/"
    with pytest.raises(InvalidName):
        version_prefix("iris", "../../etc")
