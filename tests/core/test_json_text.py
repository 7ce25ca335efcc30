"""JSON bodies: refused past the depth limit and for integers orjson would turn into floats, naming the field."""

import pytest

from app.core import json_text
from app.core.json_text import MAX_DEPTH
from app.errors import MalformedBody, ValidationError


def nested(depth: int) -> bytes:
    """An object `depth` levels deep: {"a": {"a": ... 1}}."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_up_to_the_limit_is_read_as_it_is() -> None:
    value = json_text.loads(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        value = value["a"]
    assert value == 1


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 254, 300, 1023])
def test_past_the_limit_is_refused_naming_the_deepest_field_and_the_limit(depth: int) -> None:
    with pytest.raises(ValidationError) as caught:
        json_text.loads(nested(depth))
    assert caught.value.code == "validation.too_deep"
    assert caught.value.field == ".".join(["a"] * MAX_DEPTH)
    assert str(MAX_DEPTH) in caught.value.message


def test_arrays_count_as_levels_too() -> None:
    with pytest.raises(ValidationError) as caught:
        json_text.loads(b'{"data": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    assert caught.value.field == "data" + "[0]" * (MAX_DEPTH - 1)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"data": {"n": 123456789012345678901234567890}}', "data.n"),
        (b'{"data": {"n": -9223372036854775809}}', "data.n"),
        (b'{"events": [{"v": 1}, {"v": 18446744073709551616}]}', "events[1].v"),
        (b"123456789012345678901234567890", "body"),
    ],
)
def test_integers_that_would_change_are_refused_naming_them(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        json_text.loads(raw)
    assert (caught.value.field, caught.value.code) == (field, "validation.integer_range")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"n": -9223372036854775808}', {"n": -9223372036854775808}),
        (b'{"n": 18446744073709551615}', {"n": 18446744073709551615}),
        (b'{"n": 1e30, "m": 1.5e300}', {"n": 1e30, "m": 1.5e300}),
        (b'{"n": -9223372036854775808.0}', {"n": -(2.0**63)}),
    ],
)
def test_numbers_orjson_keeps_exactly_pass_unchanged(raw: bytes, expected: object) -> None:
    assert json_text.loads(raw) == expected


def test_not_json_is_a_malformed_body() -> None:
    with pytest.raises(MalformedBody) as caught:
        json_text.loads(b"{nope")
    assert caught.value.field == "body"
