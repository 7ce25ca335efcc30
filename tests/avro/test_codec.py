import io
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.avro.codec import compile_codec
from app.avro.schemas import _LEFT_TO_FASTAVRO as LEFT_TO_FASTAVRO
from app.avro.schemas import HEADER_SIZE, Schema, _without_logical_types
from app.errors import SchemaError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {path.stem: orjson.loads(path.read_bytes()) for path in sorted((REPO / "schemas").glob("*.avsc"))}

# What the shipped schemas leave out: every other type the compiler covers, named types
# referred to by name, and a union with null second.
EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "single", "type": "float"},
        {"name": "double", "type": "double"},
        {"name": "raw", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "again", "type": "Hash"},
        {"name": "colours", "type": {"type": "array", "items": "test.Colour"}},
        {
            "name": "points",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Point",
                    "fields": [{"name": "x", "type": "double"}, {"name": "label", "type": ["string", "null"]}],
                },
            },
        },
        {"name": "origin", "type": "Point"},
        {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "maybe_raw", "type": ["null", "bytes"], "default": None},
        {"name": "maybe_flag", "type": ["boolean", "null"]},
        {"name": "maybe_double", "type": ["null", "double"]},
    ],
}
SCHEMAS = {**{name: _without_logical_types(declared) for name, declared in SHIPPED.items()}, "everything": EVERYTHING}


