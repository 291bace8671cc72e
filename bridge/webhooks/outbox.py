"""Domain events go to a durable Redis stream (the outbox); webhook delivery drains it.

Writing an event is one XADD, so a verb or an ESL handler never waits on a receiver.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ulid import ULID

from bridge.store import keys
from bridge.store.redis import RedisClient

EVENT_TYPES = (
    "call.started",
    "call.answered",
    "call.ended",
    "call.recording_ready",
    "call.transcript_ready",
    "ai_session.started",
    "ai_session.ended",
    "ai_session.transferred",
    "ai_session.transfer_failed",
    "ai_session.escalated",
    "ai_session.conference_changed",
    "lead.completed",
    "campaign.started",
    "campaign.paused",
    "campaign.resumed",
    "campaign.completed",
    "agent.logged_in",
    "agent.logged_out",
)


@dataclass(frozen=True, slots=True)
class DomainEvent:
    event_id: str
    event_type: str
    tenant_id: str
    timestamp: int
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "tenant_id": self.tenant_id,
            "data": self.data,
        }

    def to_fields(self) -> dict[str, str]:
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "tenant_id": self.tenant_id,
            "timestamp": str(self.timestamp),
            "data": json.dumps(self.data, separators=(",", ":"), default=str),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> DomainEvent:
        return cls(
            event_id=fields["event_id"],
            event_type=fields["event_type"],
            tenant_id=fields["tenant_id"],
            timestamp=int(fields["timestamp"]),
            data=json.loads(fields["data"]),
        )


class Outbox:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    def build(self, event_type: str, tenant_id: str, data: dict[str, Any]) -> DomainEvent:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        return DomainEvent(f"evt_{ULID()}", event_type, tenant_id, int(time.time()), data)

    async def emit(self, event_type: str, tenant_id: str, data: dict[str, Any]) -> DomainEvent:
        event = self.build(event_type, tenant_id, data)
        await self.redis.xadd(keys.outbox(), event.to_fields(), maxlen=keys.OUTBOX_MAXLEN, approximate=True)
        return event

    async def read_all(self, count: int = 1000) -> list[DomainEvent]:
        """Every event still in the stream, oldest first (tests and the admin view use it)."""
        rows = await self.redis.xrange(keys.outbox(), count=count)
        return [DomainEvent.from_fields(fields) for _id, fields in rows]
