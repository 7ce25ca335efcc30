import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import fastavro
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.avro.schemas import MARKER, SchemaSet, fingerprint_of
from app.core.envelope import Envelope
from app.core.instants import EPOCH
from app.core.subscription import Subscription
from app.errors import ConfigError, SchemaError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = SchemaSet.load(REPO / "schemas")
AT = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)


def event() -> Envelope:
    return Envelope(
        id="e1",
        tenant="dev",
        topic="orders",
        type="orders",
        user_id="u1",
        occurred_at=AT,
        received_at=AT,
        dialect="pubsub",
        data={"amount": 3, "nested": {"a": [1, 2]}},
        metadata={"k": "v"},
        send_at=AT,
    )


def test_envelope_round_trips_through_single_object_encoding() -> None:
    encoded = event().encode(SCHEMAS["event"])
    assert encoded[:2] == MARKER
    assert encoded[2:10] == SCHEMAS["event"].fingerprint
    assert Envelope.decode(SCHEMAS["event"], encoded) == event()


def test_any_record_decodes_by_its_fingerprint() -> None:
    name, record = SCHEMAS.decode(event().encode(SCHEMAS["event"]))
    assert name == "event"
    assert record["user_id"] == "u1"


def test_fingerprint_is_crc64_avro_little_endian() -> None:
    # Avro's share/test/data/schema-tests.txt: CRC-64-AVRO of "int" is 8247732601305521295
    # (0x7275d51a3f395c8f); single-object encoding writes it little-endian.
    assert fingerprint_of("int") == (8247732601305521295).to_bytes(8, "little")
    assert SCHEMAS["event"].encode(event().to_record())[2:10] == fingerprint_of(SCHEMAS["event"].parsed)


@pytest.mark.parametrize("data", [b"", b"{}", b"\xc3\x01" + b"\x00" * 8 + b"x"])
def test_foreign_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(SchemaError):
        SCHEMAS.decode(data)


def test_a_truncated_record_is_refused() -> None:
    encoded = event().encode(SCHEMAS["event"])
    with pytest.raises(SchemaError):
        SCHEMAS["event"].decode(encoded[:20])


def test_bad_schema_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "x.avsc").write_text('{"type": "record"}')
    with pytest.raises(ConfigError, match=r"x\.avsc"):
        SchemaSet.load(tmp_path)


def test_every_effect_the_engine_makes_encodes_with_the_effect_schema() -> None:
    from app import ledger
    from app.rules import Fact, UserState, apply, parse_rules

    rules = parse_rules(
        [
            {
                "id": "all",
                "then": [
                    {"add_coins": 3},
                    {"add_points": {"currency": "xp", "amount": 9}},
                    {"increment": "n"},
                    {"award_badge": "b"},
                    {"badge_ready": "r"},
                    {"grant_tokens": "t"},
                    {"update_streak": {"milestones": [1]}},
                    {"evolution_ready": {"currency": "xp", "levels": [5]}},
                    {"emit": {"name": "confetti", "payload": {"k": [1, 2]}}},
                ],
            }
        ],
        source="t.yaml",
    )
    _, effect = apply(UserState(), Fact("x", AT, {}), rules)
    record = ledger.effect_record(event(), effect, "v1")
    name, decoded = SCHEMAS.decode(SCHEMAS["effect"].encode(record))
    assert name == "effect"
    assert decoded["changes"]["badges_awarded"] == ["b"]
    assert decoded["changes"]["streak_milestones"] == [{"streak": "daily", "days": 1}]
    assert decoded["changes"]["custom"] == [{"name": "confetti", "payload": '{"k":[1,2]}'}]
    assert decoded["totals"]["streaks"] == {"daily": {"current": 1, "longest": 1}}
    assert decoded["changes"]["evolution_ready"] is True


MILLIS = st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999)  # years 1..9999


@given(millis=MILLIS, maybe=st.one_of(st.none(), MILLIS))
def test_timestamps_convert_as_fastavro_converts_them(millis: int, maybe: int | None) -> None:
    # Schema converts the top-level timestamp-millis fields itself (fastavro's conversions were
    # the larger half of a decode); bytes and values must be what fastavro's logical types give.
    schema = SCHEMAS["event"]
    at = EPOCH + timedelta(milliseconds=millis)
    record = {**event().to_record(), "occurred_at": at, "received_at": millis, "send_at": maybe}
    mine = schema.encode(record)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.parsed, record)
    assert mine[10:] == out.getvalue()
    theirs = fastavro.schemaless_reader(io.BytesIO(mine[10:]), schema.parsed, None)
    assert schema.decode(mine) == theirs


def test_a_naive_datetime_counts_as_utc() -> None:
    schema = SCHEMAS["event"]
    record = {**event().to_record(), "occurred_at": datetime(1970, 1, 1, 0, 0, 1, 999999)}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.parsed, record)
    assert schema.encode(record)[10:] == out.getvalue()
    assert schema.decode(schema.encode(record))["occurred_at"] == EPOCH + timedelta(milliseconds=1999)


def test_other_logical_types_are_left_to_fastavro(tmp_path: Path) -> None:
    (tmp_path / "day.avsc").write_text(
        '{"type": "record", "name": "Day", "fields": ['
        '{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},'
        '{"name": "on", "type": {"type": "int", "logicalType": "date"}}]}'
    )
    schema = SchemaSet.load(tmp_path)["day"]
    assert schema.timestamps == () and schema.plain is schema.parsed
    record = schema.decode(schema.encode({"at": AT, "on": date(2026, 11, 23)}))
    assert record == {"at": AT, "on": date(2026, 11, 23)}


def test_a_record_written_before_trailing_fields_with_defaults_were_appended_still_decodes() -> None:
    """Subscription records of the schema without the rotation fields: those fields take their defaults."""
    declared = orjson.loads((REPO / "schemas" / "subscription.avsc").read_bytes())
    names = [spec["name"] for spec in declared["fields"]]
    shorter = fastavro.parse_schema({**declared, "fields": declared["fields"][: names.index("secret") + 1]})
    record = {
        "tenant": "acme",
        "name": "hook",
        "stream": "events",
        "topic": "orders",
        "event_types": [],
        "users": ["u1"],
        "effect_kinds": [],
        "url": "https://example.com/hook",
        "secret": "whsec_c2VjcmV0",
    }
    out = io.BytesIO()
    out.write(MARKER + fingerprint_of(shorter))
    fastavro.schemaless_writer(out, shorter, record)
    decoded = SCHEMAS["subscription"].decode(out.getvalue())
    appended = declared["fields"][names.index("secret") + 1 :]
    assert decoded == {**record, **{spec["name"]: spec["default"] for spec in appended}}
    assert SCHEMAS.decode(out.getvalue()) == ("subscription", decoded)
    sub = Subscription.from_record(decoded)
    assert (sub.secret, sub.previous_secret, sub.created_ms) == ("whsec_c2VjcmV0", None, 0)