def values(schema: Any, names: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Any value of `schema` (its JSON form), as a producer could hand one to the writer."""
    if isinstance(schema, list):
        return st.one_of(*(values(branch, names) for branch in schema))
    if isinstance(schema, dict) and schema["type"] in ("record", "enum", "fixed"):
        names[schema["name"]] = names[f"{schema.get('namespace', 'test')}.{schema['name']}"] = schema
    elif isinstance(schema, dict):
        if schema["type"] == "array":
            return st.lists(values(schema["items"], names), max_size=5)
        if schema["type"] == "map":
            return st.dictionaries(st.text(max_size=8), values(schema["values"], names), max_size=5)
        return values(schema["type"], names)
    elif schema in names:
        schema = names[schema]
    if isinstance(schema, dict):
        if schema["type"] == "enum":
            return st.sampled_from(schema["symbols"])
        if schema["type"] == "fixed":
            return st.binary(min_size=schema["size"], max_size=schema["size"])
        return st.fixed_dictionaries({field["name"]: values(field["type"], names) for field in schema["fields"]})
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "bytes": st.binary(max_size=20),
        "string": st.text(max_size=20),
    }[schema]


def fastavro_bytes(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def fastavro_record(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


@st.composite
def schema_and_record(draw: st.DrawFn) -> tuple[str, Any]:
    name = draw(st.sampled_from(sorted(SCHEMAS)))
    return name, draw(values(SCHEMAS[name], {}))


CODECS = {name: compile_codec(schema) for name, schema in SCHEMAS.items()}


def test_every_shipped_schema_compiles() -> None:
    assert all(codec is not None for codec in CODECS.values())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_record())
def test_writes_the_bytes_fastavro_writes_and_reads_them_back_as_fastavro_does(case: tuple[str, Any]) -> None:
    name, record = case
    codec = CODECS[name]
    assert codec is not None
    encoded = codec.encode(record)
    assert encoded == fastavro_bytes(SCHEMAS[name], record)
    assert codec.decode(encoded, 0) == fastavro_record(SCHEMAS[name], encoded)


def test_the_prefix_comes_first() -> None:
    codec = compile_codec(SCHEMAS["subscription"], prefix=b"HEAD")
    assert codec is not None
    record = {"tenant": "t", "name": "n", "stream": "effects"}
    assert codec.encode(record) == b"HEAD" + fastavro_bytes(SCHEMAS["subscription"], record)
    assert codec.decode(codec.encode(record), 4)["tenant"] == "t"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "long"]}]},
        {"type": "record", "name": "R", "fields": [{"name": "next", "type": ["null", "R"]}]},
        {"type": "record", "name": "D", "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}]},
        {"type": "array", "items": "string"},
        {"type": "record", "name": "X", "fields": [{"name": "x", "type": "Nowhere"}]},
    ],
    ids=["union-of-two-values", "recursive", "logical-type", "not-a-record", "unknown-name"],
)
def test_what_is_not_covered_is_left_to_fastavro(schema: Any) -> None:
    assert compile_codec(schema) is None


SCHEMA = Schema.of("everything", EVERYTHING)
RECORD = {
    "flag": True,
    "small": 1,
    "big": -(2**40),
    "single": 0.5,
    "double": 1e300,
    "raw": b"\x00\xff",
    "text": "ünïcode",
    "nothing": None,
    "colour": "GREEN",
    "hash": b"abcd",
    "again": b"efgh",
    "colours": ["RED", "BLUE"],
    "points": [{"x": 1.5, "label": None}, {"x": -2.0, "label": "p"}],
    "origin": {"x": 0.0, "label": "o"},
    "tags": {"a": [1, 2**62], "b": []},
    "maybe_flag": None,
    "maybe_double": 3,
}


@pytest.mark.parametrize(
    "change",
    [
        {"small": True},  # a bool where an int goes: fastavro writes 1
        {"big": 2**63},  # out of range
        {"text": b"bytes"},
        {"colour": "PURPLE"},
        {"hash": b"abc"},
        {"maybe_flag": "yes"},
        {"points": [{"x": "nan", "label": None}]},  # fastavro reads a float from text
        {"origin": None},
        {"tags": {"a": ["1"]}},
    ],
)
def test_a_record_the_codec_refuses_gets_fastavros_answer(change: dict[str, Any]) -> None:
    record = {**RECORD, **change}
    try:
        expected: bytes | type[Exception] = fastavro_bytes(EVERYTHING, record)[:]
    except Exception as exc:  # whatever fastavro raises, Schema.encode raises too
        expected = type(exc)
    if isinstance(expected, bytes):
        assert SCHEMA.encode(record)[HEADER_SIZE:] == expected
    else:
        with pytest.raises(expected):
            SCHEMA.encode(record)


def test_a_missing_field_takes_its_default_or_fails_as_in_fastavro() -> None:
    record = {key: value for key, value in RECORD.items() if key != "maybe_raw"}
    assert SCHEMA.encode(record)[HEADER_SIZE:] == fastavro_bytes(EVERYTHING, record)
    with pytest.raises(ValueError, match="text"):
        SCHEMA.encode({key: value for key, value in RECORD.items() if key != "text"})


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A record's bytes cut short, with a byte changed, or both: fastavro's reader meets them too."""
    name, record = draw(schema_and_record())
    data = bytearray(fastavro_bytes(SCHEMAS[name], record))
    if data and draw(st.booleans()):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return name, bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(damaged())
def test_damaged_bytes_read_as_fastavro_reads_them_or_are_left_to_it(case: tuple[str, bytes]) -> None:
    name, data = case
    codec = CODECS[name]
    assert codec is not None
    try:
        expected = fastavro_record(SCHEMAS[name], data)
    except Exception as exc:
        expected = exc
    try:
        got = codec.decode(data, 0)
    except LEFT_TO_FASTAVRO:
        return  # Schema.decode asks fastavro
    assert not isinstance(expected, Exception), f"fastavro refused what the codec read: {expected!r}"
    assert got == expected


def test_bytes_fastavro_refuses_are_a_schema_error() -> None:
    data = SCHEMA.encode(RECORD)
    with pytest.raises(SchemaError):
        SCHEMA.decode(data[:-3])


# The edges of the writer's inline branches (one byte, two bytes, a call) and of the long range.
EDGES = [0, 1, 63, 64, 65, 127, 128, 8191, 8192, 8193, 16383, 16384, 1_764_912_345_678, 2**63 - 1]


@pytest.mark.parametrize("n", [*EDGES, *(-n for n in EDGES), -(2**63)])
def test_longs_and_lengths_at_the_edges_are_written_as_fastavro_writes_them(n: int) -> None:
    schema = {
        "type": "record",
        "name": "Edges",
        "fields": [
            {"name": "n", "type": "long"},
            {"name": "text", "type": "string"},
            {"name": "items", "type": {"type": "array", "items": "null"}},
        ],
    }
    codec = compile_codec(schema)
    assert codec is not None
    size = min(abs(n), 20_000)
    record = {"n": n, "text": "é" * (size // 2) + "x" * (size % 2), "items": [None] * size}
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, fastavro.parse_schema(schema), record)
    assert codec.encode(record) == expected.getvalue()
    assert codec.encode(record) == expected.getvalue()  # again: the recent longs' cache answers the same
