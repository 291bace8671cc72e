"""Supervisors, their duty, escalations, and the push of escalations to every on-duty console.

- `SupervisorStore` (`svc.supervisors`): a supervisor's profile and whether it is on duty. A
  supervisor is on duty while at least one of its WebSocket connections, on any bridge instance,
  is on duty. Connections hold leases in Redis that their instance renews; a crashed instance's
  connections lapse after `keys.SUPERVISOR_LEASE_S`.
- `EscalationStore`: escalations (`esc_<ULID>`), created by `request_supervisor`, claimed once.
- `SupervisionHub` (`svc.supervision`): the sockets connected to this instance, and the Redis
  pub/sub channel that carries every escalation change to every instance, so each one pushes to
  its own sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from ulid import ULID

from bridge.calls.sessions import Session, iso, now_iso
from bridge.store import keys
from bridge.store.redis import RedisClient

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)

HEARTBEAT_S = 15.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def _lease_expiry(now_ms: int | None = None) -> int:
    """When a connection's lease lapses unless its instance renews it."""
    return (now_ms if now_ms is not None else _now_ms()) + keys.SUPERVISOR_LEASE_S * 1000


# ---------------------------------------------------------------- supervisors and duty


@dataclass
class Supervisor:
    supervisor_id: str
    tenant_id: str
    name: str
    contact: str | None
    on_duty: bool
    connected: bool = False
    last_seen: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "supervisor_id": self.supervisor_id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "contact": self.contact,
            "on_duty": self.on_duty,
            "connected": self.connected,
            "last_seen": self.last_seen,
        }


class SupervisorStore:
    """Profiles (they outlive the socket) and per-connection duty leases."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def get(self, tenant_id: str, supervisor_id: str) -> Supervisor | None:
        now = _now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.supervisor(tenant_id, supervisor_id))
            pipe.zcount(keys.supervisor_duty(tenant_id, supervisor_id), now, "+inf")
            pipe.zcount(keys.supervisor_conns(tenant_id, supervisor_id), now, "+inf")
            raw, on_duty, connected = await pipe.execute()
        if not raw or raw.get("tenant_id") != tenant_id:
            return None
        return Supervisor(
            supervisor_id=supervisor_id,
            tenant_id=tenant_id,
            name=raw.get("name") or supervisor_id,
            contact=raw.get("contact") or None,
            on_duty=int(on_duty) > 0,
            connected=int(connected) > 0,
            last_seen=iso(float(raw["last_seen"])) if raw.get("last_seen") else None,
        )

    async def list(self, tenant_id: str) -> list[Supervisor]:
        ids = sorted(await self.redis.smembers(keys.tenant_supervisors(tenant_id)))
        found = [await self.get(tenant_id, sid) for sid in ids]
        return [s for s in found if s is not None]

    async def connect(
        self, tenant_id: str, supervisor_id: str, conn_id: str, *, name: str | None, contact: str | None
    ) -> None:
        """A socket authenticated: the profile is written, the connection is on duty."""
        profile = keys.supervisor(tenant_id, supervisor_id)
        now = time.time()
        expiry = _lease_expiry()
        fields: dict[str, str] = {
            "supervisor_id": supervisor_id,
            "tenant_id": tenant_id,
            "last_seen": str(now),
        }
        if name:
            fields["name"] = name
        if contact:
            fields["contact"] = contact
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(profile, mapping=fields)
            pipe.hsetnx(profile, "first_seen", str(now))
            pipe.sadd(keys.tenant_supervisors(tenant_id), supervisor_id)
            pipe.zadd(keys.supervisor_conns(tenant_id, supervisor_id), {conn_id: expiry})
            pipe.zadd(keys.supervisor_duty(tenant_id, supervisor_id), {conn_id: expiry})
            await pipe.execute()

    async def set_duty(self, tenant_id: str, supervisor_id: str, conn_id: str, on_duty: bool) -> None:
        duty = keys.supervisor_duty(tenant_id, supervisor_id)
        if on_duty:
            await self.redis.zadd(duty, {conn_id: _lease_expiry()})
        else:
            await self.redis.zrem(duty, conn_id)

    async def disconnect(self, tenant_id: str, supervisor_id: str, conn_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.supervisor_conns(tenant_id, supervisor_id), conn_id)
            pipe.zrem(keys.supervisor_duty(tenant_id, supervisor_id), conn_id)
            pipe.hset(keys.supervisor(tenant_id, supervisor_id), "last_seen", str(time.time()))
            await pipe.execute()

    async def renew(self, conns: list[SupervisorConn]) -> None:
        """Extend the leases of this instance's sockets (and drop lapsed entries)."""
        if not conns:
            return
        now = _now_ms()
        expiry = _lease_expiry(now)
        async with self.redis.pipeline(transaction=False) as pipe:
            for conn in conns:
                conns_key = keys.supervisor_conns(conn.tenant_id, conn.supervisor_id)
                duty_key = keys.supervisor_duty(conn.tenant_id, conn.supervisor_id)
                pipe.zadd(conns_key, {conn.conn_id: expiry})
                pipe.zremrangebyscore(conns_key, "-inf", now)
                if conn.on_duty:
                    pipe.zadd(duty_key, {conn.conn_id: expiry})
                pipe.zremrangebyscore(duty_key, "-inf", now)
            await pipe.execute()


