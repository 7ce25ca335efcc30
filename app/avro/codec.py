"""Avro binary encoders and decoders compiled to Python source from a schema, for the hot paths."""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Why not fastavro alone: its Cython writer and reader walk the schema's dicts for every value.
# Code written for one schema does the same work straight-line, at a third of the time for an
# effect (about 12 µs against 38). It covers what Sluice's schemas use; any other schema, and
# any record it cannot write or read, is left to fastavro by the caller (app/schemas.py), so
# fastavro's result or error stands wherever this is unsure.

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# The Python type a value of a primitive has, which picks the branch of a ["null", primitive] union.
_BRANCH_CHECK = {
    "boolean": "bool",
    "int": "int",
    "long": "int",
    "float": "(int, float)",
    "double": "(int, float)",
    "bytes": "(bytes, bytearray)",
    "string": "str",
}
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


class Unsupported(Exception):
    """The schema uses what the compiler does not cover; fastavro does the work."""


class Refused(ValueError):
    """This record or these bytes are for fastavro to judge."""


@dataclass(frozen=True, slots=True)
class Codec:
    encode: Callable[[Mapping[str, Any]], bytes]  # the prefix, then the record's Avro binary encoding
    decode: Callable[[bytes, int], dict[str, Any]]  # the record that starts at the offset
    source: str  # the generated Python, for a reader of a traceback


def compile_codec(declared: Any, *, prefix: bytes = b"") -> Codec | None:
    """A codec for a record schema (its JSON form, without logical types), or None if not covered."""
    try:
        if not isinstance(declared, dict) or declared.get("type") != "record":
            raise Unsupported("not a record schema")
        names: dict[str, Any] = {}
        _collect_names(declared, declared.get("namespace"), names, frozenset())
        source = _Writer(names).function(declared) + "\n\n" + _Reader(names).function(declared)
    except Unsupported:
        return None
    space: dict[str, Any] = {
        "PREFIX": prefix,
        "long_bytes": long_bytes,
        "recent_long_bytes": recent_long_bytes,
        "read_long": read_long,
        "Refused": Refused,
        "pack_float": struct.Struct("<f").pack,
        "pack_double": struct.Struct("<d").pack,
        "unpack_float": struct.Struct("<f").unpack_from,
        "unpack_double": struct.Struct("<d").unpack_from,
    }
    exec(compile(source, f"<avro codec {declared.get('name')}>", "exec"), space)
    return Codec(space["encode"], space["decode"], source)


def long_bytes(n: int) -> bytes:
    """A long as Avro writes it: zig-zag, then seven bits a byte, low first."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise Refused("out of the long range")
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Instants are the large longs (six bytes for a time in milliseconds, 1.2 µs to write), and an
# instant recurs: every event of a request was received at the same moment.
recent_long_bytes = functools.lru_cache(maxsize=1024)(long_bytes)


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The long at `pos`, and the offset after it."""
    n = shift = 0
    for _ in range(10):
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            value = (n >> 1) ^ -(n & 1)
            if not _LONG_MIN <= value <= _LONG_MAX:
                raise Refused("out of the long range")
            return value, pos
        shift += 7
    raise Refused("a long of more than ten bytes")


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_names(schema: Any, namespace: str | None, names: dict[str, Any], inside: frozenset[str]) -> None:
    # Named types by full name, so a later reference by name compiles to the same code. A type
    # that refers to itself (a recursive schema) is not covered.
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return
        full = schema if schema in names else _full_name(schema, namespace)
        if full not in names:
            raise Unsupported(f"unknown type {schema}")
        if full in inside:
            raise Unsupported(f"{full} is recursive")
        return
    if isinstance(schema, list):
        for branch in schema:
            _collect_names(branch, namespace, names, inside)
        return
    if not isinstance(schema, dict) or "logicalType" in schema:
        raise Unsupported(f"not covered: {schema!r}")
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed"):
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        names[full] = schema
        space = full.rpartition(".")[0] or None
        if kind != "enum" and kind != "fixed":
            for field in schema["fields"]:
                _collect_names(field["type"], space, names, inside | {full})
    elif kind == "array":
        _collect_names(schema["items"], namespace, names, inside)
    elif kind == "map":
        _collect_names(schema["values"], namespace, names, inside)
    elif kind in PRIMITIVES:
        return
    else:
        raise Unsupported(f"not covered: {schema!r}")


class _Source:
    """Python source, a line at a time, with fresh variable names."""

    def __init__(self, names: dict[str, Any]) -> None:
        self._names = names
        self._counter = itertools.count()
        self.lines: list[str] = []

    def var(self) -> str:
        return f"v{next(self._counter)}"

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def resolve(self, schema: Any, namespace: str | None) -> tuple[Any, str | None]:
        """The definition of a type named by reference, and the namespace inside it."""
        if isinstance(schema, str) and schema not in PRIMITIVES:
            full = schema if schema in self._names else _full_name(schema, namespace)
            schema = self._names[full]
        if isinstance(schema, dict) and schema.get("type") in ("record", "error", "enum", "fixed"):
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            namespace = full.rpartition(".")[0] or None
        elif isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
            schema = schema["type"]
        return schema, namespace

    def union_branch(self, schema: list[Any], namespace: str | None) -> str | None:
        """The primitive X of a ["null", X] or [X, "null"] union; None for the null branch."""
        resolved = [self.resolve(branch, namespace)[0] for branch in schema]
        if len(resolved) == 2 and "null" in resolved:
            other = resolved[1 - resolved.index("null")]
            if isinstance(other, str) and other != "null":
                return other
        raise Unsupported(f"union {schema!r}")


