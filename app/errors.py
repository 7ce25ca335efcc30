"""One exception tree for Sluice; every error carries the field and reason an API returns."""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class ConfigError(SluiceError):
    """A settings value, topic file or schema file is wrong; start-up stops."""

    code = "config"


class SettingsError(ConfigError):
    """A SLUICE_* environment variable has a value that cannot be used."""

    code = "config.settings"


class RequestError(SluiceError):
    """Something a client sent is refused; maps to a 4xx response."""

    status = 400
    code = "bad_request"


class ValidationError(RequestError):
    """A field of the request is missing, of the wrong type or out of range."""

    code = "validation"


class InvalidFields(ValidationError):
    """Several fields of one event are wrong at once; `errors` holds one ValidationError per field."""

    def __init__(self, errors: list[ValidationError]) -> None:
        first = errors[0]
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors), field=first.field, code=first.code)
        self.errors = errors


class MalformedBody(RequestError):
    """The body is not JSON, or not the JSON document the endpoint expects."""

    code = "malformed_body"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(RequestError):
    """The body stopped arriving; the connection is closed after the answer."""

    status = 408
    code = "body_timeout"


class Unauthorized(RequestError):
    status = 401
    code = "unauthorized"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class Conflict(RequestError):
    """The request clashes with what exists: a name already taken, a scheduled event already due."""

    status = 409
    code = "conflict"


class RateLimited(RequestError):
    """A key or tenant sends faster than its limit; retry after `retry_after_s` (429, not dead-lettered)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, field: str, retry_after_s: int) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class Unavailable(SluiceError):
    """Kafka did not acknowledge in time; the client should retry (503)."""

    code = "unavailable"


class SchemaError(SluiceError):
    """A record on a Kafka topic cannot be decoded with any known schema."""

    code = "schema"


class KafkaLocalError(SluiceError):
    """The local Kafka broker cannot be assembled or started."""

    code = "kafka_local"