# ---------------------------------------------------------------- escalations

# An escalation's hash is its own slot ({escalation:<id>}); the call's pointer hash is the call's
# ({call:<id>}) and the tenant's index the tenant's. So each script below touches one of them, and
# EscalationStore runs them in an order where a stop halfway leaves nothing a reader trusts.

# KEYS[1] the call's escalation hash, KEYS[2] the session hash. ARGV[1] id, ARGV[2] ttl (s).
# {1, id} the call's pending escalation is now this one; {0, pending id} one is pending;
# {-2} session ended.
_CREATE = """
if redis.call('HGET', KEYS[2], 'outcome') then return {-2, ''} end
local pending = redis.call('HGET', KEYS[1], 'pending')
if pending then return {0, pending} end
redis.call('HSET', KEYS[1], 'pending', ARGV[1], ARGV[1], '1')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1, ARGV[1]}
"""

# KEYS[1] escalation hash. ARGV[1] tenant, ARGV[2] supervisor, ARGV[3] claimed_at (ISO).
# {1} claimed; {0, supervisor} already claimed; {-1} no such escalation here; {-2, status} closed.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'tenant_id') ~= ARGV[1] then return {-1, ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'claimed' then return {0, redis.call('HGET', KEYS[1], 'supervisor_id') or ''} end
if status ~= 'pending' then return {-2, status or ''} end
redis.call('HSET', KEYS[1], 'status', 'claimed', 'supervisor_id', ARGV[2], 'claimed_at', ARGV[3])
return {1, ''}
"""

# KEYS[1] escalation hash. ARGV[1] closed_at, ARGV[2] reason.
# {1, previous status} closed now; {0, status} it was not open.
_CLOSE = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'claimed' then return {0, status or ''} end
redis.call('HSET', KEYS[1], 'status', 'closed', 'closed_at', ARGV[1], 'closed_reason', ARGV[2])
return {1, status}
"""