class _Writer(_Source):
    def function(self, schema: dict[str, Any]) -> str:
        self.line(1, "out = bytearray(PREFIX)")
        self.line(1, "append = out.append")
        self.value(schema, "record", 1, None)
        self.line(1, "return bytes(out)")
        return "def encode(record):\n" + "\n".join(self.lines)

    def long(self, expr: str, depth: int, *, count: bool = False) -> None:
        # Most longs in an effect are small counts: one byte, no call. Most lengths of an event's
        # data and metadata (JSON text) take two: 64 to 8191 zig-zags to 128 to 16383.
        self.line(depth, f"if 0 <= {expr} < 64:")
        self.line(depth + 1, f"append({expr} << 1)")
        self.line(depth, f"elif 0 <= {expr} < 8192:")
        self.line(depth + 1, f"append((({expr} << 1) & 0x7F) | 0x80)")
        self.line(depth + 1, f"append({expr} >> 6)")
        self.line(depth, "else:")
        self.line(depth + 1, f"out += {'long_bytes' if count else 'recent_long_bytes'}({expr})")

    def value(self, schema: Any, expr: str, depth: int, namespace: str | None) -> None:
        schema, namespace = self.resolve(schema, namespace)
        if isinstance(schema, list):
            branch = self.union_branch(schema, namespace)
            null_index, other_index = (0, 1) if self.resolve(schema[0], namespace)[0] == "null" else (1, 0)
            held = self.var()
            self.line(depth, f"{held} = {expr}")
            self.line(depth, f"if {held} is None:")
            self.line(depth + 1, f"append({null_index * 2})")
            self.line(depth, f"elif isinstance({held}, {_BRANCH_CHECK[str(branch)]}):")
            self.line(depth + 1, f"append({other_index * 2})")
            self.value(branch, held, depth + 1, namespace)
            self.line(depth, "else:")
            self.line(depth + 1, "raise Refused('no union branch for the value')")
            return
        if isinstance(schema, str):
            self.primitive(schema, expr, depth)
            return
        kind = schema["type"]
        if kind in ("record", "error"):
            held = self.var()
            self.line(depth, f"{held} = {expr}")
            for field in schema["fields"]:
                self.value(field["type"], self.field(held, field, namespace), depth, namespace)
        elif kind == "enum":
            symbols = {symbol: index for index, symbol in enumerate(schema["symbols"])}
            index = self.var()
            self.line(depth, f"{index} = {symbols!r}[{expr}]")
            self.long(index, depth, count=True)
        elif kind == "fixed":
            held = self.var()
            self.line(depth, f"{held} = {expr}")
            self.line(depth, f"if len({held}) != {int(schema['size'])}:")
            self.line(depth + 1, "raise Refused('fixed of the wrong size')")
            self.line(depth, f"out += {held}")
        elif kind in ("array", "map"):
            held, count, item = self.var(), self.var(), self.var()
            self.line(depth, f"{held} = {expr}")
            self.line(depth, f"if {held}:")
            self.line(depth + 1, f"{count} = len({held})")
            self.long(count, depth + 1, count=True)
            if kind == "array":
                self.line(depth + 1, f"for {item} in {held}:")
                self.value(schema["items"], item, depth + 2, namespace)
            else:
                key = self.var()
                self.line(depth + 1, f"for {key}, {item} in {held}.items():")
                self.primitive("string", key, depth + 2)
                self.value(schema["values"], item, depth + 2, namespace)
            self.line(depth, "append(0)")
        else:
            raise Unsupported(f"not covered: {schema!r}")

    def field(self, record: str, field: dict[str, Any], namespace: str | None) -> str:
        # As fastavro: a missing field takes its default, or None if its type admits null.
        name = field["name"]
        if "default" in field:
            return f"{record}.get({name!r}, {field['default']!r})"
        field_type = self.resolve(field["type"], namespace)[0]
        if field_type == "null" or (isinstance(field_type, list) and "null" in field_type):
            return f"{record}.get({name!r})"
        return f"{record}[{name!r}]"

    def primitive(self, schema: str, expr: str, depth: int) -> None:
        if schema == "null":
            self.line(depth, f"if {expr} is not None:")
            self.line(depth + 1, "raise Refused('null expected')")
        elif schema == "boolean":
            self.line(depth, f"append(1 if {expr} else 0)")
        elif schema in ("int", "long"):
            held = self.var()
            self.line(depth, f"{held} = {expr}")
            self.line(depth, f"if type({held}) is not int:")  # fastavro's error, or its way with a bool
            self.line(depth + 1, "raise Refused('not an int')")
            self.long(held, depth)
        elif schema in ("float", "double"):
            self.line(depth, f"out += pack_{schema}(float({expr}))")
        elif schema in ("bytes", "string"):
            held, size = self.var(), self.var()
            encoded = f"{expr}.encode()" if schema == "string" else expr
            self.line(depth, f"{held} = {encoded}")
            if schema == "bytes":
                self.line(depth, f"if not isinstance({held}, (bytes, bytearray)):")
                self.line(depth + 1, "raise Refused('not bytes')")
            self.line(depth, f"{size} = len({held})")
            self.long(size, depth, count=True)
            self.line(depth, f"out += {held}")
        else:
            raise Unsupported(f"type {schema}")


