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
from bridge.store.batch import Batcher
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


# KEYS[1] the fact's once key, KEYS[2] the outbox (one slot: {webhooks}); ARGV ttl, maxlen, then
# the event's field/value pairs. 1 = emitted now, 0 = emitted before.
_EMIT_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


class Outbox:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._emit_once = redis.register_script(_EMIT_ONCE)
        # Events emitted at the same moment (a burst of ESL events, many verbs) share one XADD
        # pipeline (bridge.store.batch): an emit still returns only once its entry is in Redis.
        self._xadds: Batcher[dict[str, str], str] = Batcher(self._xadd_many)

    async def _xadd_many(self, entries: list[dict[str, str]]) -> list[str | BaseException]:
        pipe = self.redis.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(keys.outbox(), fields, maxlen=keys.OUTBOX_MAXLEN, approximate=True)  # type: ignore[arg-type]
        return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        await self._xadds.aclose()

    def build(self, event_type: str, tenant_id: str, data: dict[str, Any]) -> DomainEvent:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        return DomainEvent(f"evt_{ULID()}", event_type, tenant_id, int(time.time()), data)

    async def emit(
        self, event_type: str, tenant_id: str, data: dict[str, Any], *, once: str | None = None
    ) -> DomainEvent | None:
        """Append an event. With `once` (a fact such as the call id of a call.ended), only the
        first emit of `event_type` for it goes out, whichever bridge makes it, so a step that is
        repeated after a crash (bridge.calls.ownership) cannot emit it twice or lose it; None
        when it was out already."""
        event = self.build(event_type, tenant_id, data)
        if once is None:
            await self._xadds.submit(event.to_fields())
            return event
        pairs = [x for item in event.to_fields().items() for x in item]
        fact = keys.emitted_once(f"{event_type}:{once}")
        sent = await self._emit_once(
            keys=[fact, keys.outbox()], args=[keys.EMITTED_ONCE_TTL_S, keys.OUTBOX_MAXLEN, *pairs]
        )
        return event if int(sent) == 1 else None

    async def read_all(self, count: int = 1000) -> list[DomainEvent]:
        """Every event still in the stream, oldest first (tests and the admin view use it)."""
        rows = await self.redis.xrange(keys.outbox(), count=count)
        return [DomainEvent.from_fields(fields) for _id, fields in rows]
