"""Product analytics dialect: POST /ingest (one event) and POST /ingest/batch; every bad field is reported."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, TypeVar

from app.core.envelope import Envelope
from app.core.fields import MAX_ID_LENGTH, batch, identifier, json_type, require_object, text, timestamp
from app.dialects.base import Dialect, Parsed, Request, each, new_envelope
from app.errors import InvalidFields, RequestError, ValidationError

NAME = "analytics"
ERROR = "Invalid event"
MIN_EVENTS = 1
MAX_EVENTS = 1000
MAX_FUTURE = timedelta(hours=24)
BODY_FIELDS = frozenset({"events"})

IDS = ("event_id", "user_id", "session_id")  # checked with fields.identifier
TEXTS = ("event_type", "event_name", "page_name")  # non-empty strings
REQUIRED = ("event_id", "event_type", "event_name", "event_time", "user_id", "session_id", "page_name")
OPTIONAL_STRINGS = ("element_id", "referrer", "app_version")
# The seed writes device_type, platform and network_type without `?` yet groups them under "Optional fields":
# they are optional here, and checked against their values when present.
ENUMS: dict[str, tuple[str, ...]] = {
    "device_type": ("mobile", "desktop", "tablet"),
    "platform": ("ios", "android", "web"),
    "network_type": ("wifi", "cellular", "unknown"),
}
OBJECTS = ("content", "behavior", "performance", "location", "commerce", "interaction", "extras")
LISTS = ("experiments",)
FIELDS = (*REQUIRED, *OPTIONAL_STRINGS, *ENUMS, *OBJECTS, *LISTS)
KNOWN = frozenset(FIELDS)
UNKNOWN_FIELD = f"unknown field; allowed: {', '.join(FIELDS)}"
# Fields the envelope carries itself; every other field goes to data.
ENVELOPE_FIELDS = frozenset({"event_id", "user_id", "event_time", "event_name"})

# The optional fields' JSON types, for `well_formed`.
KINDS: dict[str, type] = {
    **dict.fromkeys(OPTIONAL_STRINGS, str),
    **dict.fromkeys(ENUMS, str),
    **dict.fromkeys(OBJECTS, dict),
    **dict.fromkeys(LISTS, list),
}
OPTIONAL = frozenset(KINDS)

T = TypeVar("T")


def parse_single(body: Any, request: Request) -> Parsed:
    """One event: any bad field refuses the whole request."""
    return Parsed(accepted=[(0, event(body, request, where="body"))])


def parse_batch(body: Any, request: Request) -> Parsed:
    """Refuse a malformed batch as a whole; otherwise accept or reject each event on its own."""
    events = batch(body, "events", MAX_EVENTS, BODY_FIELDS)
    accepted, rejected = each(
        events, lambda index, raw: well_formed(raw, request) or checked(raw, request, where=f"events[{index}]")
    )
    return Parsed(accepted=accepted, rejected=rejected)


def event(raw: Any, request: Request, *, where: str) -> Envelope:
    """Validate one event and map it onto the envelope; raise InvalidFields naming every bad field."""
    envelope = well_formed(raw, request)
    return envelope if envelope is not None else checked(raw, request, where=where)


def well_formed(raw: Any, request: Request) -> Envelope | None:
    """The envelope of an event with nothing wrong, as `checked` maps it; None at the first doubt.

    Nearly every event is well formed: this checks it in a third of the time `checked` takes to
    collect each fault, which then runs only to name them.
    """
    if type(raw) is not dict or not KNOWN.issuperset(raw):
        return None
    get = raw.get
    event_id, user_id, session_id = get("event_id"), get("user_id"), get("session_id")
    name, event_type, page_name = get("event_name"), get("event_type"), get("page_name")
    when = get("event_time")
    # Ids as strings only: `identifier` turns a number into its text, which `checked` does.
    if not (
        type(event_id) is str
        and type(user_id) is str
        and type(session_id) is str
        and len(event_id) <= MAX_ID_LENGTH
        and len(user_id) <= MAX_ID_LENGTH
        and len(session_id) <= MAX_ID_LENGTH
        and event_id.strip()
        and user_id.strip()
        and session_id.strip()
        and type(name) is str
        and type(event_type) is str
        and type(page_name) is str
        and name.strip()
        and event_type.strip()
        and page_name.strip()
        and type(when) is str
    ):
        return None
    for field in OPTIONAL.intersection(raw):  # the optional fields it has, a few of many
        value = raw[field]
        kind = KINDS[field]
        if value is None:
            continue
        if kind is list:
            if type(value) is not list or not all(type(item) is str for item in value):
                return None
        elif type(value) is not kind or (field in ENUMS and value not in ENUMS[field]):
            return None
    try:
        occurred_at = event_time(when, request)
    except ValidationError:
        return None
    # Every field but the envelope's own, in order. session_id is a string: `checked`'s copy of it
    # keeps its place and value.
    data = raw.copy()
    for field in ENVELOPE_FIELDS:
        del data[field]
    return new_envelope(
        event_id,
        request.tenant,
        request.topic,
        name,
        user_id,
        occurred_at,
        request.received_at,
        NAME,
        data,
        {},
    )


def checked(raw: Any, request: Request, *, where: str) -> Envelope:
    """Check every field of one event; raise InvalidFields naming every bad field, else map it."""
    if not isinstance(raw, dict):
        raise InvalidFields(
            [ValidationError(f"must be a JSON object, got {json_type(raw)}", field=where, code="validation.type")]
        )
    errors: list[ValidationError] = []

    def check(check_field: Callable[..., T], *args: Any) -> T | None:
        try:
            return check_field(*args)
        except ValidationError as error:
            errors.append(error)
            return None

    values: dict[str, Any] = {}
    occurred_at: datetime | None = None
    for name in REQUIRED:
        if raw.get(name) is None:
            errors.append(ValidationError("is required", field=name, code="validation.required"))
        elif name == "event_time":
            occurred_at = check(event_time, raw[name], request)
        elif name in IDS:
            values[name] = check(identifier, raw[name], name)
        elif name in TEXTS:
            values[name] = check(text, raw[name], name)

    for name in OPTIONAL_STRINGS:
        if raw.get(name) is not None:
            check(string, raw[name], name)
    for name, allowed in ENUMS.items():
        if raw.get(name) is not None:
            check(choice, raw[name], name, allowed)
    for name in OBJECTS:
        if raw.get(name) is not None:
            check(require_object, raw[name], name)
    if raw.get("experiments") is not None:
        errors.extend(experiments(raw["experiments"]))
    if not KNOWN.issuperset(raw):
        errors.extend(
            ValidationError(UNKNOWN_FIELD, field=name, code="validation.unknown") for name in raw if name not in KNOWN
        )

    if errors:
        raise InvalidFields(errors)
    assert occurred_at is not None  # no errors: every required field was checked and kept
    return Envelope(
        id=values["event_id"],
        tenant=request.tenant,
        topic=request.topic,
        type=values["event_name"],
        user_id=values["user_id"],
        occurred_at=occurred_at,
        received_at=request.received_at,
        dialect=NAME,
        data={
            **{name: value for name, value in raw.items() if name not in ENVELOPE_FIELDS},
            "session_id": values["session_id"],
        },
        metadata={},
    )


def event_time(value: Any, request: Request) -> datetime:
    occurred_at = timestamp(value, "event_time", require_offset=False)
    if occurred_at > request.received_at + MAX_FUTURE:
        raise ValidationError("is more than 24 h in the future", field="event_time", code="validation.future")
    return occurred_at


def string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=field, code="validation.type")
    return value


def choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    result = string(value, field)
    if result not in allowed:
        raise ValidationError(
            f"must be one of {', '.join(allowed)}, got {result!r}", field=field, code="validation.enum"
        )
    return result


def experiments(value: Any) -> list[ValidationError]:
    """Every fault of the experiments array: not an array, or each member that is not a string."""
    if not isinstance(value, list):
        return [
            ValidationError(f"must be an array, got {json_type(value)}", field="experiments", code="validation.type")
        ]
    return [
        ValidationError(f"must be a string, got {json_type(item)}", field=f"experiments[{i}]", code="validation.type")
        for i, item in enumerate(value)
        if not isinstance(item, str)
    ]


def details(error: RequestError) -> list[dict[str, str]]:
    """The error's fields as the seed's error response lists them."""
    errors: list[RequestError] = list(error.errors) if isinstance(error, InvalidFields) else [error]
    return [{"field": e.field or "body", "message": e.message, "code": e.code} for e in errors]


def error_body(error: RequestError) -> Any:
    return {"error": ERROR, "details": details(error)}


def respond_single(parsed: Parsed) -> tuple[int, Any]:
    ((_, envelope),) = parsed.accepted
    return 200, {"status": "success", "eventId": envelope.id}


def respond_batch(parsed: Parsed) -> tuple[int, Any]:
    """Always 200: each event's outcome in batch order, counted."""
    results = [{"index": index, "status": "success", "eventId": envelope.id} for index, envelope in parsed.accepted]
    if parsed.rejected:  # accepted and rejected are each in batch order, and no index is in both
        failed = [
            {"index": rejection.index, "status": "error", "error": ERROR, "details": details(rejection.error)}
            for rejection in parsed.rejected
        ]
        results = sorted(results + failed, key=itemgetter("index"))
    return 200, {
        "status": "partial" if parsed.rejected else "success",
        "accepted": len(parsed.accepted),
        "rejected": len(parsed.rejected),
        "results": results,
    }


SINGLE = Dialect(NAME, parse_single, respond_single, error_body=error_body)
BATCH = Dialect(NAME, parse_batch, respond_batch, error_body=error_body)