# KEYS[1] the call's escalation hash. ARGV[1] the escalation id, ARGV[2] '1' to forget it too
# (closed), '' to only stop it being the pending one (claimed).
_UNPEND = """
if redis.call('HGET', KEYS[1], 'pending') == ARGV[1] then redis.call('HDEL', KEYS[1], 'pending') end
if ARGV[2] == '1' then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

OPEN_STATUSES = ("pending", "claimed")


@dataclass
class Escalation:
    escalation_id: str
    call_id: str
    tenant_id: str
    reason: str
    urgency: str
    status: str  # pending -> claimed -> closed (the AI session ended); pending -> closed
    created_at: str
    supervisor_id: str | None = None
    claimed_at: str | None = None
    closed_at: str | None = None
    closed_reason: str | None = None
    caller: dict[str, Any] = field(default_factory=dict)
    voice_agent_id: str | None = None

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Escalation:
        return cls(
            escalation_id=raw["escalation_id"],
            call_id=raw["call_id"],
            tenant_id=raw["tenant_id"],
            reason=raw.get("reason", ""),
            urgency=raw.get("urgency", "low"),
            status=raw.get("status", "pending"),
            created_at=raw.get("created_at", ""),
            supervisor_id=raw.get("supervisor_id") or None,
            claimed_at=raw.get("claimed_at") or None,
            closed_at=raw.get("closed_at") or None,
            closed_reason=raw.get("closed_reason") or None,
            caller=json.loads(raw.get("caller") or "{}"),
            voice_agent_id=raw.get("voice_agent_id") or None,
        )

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def webhook(self) -> dict[str, Any]:
        """The `ai_session.escalated` payload (docs/webhooks.md)."""
        return {
            "call_id": self.call_id,
            "escalation_id": self.escalation_id,
            "reason": self.reason,
            "urgency": self.urgency,
            "supervisor_id": self.supervisor_id,
            "claimed_at": self.claimed_at,
        }


@dataclass(frozen=True, slots=True)
class CreateResult:
    created: bool
    escalation_id: str  # the new one, or the one already pending
    ended: bool = False


@dataclass(frozen=True, slots=True)
class ClaimResult:
    code: int  # 1 claimed, 0 already claimed, -1 not found, -2 closed
    detail: str = ""


class EscalationStore:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._close = redis.register_script(_CLOSE)
        self._unpend = redis.register_script(_UNPEND)

    async def create(self, session: Session, reason: str, urgency: str) -> CreateResult:
        esc_id = f"esc_{ULID()}"
        now = time.time()
        fields = {
            "escalation_id": esc_id,
            "call_id": session.call_id,
            "tenant_id": session.tenant_id,
            "reason": reason,
            "urgency": urgency,
            "status": "pending",
            "created_at": iso(now) or "",
            "caller": json.dumps({"from": session.from_, "to": session.to, "direction": session.direction}),
            "voice_agent_id": session.voice_agent_id or "",
        }
        # 1. The escalation, which nobody can reach yet (its id is nowhere), with the call's TTL.
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.escalation(esc_id), mapping=fields)
        pipe.expire(keys.escalation(esc_id), keys.SESSION_TTL_S)
        await pipe.execute()
        # 2. The call takes it as its pending escalation (one at a time), unless ended or taken.
        reply = await self._create(
            keys=[keys.call_escalation(session.call_id), keys.session(session.call_id)],
            args=[esc_id, keys.SESSION_TTL_S],
        )
        code = int(reply[0])
        if code != 1:
            await self.redis.delete(keys.escalation(esc_id))
            return CreateResult(False, str(reply[1]), ended=code == -2)
        # 3. The tenant's index (a reader skips an id whose hash is gone).
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(keys.tenant_escalations(session.tenant_id), {esc_id: int(now * 1000)})
        pipe.zremrangebyrank(keys.tenant_escalations(session.tenant_id), 0, -(keys.ESCALATIONS_KEPT + 1))
        await pipe.execute()
        return CreateResult(True, esc_id)

    async def get(self, esc_id: str, tenant_id: str | None = None) -> Escalation | None:
        raw = await self.redis.hgetall(keys.escalation(esc_id))
        if not raw or "call_id" not in raw:
            return None
        esc = Escalation.from_hash(raw)
        if tenant_id is not None and esc.tenant_id != tenant_id:
            return None
        return esc

    async def list(self, tenant_id: str, statuses: tuple[str, ...] | None = None) -> list[Escalation]:
        """The tenant's escalations, oldest first (expired ids are skipped)."""
        ids = await self.redis.zrange(keys.tenant_escalations(tenant_id), 0, -1)
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for esc_id in ids:
                pipe.hgetall(keys.escalation(esc_id))
            rows = await pipe.execute()
        found = [Escalation.from_hash(raw) for raw in rows if raw and "call_id" in raw]
        return [e for e in found if statuses is None or e.status in statuses]

    async def claim(self, esc: Escalation, supervisor_id: str) -> tuple[ClaimResult, str]:
        claimed_at = now_iso()
        reply = await self._claim(
            keys=[keys.escalation(esc.escalation_id)], args=[esc.tenant_id, supervisor_id, claimed_at]
        )
        if int(reply[0]) == 1:  # the call may escalate again
            await self._unpend(keys=[keys.call_escalation(esc.call_id)], args=[esc.escalation_id, ""])
        return ClaimResult(int(reply[0]), str(reply[1])), claimed_at

    async def close_for_call(self, call_id: str, reason: str) -> list[Escalation]:
        """Close the call's open escalations; returns those this call closed (once, any instance)."""
        held = await self.redis.hkeys(keys.call_escalation(call_id))
        closed: list[Escalation] = []
        for esc_id in held:
            if not esc_id.startswith("esc_"):
                continue
            reply = await self._close(keys=[keys.escalation(esc_id)], args=[now_iso(), reason])
            # Whatever the answer: a close that stopped before this is finished by the next one.
            await self._unpend(keys=[keys.call_escalation(call_id)], args=[esc_id, "1"])
            if int(reply[0]) == 1:
                esc = await self.get(esc_id)
                if esc is not None:
                    closed.append(esc)
        return closed


# ---------------------------------------------------------------- the sockets and the push


@dataclass(eq=False)
class SupervisorConn:
    conn_id: str
    tenant_id: str
    supervisor_id: str
    ws: web.WebSocketResponse
    on_duty: bool = True
    # Until the welcome frame is out, pushes wait here, so the welcome is always the first frame.
    ready: bool = False
    backlog: list[dict[str, Any]] = field(default_factory=list)

    async def push(self, frame: dict[str, Any]) -> None:
        if self.ready:
            await self.send(frame)
        else:
            self.backlog.append(frame)

    async def open(self, welcome: dict[str, Any]) -> None:
        """Send the welcome, then what was pushed meanwhile, then go live (no frame overtakes)."""
        await self.send(welcome)
        while self.backlog:
            await self.send(self.backlog.pop(0))
        self.ready = True

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_json(frame)
        except (ConnectionError, RuntimeError) as exc:
            log.info("supervisor_send_failed", conn_id=self.conn_id, error=str(exc))