class _Reader(_Source):
    def function(self, schema: dict[str, Any]) -> str:
        result = self.value(schema, 1, None)
        # A length read past the end slices short rather than failing: caught here, once.
        self.line(1, "if pos > len(data):")
        self.line(2, "raise Refused('the record ends early')")
        self.line(1, f"return {result}")
        return "def decode(data, pos):\n" + "\n".join(self.lines)

    def long(self, target: str, depth: int) -> None:
        self.line(depth, "b = data[pos]")
        self.line(depth, "if b < 0x80:")
        self.line(depth + 1, "pos += 1")
        self.line(depth + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        self.line(depth, "else:")
        self.line(depth + 1, f"{target}, pos = read_long(data, pos)")

    def count(self, target: str, depth: int) -> None:
        # A negative count (a block with its size in bytes) is legal Avro that only fastavro reads.
        self.long(target, depth)
        self.line(depth, f"if {target} < 0:")
        self.line(depth + 1, "raise Refused('a negative count')")

    def value(self, schema: Any, depth: int, namespace: str | None) -> str:
        """Lines that read a value; returns the variable that holds it."""
        schema, namespace = self.resolve(schema, namespace)
        target = self.var()
        if isinstance(schema, list):
            branch = self.union_branch(schema, namespace)
            null_index = 0 if self.resolve(schema[0], namespace)[0] == "null" else 1
            index = self.var()
            self.long(index, depth)
            self.line(depth, f"if {index} == {null_index}:")
            self.line(depth + 1, f"{target} = None")
            self.line(depth, f"elif {index} == {1 - null_index}:")
            self.line(depth + 1, f"{target} = {self.value(branch, depth + 1, namespace)}")
            self.line(depth, "else:")
            self.line(depth + 1, "raise Refused('no such union branch')")
            return target
        if isinstance(schema, str):
            self.primitive(schema, target, depth)
            return target
        kind = schema["type"]
        if kind in ("record", "error"):
            fields = [(field["name"], self.value(field["type"], depth, namespace)) for field in schema["fields"]]
            self.line(depth, f"{target} = {{{', '.join(f'{name!r}: {held}' for name, held in fields)}}}")
        elif kind == "enum":
            index = self.var()
            self.count(index, depth)
            self.line(depth, f"{target} = {tuple(schema['symbols'])!r}[{index}]")
        elif kind == "fixed":
            size = int(schema["size"])
            self.line(depth, f"{target} = data[pos:pos + {size}]")
            self.line(depth, f"pos += {size}")
        elif kind in ("array", "map"):
            count = self.var()
            self.line(depth, f"{target} = {'[]' if kind == 'array' else '{}'}")
            self.count(count, depth)
            self.line(depth, f"while {count}:")
            self.line(depth + 1, f"for _ in range({count}):")
            if kind == "array":
                item = self.value(schema["items"], depth + 2, namespace)
                self.line(depth + 2, f"{target}.append({item})")
            else:
                key = self.var()
                self.primitive("string", key, depth + 2)
                item = self.value(schema["values"], depth + 2, namespace)
                self.line(depth + 2, f"{target}[{key}] = {item}")
            self.count(count, depth + 1)
        else:
            raise Unsupported(f"not covered: {schema!r}")
        return target

    def primitive(self, schema: str, target: str, depth: int) -> None:
        if schema == "null":
            self.line(depth, f"{target} = None")
        elif schema == "boolean":
            self.line(depth, "b = data[pos]")
            self.line(depth, "pos += 1")
            self.line(depth, "if b > 1:")  # not 0 or 1: fastavro decides what it means
            self.line(depth + 1, "raise Refused('a boolean byte other than 0 or 1')")
            self.line(depth, f"{target} = b == 1")
        elif schema in ("int", "long"):
            self.long(target, depth)
        elif schema in ("float", "double"):
            self.line(depth, f"{target} = unpack_{schema}(data, pos)[0]")
            self.line(depth, f"pos += {4 if schema == 'float' else 8}")
        elif schema in ("bytes", "string"):
            size = self.var()
            self.count(size, depth)
            read = f"data[pos:pos + {size}]"
            self.line(depth, f"{target} = {read}.decode()" if schema == "string" else f"{target} = bytes({read})")
            self.line(depth, f"pos += {size}")
        else:
            raise Unsupported(f"type {schema}")
