"""Conferences an AI session started, and their members as FreeSWITCH reports them.

The conference hash (keys.conference) is written once by conference_start; the member hash
(keys.conference_members) follows CUSTOM conference::maintenance events only, so it says who is
really in the room, not who the bridge asked for. Every instance on one Redis sees the same
state, whichever of them handled the events.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog

from bridge.calls.sessions import iso, now_iso
from bridge.store import keys
from bridge.store.reads import point_reads
from bridge.store.redis import RedisClient, multi

if TYPE_CHECKING:
    from bridge.esl.protocol import Event
    from bridge.webhooks.outbox import Outbox

log = structlog.get_logger(__name__)

_MEMBER_POLL_S = 0.1

# Channel variables the bridge sets on every leg it originates into a conference; the
# add-member event carries them back (variable_bridge_*), which is how a member gets its type.
VAR_AI_CALL = "bridge_ai_call_id"
VAR_CONFERENCE = "bridge_conference_id"
VAR_MEMBER_TYPE = "bridge_member_type"
VAR_MEMBER_DESTINATION = "bridge_member_destination"

MEMBER_TYPES = ("caller", "ai_agent", "e164", "sip_uri", "agent", "supervisor", "external")
# Members the AI may not kick: the caller (that is `hangup`) and its own leg (`conference_leave`).
UNREMOVABLE_TYPES = ("caller", "ai_agent")
# The members conference_add dials: the AI brought them in, so the AI hanging up lets them go.
ADDED_TYPES = ("e164", "sip_uri", "agent", "supervisor")

CONFERENCE_TTL_S = keys.SESSION_TTL_S
# Conference names the bridge created (conference_id = name); other rooms on the switch are not ours.
CONFERENCE_PREFIX = "conf_"

# conference::maintenance Action -> the `action` of ai_session.conference_changed.
MEMBER_ACTIONS = {
    "add-member": "member_joined",
    "del-member": "member_left",
    "mute-member": "member_muted",
    "unmute-member": "member_unmuted",
}

# Sets `muted` in a member's JSON only when it changes, so with several instances reading the same
# event exactly one of them reports the change. Returns the new JSON, or false when nothing changed.
_SET_MUTED = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local member = cjson.decode(raw)
local want = ARGV[2] == '1'
if member['muted'] == want then return false end
member['muted'] = want
raw = cjson.encode(member)
redis.call('HSET', KEYS[1], ARGV[1], raw)
return raw
"""


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
    type: str  # caller | ai_agent | e164 | sip_uri | agent | supervisor (| external: not ours)
    destination: str | None
    call_id: str  # the member's channel uuid
    joined_at: str  # ISO-8601
    muted: bool

    def public(self) -> dict[str, Any]:
        return asdict(self)

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
    # loopback-b of the AI leg: audio played to it is what the AI says into the conference.
    ai_speech_uuid: str | None = None

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
            ai_speech_uuid=raw.get("ai_speech_uuid") or None,
        )


class ConferenceStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._set_muted = redis.register_script(_SET_MUTED)
        # channel uuid -> futures waiting for that channel's add-member (conference verbs wait for
        # the member FreeSWITCH reports, not for the command's +OK). In-process: every instance
        # sees every event, so the instance that sent the command resolves its own waiter.
        self._waiters: dict[str, list[asyncio.Future[Participant]]] = {}

    # ------------------------------------------------------------ reads (the interface others use)

    async def get(self, conference_id: str) -> Conference | None:
        raw = await point_reads(self.redis).hgetall(keys.conference(conference_id))
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
        pipe = multi(self.redis)  # the AI leg's pointer is its channel's slot, not the conference's
        pipe.hset(keys.conference(conf.conference_id), mapping=mapping)
        pipe.expire(keys.conference(conf.conference_id), CONFERENCE_TTL_S)
        if conf.ai_leg_uuid:
            pipe.set(keys.conference_ai_leg(conf.ai_leg_uuid), conf.conference_id, ex=CONFERENCE_TTL_S)
        await pipe.execute()

    async def update(self, conference_id: str, **fields: str) -> None:
        await self.redis.hset(keys.conference(conference_id), mapping=fields)

    async def put_participant(self, conference_id: str, p: Participant) -> bool:
        """HSETNX: True for the first writer, so one instance reports the join."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(keys.conference_members(conference_id), p.member_id, p.to_json())
        pipe.expire(keys.conference_members(conference_id), CONFERENCE_TTL_S)
        created, _ = await pipe.execute()
        return bool(created)

    async def set_muted(self, conference_id: str, member_id: str, muted: bool) -> Participant | None:
        raw = await self._set_muted(
            keys=[keys.conference_members(conference_id)], args=[member_id, "1" if muted else "0"]
        )
        return Participant.from_json(raw) if raw else None

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

    # ------------------------------------------------------------ waiting for a member

    def expect_member(self, channel_uuid: str) -> asyncio.Future[Participant]:
        """A future resolved by that channel's add-member. Register it before the command that
        makes the channel join, or the event can come first; drop it with `forget`."""
        fut: asyncio.Future[Participant] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel_uuid, []).append(fut)
        return fut

    def forget(self, channel_uuid: str, fut: asyncio.Future[Participant]) -> None:
        waiters = self._waiters.get(channel_uuid)
        if waiters and fut in waiters:
            waiters.remove(fut)
            if not waiters:
                del self._waiters[channel_uuid]

    async def wait_member(
        self, conference_id: str, channel_uuid: str, fut: asyncio.Future[Participant], timeout: float
    ) -> Participant | None:
        """The member for the channel, once FreeSWITCH reported it; None if it did not in time.

        The future resolves when this bridge handles the add-member event; when another bridge
        handles the conference's box (bridge.calls.ownership), the member shows up in Redis
        instead, so that is looked at too, every _MEMBER_POLL_S."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    async with asyncio.timeout(max(0.0, min(_MEMBER_POLL_S, left))):  # not wait_for (3.11)
                        return await asyncio.shield(fut)
                except TimeoutError:
                    member = await self.participant_by_call(conference_id, channel_uuid)
                    if member is not None or left <= _MEMBER_POLL_S:
                        return member
        finally:
            self.forget(channel_uuid, fut)

    def _resolve(self, channel_uuid: str, p: Participant) -> None:
        for fut in self._waiters.get(channel_uuid, []):
            if not fut.done():
                fut.set_result(p)

    # ------------------------------------------------------------ conference::maintenance

    async def on_event(self, event: Event, outbox: Outbox) -> None:
        """Apply one conference::maintenance event of a conference the bridge started."""
        name = event.get("Conference-Name") or ""
        if not name.startswith(CONFERENCE_PREFIX):
            return
        action = event.get("Action") or ""
        if action not in MEMBER_ACTIONS and action != "conference-destroy":
            return
        conf = await self.get(name)
        if conf is None:
            return
        if action == "conference-destroy":
            await self.clear(conf.conference_id)
            return
        raw_id = event.get("Member-ID") or ""
        if not raw_id.isdigit():
            return
        member_id = member_id_of(raw_id)
        changed: Participant | None = None
        if action == "add-member":
            p = self._participant_from(conf, event, member_id)
            if await self.put_participant(conf.conference_id, p):
                changed = p
                if p.type == "ai_agent" and p.call_id == conf.ai_leg_uuid:
                    await self.update(conf.conference_id, ai_member_id=member_id)
            self._resolve(p.call_id, (await self.participant(conf.conference_id, member_id)) or p)
        elif action == "del-member":
            changed = await self.remove_participant(conf.conference_id, member_id)
        else:
            changed = await self.set_muted(conf.conference_id, member_id, action == "mute-member")
        if changed is None:
            return  # another instance reported it, or nothing changed
        participants = await self.participants(conf.conference_id)
        log.info(
            "conference_changed",
            conference_id=conf.conference_id,
            action=MEMBER_ACTIONS[action],
            member_id=member_id,
            members=len(participants),
        )
        await outbox.emit(
            "ai_session.conference_changed",
            conf.tenant_id,
            {
                "call_id": conf.call_id,
                "conference_id": conf.conference_id,
                "action": MEMBER_ACTIONS[action],
                "member_id": member_id,
                "participants": [x.public() for x in participants],
            },
        )

    @staticmethod
    def _participant_from(conf: Conference, event: Event, member_id: str) -> Participant:
        uuid = event.unique_id
        declared = event.var(VAR_MEMBER_TYPE)
        if uuid == conf.call_id:
            kind, destination = "caller", event.get("Caller-Caller-ID-Number") or None
        elif declared in MEMBER_TYPES and event.var(VAR_CONFERENCE) in ("", conf.conference_id):
            kind, destination = declared, event.var(VAR_MEMBER_DESTINATION) or None
        elif uuid and uuid == conf.ai_leg_uuid:
            # Without verbose-events on the profile the variables are not on the event.
            kind, destination = "ai_agent", None
        else:
            # Someone the bridge neither dialled nor moved in (a softphone dialling conf-<id>).
            kind, destination = "external", event.get("Caller-Caller-ID-Number") or None
        ts = event.get("Event-Date-Timestamp")
        joined = int(ts) / 1_000_000 if ts and ts.isdigit() else time.time()
        return Participant(
            member_id=member_id,
            type=kind,
            destination=destination,
            call_id=uuid,
            joined_at=iso(joined) or now_iso(),
            muted=event.get("Speak") == "false",
        )