class SupervisionHub:
    """This instance's supervisor sockets, fed from the `supervision` pub/sub channel."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.store: SupervisorStore = svc.supervisors
        self.escalations = EscalationStore(svc.redis)
        self._local: dict[str, set[SupervisorConn]] = {}
        self._pubsub: Any = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        # Subscribed before start() returns: nothing published after this instance is up is missed.
        self._pubsub = self.svc.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(keys.supervision_channel())
        self.svc.spawn(self._listen(), name="supervision:listen")
        self.svc.spawn(self._heartbeat(), name="supervision:heartbeat")
        if self.svc.calls is not None:
            self.svc.calls.on_finish.append(self.session_ended)
        self.svc.on_close(self.stop)

    async def stop(self) -> None:
        for conns in list(self._local.values()):
            for conn in list(conns):
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"bridge shutting down")
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
            self._pubsub = None

    async def _listen(self) -> None:
        while True:
            try:
                if self._pubsub is None:
                    return
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("supervision_pubsub_error", error=str(exc))
                await asyncio.sleep(0.5)
                await self._resubscribe()
                continue
            if message and message.get("type") == "message":
                try:
                    await self._deliver(json.loads(message["data"]))
                except Exception:
                    log.exception("supervision_deliver_failed")

    async def _resubscribe(self) -> None:
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await self._pubsub.aclose()
        try:
            self._pubsub = self.svc.redis.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(keys.supervision_channel())
            await self._resync_sockets()
        except Exception as exc:
            log.warning("supervision_resubscribe_failed", error=str(exc))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.store.renew(self.connections())
            except Exception as exc:
                log.warning("supervisor_lease_renew_failed", error=str(exc))

    async def session_ended(self, call_id: str) -> None:
        """The AI session ended (hang-up, transfer, conference_leave, ...): its escalations close,
        since nobody can bring a supervisor into the call through the AI any more. `closed_reason`
        is the session's outcome."""
        session = await self.svc.sessions.get(call_id)
        reason = (session.outcome if session else None) or "ai_session_ended"
        for esc in await self.escalations.close_for_call(call_id, reason):
            await self.publish("escalation.closed", esc)

    # ------------------------------------------------------------ sockets

    def connections(self, tenant_id: str | None = None) -> list[SupervisorConn]:
        if tenant_id is not None:
            return list(self._local.get(tenant_id, ()))
        return [c for conns in self._local.values() for c in conns]

    def add(self, conn: SupervisorConn) -> None:
        self._local.setdefault(conn.tenant_id, set()).add(conn)

    def remove(self, conn: SupervisorConn) -> None:
        conns = self._local.get(conn.tenant_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._local[conn.tenant_id]

    # ------------------------------------------------------------ the push

    async def publish(self, event: str, esc: Escalation) -> None:
        """Tell every instance (this one included, through the same channel)."""
        message = {"type": event, "tenant_id": esc.tenant_id, "escalation": esc.public()}
        await self.svc.redis.publish(keys.supervision_channel(), json.dumps(message))

    async def _deliver(self, message: dict[str, Any]) -> None:
        """Frames go to this tenant's on-duty sockets only; off duty hears nothing."""
        tenant_id = message.get("tenant_id")
        if not isinstance(tenant_id, str):
            return
        frame = {"type": message["type"], "escalation": message["escalation"]}
        targets = [c for c in self.connections(tenant_id) if c.on_duty]
        if targets:
            await asyncio.gather(*(c.push(frame) for c in targets))

    async def open_escalations(self, tenant_id: str) -> list[dict[str, Any]]:
        """Pending and claimed escalations, oldest first. One whose call is gone (a hang-up this
        bridge did not see, e.g. while the ESL link was down) is closed here and left out."""
        found = await self.escalations.list(tenant_id, OPEN_STATUSES)
        live: list[dict[str, Any]] = []
        for esc in found:
            session = await self.svc.sessions.get(esc.call_id)
            if session is None or session.terminal:
                await self.session_ended(esc.call_id)
                continue
            live.append(esc.public())
        return live

    async def _resync_sockets(self) -> None:
        """After the pub/sub link was lost, pushes may have been missed: send each on-duty socket
        the open escalations again (the console merges them by escalation_id)."""
        for tenant_id in list(self._local):
            targets = [c for c in self.connections(tenant_id) if c.on_duty]
            if not targets:
                continue
            frame = {"type": "snapshot", "escalations": await self.open_escalations(tenant_id)}
            await asyncio.gather(*(c.push(frame) for c in targets))
