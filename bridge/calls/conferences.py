"""Conferences an AI session started, and their members as FreeSWITCH reports them.

The conference hash (keys.conference) is written once by conference_start; the member hash
(keys.conference_members) follows CUSTOM conference::maintenance events only, so it says who is
really in the room, not who the bridge asked for. Every instance on one Redis sees the same
state, whichever of them handled the events.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from bridge.calls.sessions import iso
from bridge.store import keys

# Channel variables the bridge sets on every leg it originates into a conference; the
# add-member event carries them back (variable_bridge_*), which is how a member gets its type.
VAR_AI_CALL = "bridge_ai_call_id"
VAR_CONFERENCE = "bridge_conference_id"
VAR_MEMBER_TYPE = "bridge_member_type"
VAR_MEMBER_DESTINATION = "bridge_member_destination"

MEMBER_TYPES = ("caller", "ai_agent", "e164", "sip_uri", "agent", "supervisor")
# Members the AI may not kick: the caller (that is `hangup`) and its own leg (`conference_leave`).
UNREMOVABLE_TYPES = ("caller", "ai_agent")

CONFERENCE_TTL_S = keys.SESSION_TTL_S


def member_id_of(freeswitch_member_id: str | int) -> str:
    return f"mem-{freeswitch_member_id}"


def freeswitch_member_id(member_id: str) -> str | None:
    """`mem-12` -> `12`; None for anything that is not one of our member ids."""
    if not member_id.startswith("mem-"):
        return None
    raw = member_id[4:]
    return raw if raw.isdigit() else None


@dataclass(slots=True)
class Participant:
    member_id: str  # "mem-12"
    type: str  # caller | ai_agent | e164 | sip_uri | agent | supervisor
    destination: str | None
    call_id: str  # the member's channel uuid
    joined_at: str  # ISO-8601
    muted: bool

    def public(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "type": self.type,
            "destination": self.destination,
            "call_id": self.call_id,
            "joined_at": self.joined_at,
            "muted": self.muted,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Participant:
        data = json.loads(raw)
        return cls(
            member_id=data["member_id"],
            type=data["type"],
            destination=data.get("destination"),
            call_id=data["call_id"],
            joined_at=data["joined_at"],
            muted=bool(data.get("muted")),
        )


@dataclass(slots=True)
class Conference:
    conference_id: str
    name: str  # the FreeSWITCH conference name (= conference_id)
    profile: str
    call_id: str  # the AI session that started it
    tenant_id: str
    ai_leg_uuid: str | None
    ai_member_id: str | None
    created_at: float = 0.0
    ai_left: bool = False

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Conference:
        return cls(
            conference_id=raw["conference_id"],
            name=raw.get("name") or raw["conference_id"],
            profile=raw.get("profile", ""),
            call_id=raw.get("call_id", ""),
            tenant_id=raw.get("tenant_id", ""),
            ai_leg_uuid=raw.get("ai_leg_uuid") or None,
            ai_member_id=raw.get("ai_member_id") or None,
            created_at=float(raw.get("created_at") or 0.0),
            ai_left=raw.get("ai_left") == "1",
        )


class ConferenceStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    # ------------------------------------------------------------ reads (the interface others use)

    async def get(self, conference_id: str) -> Conference | None:
        raw = await self.redis.hgetall(keys.conference(conference_id))
        if not raw or "conference_id" not in raw:
            return None
        return Conference.from_hash(raw)

    async def participants(self, conference_id: str) -> list[Participant]:
        """Members in the order they joined (ties: FreeSWITCH's member id)."""
        raw = await self.redis.hvals(keys.conference_members(conference_id))
        members = [Participant.from_json(r) for r in raw]
        members.sort(key=lambda p: (p.joined_at, int(freeswitch_member_id(p.member_id) or 0)))
        return members

    async def participant(self, conference_id: str, member_id: str) -> Participant | None:
        raw = await self.redis.hget(keys.conference_members(conference_id), member_id)
        return Participant.from_json(raw) if raw else None

    async def participant_by_call(self, conference_id: str, channel_uuid: str) -> Participant | None:
        for p in await self.participants(conference_id):
            if p.call_id == channel_uuid:
                return p
        return None

    async def conference_of_leg(self, channel_uuid: str) -> str | None:
        """The conference whose AI leg is this channel (its fork events name the leg, not the call)."""
        return await self.redis.get(keys.conference_ai_leg(channel_uuid))

    # ------------------------------------------------------------ writes (conference verbs, manager)

    async def create(self, conf: Conference) -> None:
        mapping = {
            "conference_id": conf.conference_id,
            "name": conf.name,
            "profile": conf.profile,
            "call_id": conf.call_id,
            "tenant_id": conf.tenant_id,
            "ai_leg_uuid": conf.ai_leg_uuid or "",
            "ai_member_id": conf.ai_member_id or "",
            "created_at": repr(conf.created_at or time.time()),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.conference(conf.conference_id), mapping=mapping)
        pipe.expire(keys.conference(conf.conference_id), CONFERENCE_TTL_S)
        if conf.ai_leg_uuid:
            pipe.set(keys.conference_ai_leg(conf.ai_leg_uuid), conf.conference_id, ex=CONFERENCE_TTL_S)
        await pipe.execute()

    async def update(self, conference_id: str, **fields: str) -> None:
        await self.redis.hset(keys.conference(conference_id), mapping=fields)

    async def put_participant(self, conference_id: str, p: Participant) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.conference_members(conference_id), p.member_id, p.to_json())
        pipe.expire(keys.conference_members(conference_id), CONFERENCE_TTL_S)
        await pipe.execute()

    async def remove_participant(self, conference_id: str, member_id: str) -> Participant | None:
        """HDEL the member; returns what was stored, or None when another event already removed it."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(keys.conference_members(conference_id), member_id)
        pipe.hdel(keys.conference_members(conference_id), member_id)
        raw, removed = await pipe.execute()
        if not removed or not raw:
            return None
        return Participant.from_json(raw)

    async def clear(self, conference_id: str) -> None:
        """The room is gone on the switch (conference-destroy): nobody is in it any more."""
        await self.redis.delete(keys.conference_members(conference_id))


def now_iso() -> str:
    return iso(time.time()) or ""
