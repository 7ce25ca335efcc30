"""A refused input kept whole with why it was refused, for the dead-letter topic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.errors import SluiceError


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    stage: str
    source: str
    code: str
    message: str
    body: bytes
    tenant: str | None = None
    field: str | None = None
    content_type: str | None = None
    topic: str | None = None  # the topic slug the request's path named, if its route names one

    @classmethod
    def of(
        cls,
        error: SluiceError,
        *,
        received_at: datetime,
        stage: str,
        source: str,
        body: bytes,
        tenant: str | None,
        content_type: str | None = None,
        topic: str | None = None,
    ) -> DeadLetter:
        return cls(
            received_at=received_at,
            stage=stage,
            source=source,
            code=error.code,
            message=error.message,
            body=body,
            tenant=tenant,
            field=error.field,
            content_type=content_type,
            topic=topic,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "stage": self.stage,
            "source": self.source,
            "tenant": self.tenant,
            "code": self.code,
            "field": self.field,
            "message": self.message,
            "content_type": self.content_type,
            "body": self.body,
            "topic": self.topic,
        }
