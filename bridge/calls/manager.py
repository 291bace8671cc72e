"""Call lifecycle: ESL events in, AI sessions and domain events out.

Events are queued per channel uuid and handled by one task per live call, so a call's
events are applied in the order FreeSWITCH sent them while calls never wait on each other,
and the ESL reader never waits on any of them. The AI fork's events are bridge.calls.forks',
the reconciliation after a reconnect bridge.calls.resync's; both register here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from bridge.calls.commands import command
from bridge.calls.forks import AiForkEvents
from bridge.calls.ownership import BoxOwnership
from bridge.calls.resync import Resync
from bridge.calls.sessions import Session, iso
from bridge.calls.switch import queue_dialplan
from bridge.calls.timeouts import SessionTimeouts
from bridge.calls.transfers import TransferWatch
from bridge.calls.voice_agents import VoiceAgent
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.esl.protocol import Event
from bridge.media.recordings import api_audio_path
from bridge.store import keys
from bridge.store.crm import CampaignStore, LeadStore

if TYPE_CHECKING:
    from bridge.calls.pool import SwitchBox
    from bridge.media.tokens import CallbackToken
    from bridge.services import Services

log = structlog.get_logger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]

# Channel variables the dialplan (freeswitch-conf/dialplan) sets on a parked AI call.
VAR_TENANT = "bridge_tenant_id"
VAR_CAMPAIGN = "bridge_campaign_id"
VAR_VOICE_AGENT = "bridge_voice_agent_id"
VAR_LEAD = "bridge_lead_id"
VAR_DIRECTION = "bridge_direction"

FORK_BUGNAME = "ai_fork"
# Session field set once, just before the AI's first fork is opened.
FORK_OPENING = "ai_fork_opening"
_IDLE_WORKER_S = 120.0
_NORMAL_CAUSES = {"NORMAL_CLEARING", "ORIGINATOR_CANCEL", "NORMAL_UNSPECIFIED"}
# Events of a box another bridge handles are kept this many leases (bridge.calls.ownership),
# long enough to outlast a takeover, and at most this many per box.
_STANDBY_LEASES = 5
_STANDBY_MAX = 100_000


class NoVoiceAgent(Exception):
    pass


class CallManager:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.campaigns = CampaignStore(svc.redis)
        self.leads = LeadStore(svc.redis)
        self._queues: dict[str, asyncio.Queue[Event | None]] = {}
        self._active: dict[str, float] = {}  # call uuid -> when its worker last took an event
        self._handlers: dict[str, list[EventHandler]] = {}
        self._timers: dict[str, list[asyncio.TimerHandle | asyncio.Task[Any]]] = {}
        # Other modules (token refresh) add coroutines here: hook(call_id, agent, token).
        self.after_connect: list[Callable[..., Awaitable[None]]] = []
        # ...and here, run once when a session ends, whatever the outcome: hook(call_id).
        self.on_finish: list[Callable[[str], Awaitable[None]]] = []
        self.resync = Resync(self)
        self.timeouts = SessionTimeouts(self)
        # Per box: the events being handled (their Event-Sequence), the last one routed, and,
        # for boxes another bridge handles, the recent events kept for a takeover.
        self._inflight: dict[str, set[int]] = {}
        self._last: dict[str, tuple[str, int]] = {}
        self._standby: dict[str, deque[tuple[float, Event]]] = {}
        self._standby_s = _STANDBY_LEASES * self.settings.box_lease_s
        self.ownership = BoxOwnership(
            svc.redis,
            svc.holder_id,
            [box.id for box in svc.switches],
            lease_s=self.settings.box_lease_s,
            mark_of=self._mark,
            on_acquired=self._box_acquired,
            on_lost=self._box_lost,
        )

    # ------------------------------------------------------------ wiring

    async def start(self) -> None:
        for box in self.svc.switches:
            box.esl.add_event_handler(functools.partial(self._receive, box))
            box.esl.add_connection_listener(on_up=functools.partial(self._box_up, box))
        for key, handler in (
            ("CHANNEL_PARK", self._on_park),
            ("CHANNEL_ANSWER", self._on_answer),
            ("CHANNEL_HANGUP_COMPLETE", self._on_hangup_complete),
            ("RECORD_STOP", self._on_record_stop),
            ("conference::maintenance", self._on_conference),
        ):
            self.on(key, handler)
        self.forks = AiForkEvents(self)
        self.transfers = TransferWatch(self)
        self.timeouts.start()
        self.svc.spawn(self._reap_idle_workers(), name="idle-call-workers")
        # The first round now, so a lone bridge holds its boxes before their first event.
        await self.ownership.tick()
        self.svc.spawn(self.ownership.run(), name="box-leases")
        self.svc.on_close(self.ownership.release_all)

    def on(self, key: str, handler: EventHandler) -> None:
        """Register a handler for an Event-Name (or a CUSTOM subclass). Handlers of one call
        run one at a time, in event order."""
        self._handlers.setdefault(key, []).append(handler)

    # ------------------------------------------------------------ events in, per box

    def _receive(self, box: SwitchBox, event: Event) -> None:
        event.origin = box.id
        box.track(event)
        if self.ownership.owns(box.id):
            self._route(event)
            return
        kept = self._standby.get(box.id)
        if kept is None:
            kept = self._standby[box.id] = deque(maxlen=_STANDBY_MAX)
        now = time.monotonic()
        kept.append((now, event))
        while kept and kept[0][0] < now - self._standby_s:
            kept.popleft()

    def _mark(self, box_id: str) -> str:
        """`<Core-UUID> <seq>`: every event of the box up to seq has been handled here."""
        last = self._last.get(box_id)
        if last is None:
            return ""
        inflight = self._inflight.get(box_id)
        done = min(inflight) - 1 if inflight else last[1]
        return f"{last[0]} {done}"

    async def _box_acquired(self, box_id: str, mark: str) -> None:
        """This bridge now handles the box's events: first those it kept that the last holder
        had not finished (after its mark), then a resync against the box's channels."""
        core, _, seq = mark.partition(" ")
        done = int(seq) if seq.isdigit() else -1
        replayed = 0
        for _, event in self._standby.pop(box_id, ()):
            if core and event.get("Core-UUID") == core and _sequence(event) <= done:
                continue
            self._route(event)
            replayed += 1
        log.info("box_taken_over", box=box_id, mark=mark, replayed=replayed)
        box = self.svc.switches.get(box_id)
        if box is not None and box.connected:
            self.svc.spawn(self._resync_after_replay(box, self._last.get(box_id)), name=f"resync:{box_id}")

    async def _resync_after_replay(self, box: SwitchBox, upto: tuple[str, int] | None) -> None:
        """Resync once the replayed events are handled, so a hangup the last holder missed is
        ended with its own cause, not as a vanished channel."""
        deadline = time.monotonic() + 10.0
        while upto is not None and time.monotonic() < deadline:
            inflight = self._inflight.get(box.id)
            if not inflight or min(inflight) > upto[1]:
                break
            await asyncio.sleep(0.02)
        await self.resync.run(box)

    def _box_lost(self, box_id: str) -> None:
        self.svc.metrics.sessions_handed_over(box_id)
        self._inflight.pop(box_id, None)
        self._last.pop(box_id, None)

    async def _box_up(self, box: SwitchBox) -> None:
        if self.ownership.owns(box.id):
            await self.resync.run(box)

    def _route(self, event: Event) -> None:
        self.svc.metrics.esl_event(event.origin or "default", event.key)
        uuid = event.unique_id
        queue = self._queues.get(uuid)
        # Nothing handles it (most CHANNEL_* events): done now, no worker woken. Order is kept,
        # since none of a call's handled events waits behind it. The CHANNEL_DESTROY of a call
        # with a worker still goes through: it lets the worker end.
        unhandled = event.key not in self._handlers and (queue is None or event.name != "CHANNEL_DESTROY")
        if event.origin:
            seq = _sequence(event)
            self._last[event.origin] = (event.get("Core-UUID"), seq)
            if not unhandled:
                self._inflight.setdefault(event.origin, set()).add(seq)
        if unhandled:
            return
        if queue is None:
            queue = asyncio.Queue()
            self._queues[uuid] = queue
            self.svc.spawn(self._drain(uuid, queue), name=f"call:{uuid or 'global'}")
        queue.put_nowait(event)

    async def _drain(self, uuid: str, queue: asyncio.Queue[Event | None]) -> None:
        while True:
            # No timer per wait (a timeout per event was a tenth of a flood's CPU): an idle
            # worker is told to stop by _reap_idle_workers, with None.
            event = await queue.get()
            if event is None:
                break
            self._active[uuid] = time.monotonic()
            for handler in self._handlers.get(event.key, ()):
                try:
                    await handler(event)
                except Exception as exc:
                    self.svc.metrics.redis_error("calls", exc)
                    # `esl_event`, not `event`: structlog's first argument is the event, and a
                    # clash here raised inside the except and killed this call's worker.
                    log.exception(
                        "event_handler_failed",
                        esl_event=event.key,
                        call_id=uuid,
                        handler=getattr(handler, "__qualname__", repr(handler)),
                    )
                    await self._repair_after_failure(event)
            if event.origin:
                inflight = self._inflight.get(event.origin)
                if inflight is not None:
                    inflight.discard(_sequence(event))
            if event.name == "CHANNEL_DESTROY" and queue.empty():
                break
        self._active.pop(uuid, None)
        if self._queues.get(uuid) is queue:
            del self._queues[uuid]
            if not queue.empty():  # events that arrived while we were finishing
                self._queues[uuid] = queue
                self.svc.spawn(self._drain(uuid, queue), name=f"call:{uuid}")

    async def _reap_idle_workers(self) -> None:
        """A call whose CHANNEL_DESTROY never came (a lost link) must not keep its worker: one
        idle for _IDLE_WORKER_S with nothing queued is told to stop."""
        while True:
            await asyncio.sleep(_IDLE_WORKER_S / 8)
            cutoff = time.monotonic() - _IDLE_WORKER_S
            for uuid, queue in list(self._queues.items()):
                if queue.empty() and self._active.get(uuid, 0.0) < cutoff:
                    queue.put_nowait(None)

    async def _repair_after_failure(self, event: Event) -> None:
        """A handler raised: leave the call in a state that ends cleanly. A call whose setup
        failed is ended and hung up (the caller must not sit parked in silence, the agent's slot
        must come back); a hangup whose handling failed is ended again (finish and call.ended
        are once-only, so whatever did succeed is not repeated). Other events only log."""
        call_id = event.unique_id
        try:
            session = await self.svc.sessions.get(call_id) if call_id else None
            if session is None:
                return
            if event.name in ("CHANNEL_PARK", "CHANNEL_ANSWER") and not session.terminal:
                await self.finish(call_id, "error", "internal_error")
                await self.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")
            elif event.name == "CHANNEL_HANGUP_COMPLETE":
                await self.call_ended(session, event.get("Hangup-Cause") or "NORMAL_CLEARING")
        except Exception:
            log.exception("event_failure_not_repaired", esl_event=event.key, call_id=call_id)

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until every queued event has been handled (tests and shutdown use it)."""
        deadline = time.monotonic() + timeout
        while any(not q.empty() for q in self._queues.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("call events still queued")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------ voice agent resolution

    async def resolve_agent(
        self, tenant_id: str, *, flow_voice_agent_id: str | None, campaign_id: str | None
    ) -> VoiceAgent:
        """flow > campaign > tenant default; the first that names an active agent wins."""
        candidates: list[str] = []
        if flow_voice_agent_id:
            candidates.append(flow_voice_agent_id)
        if campaign_id:
            campaign = await self.campaigns.get(campaign_id, tenant_id)
            if campaign and campaign.get("voice_agent_id"):
                candidates.append(campaign["voice_agent_id"])
        default = await self.svc.voice_agents.get_default(tenant_id)
        if default:
            candidates.append(default)
        for va_id in candidates:
            agent = await self.svc.voice_agents.get(va_id, tenant_id)
            if agent is not None and agent.status == "active":
                return agent
        raise NoVoiceAgent(tenant_id)

    # ------------------------------------------------------------ inbound: CHANNEL_PARK

    async def _on_park(self, event: Event) -> None:
        tenant_id = event.var(VAR_TENANT)
        if not tenant_id or event.var(VAR_DIRECTION) == "outbound":
            return
        call_id = event.unique_id
        claimed = await self.svc.redis.set(
            keys.call_owner(call_id), self.svc.holder_id, nx=True, ex=keys.CALL_OWNER_TTL_S
        )
        existing = await self.svc.sessions.get(call_id)
        if not claimed:
            if existing is not None and await self._setup_orphaned(existing):
                await self._resume_setup(existing)
            return  # another instance sets it up, or a re-park of a call we already handle
        if existing is not None:
            return
        session = Session(
            call_id=call_id,
            tenant_id=tenant_id,
            direction="inbound",
            from_=event.get("Caller-Caller-ID-Number"),
            to=event.get("Caller-Destination-Number"),
            campaign_id=event.var(VAR_CAMPAIGN) or None,
            lead_id=event.var(VAR_LEAD) or None,
            started_at=time.time(),
            switch_id=event.origin,
        )
        agent: VoiceAgent | None = None
        try:
            agent = await self.resolve_agent(
                tenant_id,
                flow_voice_agent_id=event.var(VAR_VOICE_AGENT) or None,
                campaign_id=session.campaign_id,
            )
        except NoVoiceAgent:
            pass
        if agent is not None:
            session.voice_agent_id = agent.id
            session.ws_url = agent.ws_url
            session.subprotocol = agent.subprotocol
            session.token_lifetime = agent.token_lifetime
        await self.svc.sessions.create(session)
        self.svc.metrics.session_started(
            call_id, box=self.svc.switches.box_of(session).id, voice_agent=session.voice_agent_id
        )
        await self.emit_call_started(session)
        if agent is None:
            log.warning("no_voice_agent_configured", call_id=call_id, tenant_id=tenant_id)
            await self.reject(session, "no_voice_agent_configured", cause="SERVICE_UNAVAILABLE")
            return
        if agent.subprotocol not in self.settings.fork_subprotocols:
            await self.reject(session, "subprotocol_mismatch", cause="SERVICE_UNAVAILABLE")
            return
        if not await self.svc.voice_agents.acquire_slot(agent, call_id):
            log.warning("max_concurrent_exceeded", call_id=call_id, voice_agent_id=agent.id)
            await self.reject(session, "max_concurrent_exceeded", cause="USER_BUSY")
            return
        try:
            await self.svc.switches.of(session).answer(call_id)
            await self.mark_answered(call_id)
            await self.connect_ai(call_id, agent)
        except (SwitchError, SwitchUnavailable) as exc:
            log.error("ai_call_setup_failed", call_id=call_id, error=str(exc))
            await self.finish(call_id, "error", f"switch_error: {exc}")
            await self.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")

    async def _setup_orphaned(self, session: Session) -> bool:
        """True when the bridge that claimed this call's setup died before finishing it (its
        PARK is replayed here after a takeover, bridge.calls.ownership); the claim becomes ours."""
        if session.terminal or session.extra.get(FORK_OPENING):
            return False
        key = keys.call_owner(session.call_id)
        holder = await self.svc.redis.get(key)
        if holder == self.svc.holder_id:
            return False
        if holder and await self.ownership.alive(holder):
            return False
        await self.svc.redis.set(key, self.svc.holder_id, ex=keys.CALL_OWNER_TTL_S)
        log.warning("call_setup_taken_over", call_id=session.call_id, from_holder=holder)
        return True

    async def _resume_setup(self, session: Session) -> None:
        """Finish the setup a dead bridge began: every step below is safe to repeat."""
        await self.emit_call_started(session)
        # Its session is this process's to carry now (bridge_live_sessions).
        self.svc.metrics.session_started(
            session.call_id, box=self.svc.switches.box_of(session).id, voice_agent=session.voice_agent_id
        )
        agent = await self.svc.voice_agents.get(session.voice_agent_id or "", session.tenant_id)
        if agent is None or not await self.svc.voice_agents.acquire_slot(agent, session.call_id):
            await self.reject(session, "no_voice_agent_configured", cause="SERVICE_UNAVAILABLE")
            return
        try:
            if not session.answered:
                await self.svc.switches.of(session).answer(session.call_id)
                await self.mark_answered(session.call_id)
            await self.connect_ai(session.call_id, agent)
        except (SwitchError, SwitchUnavailable) as exc:
            log.error("ai_call_setup_failed", call_id=session.call_id, error=str(exc))
            await self.finish(session.call_id, "error", f"switch_error: {exc}")
            await self.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")

    async def reject(self, session: Session, reason: str, *, cause: str) -> None:
        """End the session with outcome `error` and hang the caller up with `cause`."""
        await self.finish(session.call_id, "error", reason)
        await self.kill_quietly(session, cause)

    async def kill_quietly(self, session: Session, cause: str, uuid: str | None = None) -> None:
        """Hang up the call (or `uuid`, a leg on the call's box) and only log a failure."""
        try:
            await self.svc.switches.of(session).kill(uuid or session.call_id, cause)
        except (SwitchError, SwitchUnavailable) as exc:
            log.warning("hangup_failed", call_id=session.call_id, uuid=uuid, error=str(exc))

    # ------------------------------------------------------------ answer and the AI's fork

    async def _on_answer(self, event: Event) -> None:
        session = await self.svc.sessions.get(event.unique_id)
        if session is None:
            return
        first = await self.mark_answered(session.call_id)
        if first and session.direction == "outbound" and not session.terminal and session.voice_agent_id:
            agent = await self.svc.voice_agents.get(session.voice_agent_id)
            if agent is None:
                await self.reject(session, "no_voice_agent_configured", cause="SERVICE_UNAVAILABLE")
                return
            try:
                await self.connect_ai(session.call_id, agent)
            except (SwitchError, SwitchUnavailable) as exc:
                log.error("ai_call_setup_failed", call_id=session.call_id, error=str(exc))
                await self.finish(session.call_id, "error", f"switch_error: {exc}")
                await self.kill_quietly(session, "NORMAL_TEMPORARY_FAILURE")

    async def mark_answered(self, call_id: str) -> bool:
        """Record the answer once, whoever sees it first (our uuid_answer or CHANNEL_ANSWER)."""
        first = await self.svc.sessions.set_once(call_id, "answered_at", repr(time.time()))
        session = await self.svc.sessions.get(call_id)
        if session is None or session.answered_at is None:
            return False
        if first and not session.terminal:
            await self.svc.sessions.update(call_id, state="in_progress")
        # Also when not first: the bridge that was first may have died before emitting.
        answered = session.answered_at
        await self.svc.outbox.emit(
            "call.answered",
            session.tenant_id,
            {
                "call_id": call_id,
                "campaign_id": session.campaign_id,
                "answer_time": iso(answered),
                "ring_duration_s": round(max(0.0, answered - session.started_at), 3),
            },
            once=call_id,
        )
        return first

    def token_ttl_s(self, agent: VoiceAgent) -> int:
        if agent.token_lifetime == "ws_session":
            return self.settings.ws_session_token_ttl_s
        return self.settings.token_ttl_s

    async def metadata_frame(
        self, session: Session, agent: VoiceAgent, token: CallbackToken, **extra: Any
    ) -> dict[str, Any]:
        """The first text frame of every fork the AI gets for this call (`extra` says why a later
        fork was opened, e.g. resumed, conference_id)."""
        lead = await self.leads.get(session.lead_id, session.tenant_id) if session.lead_id else None
        return {
            "type": "metadata",
            "call_id": session.call_id,
            "tenant_id": session.tenant_id,
            "voice_agent_id": agent.id,
            "callback_token": token.token,
            "token_expires_at": iso(token.expires_at),
            "from": session.from_,
            "to": session.to,
            "direction": session.direction,
            "campaign_id": session.campaign_id,
            "lead_id": session.lead_id,
            "lead_metadata": (lead or {}).get("metadata", {}),
            "audio_format": agent.audio_format,
            **extra,
        }

    async def connect_ai(self, call_id: str, agent: VoiceAgent) -> None:
        """Start the stereo recording and open the audio fork to the agent's WebSocket."""
        session = await self.svc.sessions.get(call_id)
        if session is None:
            return
        settings = self.settings
        token = await self.svc.tokens.mint(
            call_id=call_id, tenant_id=session.tenant_id, ttl_s=self.token_ttl_s(agent)
        )
        path = f"{settings.recordings_dir.rstrip('/')}/{call_id}.wav"
        switch = self.svc.switches.of(session)
        if session.recording_state == "off":  # a setup resumed after a takeover may have started it
            await switch.record_start(call_id, path)
            started = repr(time.time())
            await self.svc.sessions.update(
                call_id, recording_path=path, recording_state="recording", recording_started_at=started
            )
        await switch.setvar(call_id, "mod_audio_fork_subprotocol", agent.subprotocol)
        if agent.auth_token:
            await switch.setvar(call_id, "mod_audio_fork_auth_token", agent.auth_token)
        metadata = await self.metadata_frame(session, agent, token)
        # Marked before the command: a bridge that resumes this setup after a takeover must not
        # open a second fork (bridge.calls.ownership); past this point the setup is not resumed.
        if not await self.svc.sessions.set_once(call_id, FORK_OPENING, "1"):
            return
        await switch.fork_start(
            call_id,
            agent.ws_url,
            sample_rate_hz=agent.sample_rate_hz,
            metadata=metadata,
            bugname=FORK_BUGNAME,
        )
        await self.emit_ai_session_started(session)
        for hook in self.after_connect:
            await hook(call_id, agent, token)

    async def emit_ai_session_started(self, session: Session) -> None:
        """Once per session: after the fork is opened, and again (a no-op then) when it connects,
        in case the bridge that opened it died first."""
        await self.svc.outbox.emit(
            "ai_session.started",
            session.tenant_id,
            {
                "call_id": session.call_id,
                "voice_agent_id": session.voice_agent_id,
                "ws_url": session.ws_url,
                "subprotocol": session.subprotocol,
                "started_at": iso(session.started_at),
            },
            once=session.call_id,
        )

    async def to_default_queue(self, session: Session, reason: str) -> bool:
        """Hand a caller whose AI is gone to the tenant's queue (`ws_disconnect_action:
        transfer_to_queue`): the transfer, the session's record of it, ai_session.transferred.
        False when the switch refused it."""
        queue = self.settings.default_queue
        dest = queue_dialplan(queue, self.settings.callcenter_domain)
        try:
            await self.svc.switches.of(session).api(command("uuid_transfer", session.call_id, dest, "inline"))
        except (SwitchError, SwitchUnavailable) as exc:
            log.error("fallback_transfer_failed", call_id=session.call_id, error=str(exc))
            return False
        transfer = {"destination_type": "agent_queue", "destination": queue, "metadata": {"reason": reason}}
        await self.svc.sessions.update(session.call_id, transfer=json.dumps(transfer))
        await self.svc.outbox.emit(
            "ai_session.transferred", session.tenant_id, {"call_id": session.call_id, **transfer}
        )
        return True

    async def reopen_fork(self, session: Session, **extra: Any) -> bool:
        """Give the AI its audio back after the bridge stopped its fork (a refused or failed
        transfer, an undone conference_start): a fresh token, the metadata frame a new call gets
        plus `resumed` and `extra`. False when the call has no agent to reopen to."""
        agent = await self.svc.voice_agents.get(session.voice_agent_id or "")
        if agent is None:
            return False
        token = await self.svc.tokens.mint(
            call_id=session.call_id, tenant_id=session.tenant_id, ttl_s=self.token_ttl_s(agent)
        )
        metadata = await self.metadata_frame(session, agent, token, resumed=True, **extra)
        await self.svc.switches.of(session).fork_start(
            session.call_id,
            agent.ws_url,
            sample_rate_hz=agent.sample_rate_hz,
            metadata=metadata,
            bugname=FORK_BUGNAME,
        )
        return True

    async def _on_conference(self, event: Event) -> None:
        await self.svc.conferences.on_event(event, self.svc.outbox)

    # ------------------------------------------------------------ the end of a session / call

    async def finish(self, call_id: str, outcome: str, reason: str = "") -> bool:
        """End the AI session once (any instance may try; one wins) and fire ai_session.ended."""
        ended = await self.svc.sessions.end(call_id, outcome, reason)
        # Terminal now, whoever ended it: bridge_live_sessions counts it no more.
        self.svc.metrics.session_ended(call_id)
        if not ended:
            # Ended elsewhere, or by a bridge that may have died before its last steps (a replayed
            # hangup after a takeover): those that are safe to repeat are repeated.
            session = await self.svc.sessions.get(call_id)
            if session is not None and session.terminal:
                if session.voice_agent_id:
                    await self.svc.voice_agents.release_slot(session.voice_agent_id, call_id)
                await self._emit_ended(session)
            return False
        for timer in self._timers.pop(call_id, []):
            timer.cancel()
        for hook in self.on_finish:
            try:
                await hook(call_id)
            except Exception:
                log.exception("finish_hook_failed", call_id=call_id)
        session = await self.svc.sessions.get(call_id)
        if session is None:
            return True
        if session.voice_agent_id:
            await self.svc.voice_agents.release_slot(session.voice_agent_id, call_id)
        if session.conference_id and outcome != "conference_left":
            await self._drop_ai_leg(session)
        await self._emit_ended(session)
        log.info("ai_session_ended", call_id=call_id, outcome=outcome, reason=reason)
        return True

    async def _emit_ended(self, session: Session) -> None:
        logs = await self.svc.sessions.logs(session.call_id)
        await self.svc.outbox.emit(
            "ai_session.ended",
            session.tenant_id,
            {
                "call_id": session.call_id,
                "voice_agent_id": session.voice_agent_id,
                "outcome": session.outcome,
                "reason": session.reason or None,
                "ended_at": iso(session.ended_at),
                "duration_s": session.duration_s(),
                "metadata": {"logs": logs},
            },
            once=session.call_id,
        )

    async def _drop_ai_leg(self, session: Session) -> None:
        """The session ended while the AI was in a conference: its leg must not stay behind
        listening. The conference itself goes on for whoever else is in it."""
        conf = await self.svc.conferences.get(session.conference_id or "")
        if conf is None or not conf.ai_leg_uuid or conf.ai_left:
            return
        await self.svc.conferences.update(conf.conference_id, ai_left="1")
        await self.kill_quietly(session, "NORMAL_CLEARING", conf.ai_leg_uuid)

    def add_timer(self, call_id: str, timer: asyncio.TimerHandle | asyncio.Task[Any]) -> None:
        """Timers that die with the session (token refresh, session timeout)."""
        self._timers.setdefault(call_id, []).append(timer)

    async def _on_hangup_complete(self, event: Event) -> None:
        call_id = event.unique_id
        session = await self.svc.sessions.get(call_id)
        if session is None:
            return
        cause = event.get("Hangup-Cause") or event.var("hangup_cause") or "NORMAL_CLEARING"
        await self.call_ended(session, cause)

    async def call_ended(self, session: Session, cause: str) -> None:
        call_id = session.call_id
        # The session may have been ended by another instance (a verb sent there): it is over here too.
        self.svc.metrics.session_ended(call_id)
        await self.svc.sessions.update(call_id, hangup_cause=cause, call_ended_at=time.time())
        if session.terminal:
            # Ended already; finish repeats what the bridge that ended it may not have lived to do.
            await self.finish(call_id, session.outcome or "hangup", session.reason or "")
        elif session.answered:
            reason = "caller_hangup" if cause in _NORMAL_CAUSES else f"hangup_cause:{cause}"
            await self.finish(call_id, "hangup", reason)
        else:
            await self.finish(call_id, "error", f"not_answered:{cause}")
        session = await self.svc.sessions.get(call_id) or session
        now = time.time()
        talk = int(now - session.answered_at) if session.answered_at else 0
        # Once per call, whichever bridge (or repeated hangup) gets here first.
        await self.svc.outbox.emit(
            "call.ended",
            session.tenant_id,
            {
                "call_id": call_id,
                "campaign_id": session.campaign_id,
                "lead_id": session.lead_id,
                "end_time": iso(now),
                "hangup_cause": cause,
                "talk_duration_s": talk,
                "disposition": session.disposition,
                "notes": session.notes,
                "recording_url": self.recording_url(session),
            },
            once=call_id,
        )

    def recording_url(self, session: Session) -> str | None:
        """The URL the SDK's recordings.fetch_bytes/download GET (an API key with
        recordings:download); recordings.get_signed_url gives a keyless, expiring one."""
        if not session.recording_path:
            return None
        return f"{self.svc.public_base_url}{api_audio_path(session.call_id)}"

    async def _on_record_stop(self, event: Event) -> None:
        session = await self.svc.sessions.get(event.unique_id)
        if session is None or not await self.svc.sessions.set_once(session.call_id, "recording_ready", "1"):
            return
        seconds = event.var("record_seconds") or "0"
        ms = event.var("record_ms") or ""
        # The recording covers the whole call, the part after the AI left included (a queue agent,
        # a conference the AI left, the time limit): where the AI's part ends is said, not cut.
        started, ended = session.recording_started_at, session.ended_at
        ai_until = round(ended - started, 3) if started and ended else None
        await self.svc.outbox.emit(
            "call.recording_ready",
            session.tenant_id,
            {
                "call_id": session.call_id,
                "recording_url": self.recording_url(session),
                "duration_s": int(float(seconds or 0)),
                "duration_ms": int(ms) if ms.isdigit() else None,
                "stereo": True,
                "format": "audio/wav",
                "covers": "call",
                "ai_session_ended_offset_s": ai_until,
            },
        )

    async def emit_call_started(self, session: Session) -> None:
        await self.svc.outbox.emit(
            "call.started",
            session.tenant_id,
            {
                "call_id": session.call_id,
                "direction": session.direction,
                "from": session.from_,
                "to": session.to,
                "campaign_id": session.campaign_id,
                "lead_id": session.lead_id,
                "voice_agent_id": session.voice_agent_id,
                "started_at": iso(session.started_at),
            },
            once=session.call_id,
        )


def _sequence(event: Event) -> int:
    raw = event.get("Event-Sequence")
    return int(raw) if raw.isdigit() else 0
