"""The callback scheduler: dials each callback booked by `schedule_callback` when it falls due.

Every bridge instance runs one. They share nothing but Redis, and a callback is dialed exactly
once however many of them poll: a scheduler owns a callback only after its Lua claim removed the
id from the due set (bridge.store.callbacks). A scheduler that is not connected to its switch
claims nothing, so an instance that cannot dial leaves the work to one that can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from ulid import ULID

from bridge.calls.originate import originate_ai_call
from bridge.errors import ApiError, SwitchError, SwitchUnavailable
from bridge.store.callbacks import Callback, CallbackStore
from bridge.store.crm import LeadStore

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)

DialFn = Callable[[Callback], Awaitable[str]]

# A 429 max_concurrent means the agent is busy, not that the callback is wrong: try again every
# RETRY_DELAY_S (the Retry-After the API gives for the same error) until RETRY_WINDOW_S after the
# time the customer was promised, then give up.
RETRY_DELAY_S = 5.0
RETRY_WINDOW_S = 900.0
# originate_ai_call returns within a few Redis round trips; a claim still open after this long
# belongs to an instance that died.
LEASE_S = 60.0
BATCH = 100


class CallbackScheduler:
    def __init__(
        self,
        store: CallbackStore,
        dial: DialFn,
        *,
        instance_id: str,
        interval_s: float = 1.0,
        leads: LeadStore | None = None,
        ready: Callable[[], bool] = lambda: True,
        retry_delay_s: float = RETRY_DELAY_S,
        retry_window_s: float = RETRY_WINDOW_S,
        lease_s: float = LEASE_S,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.dial = dial
        self.instance_id = instance_id
        self.interval_s = interval_s
        self.leads = leads
        self.ready = ready
        self.retry_delay_s = retry_delay_s
        self.retry_window_s = retry_window_s
        self.lease_s = lease_s
        self.batch = batch

    @classmethod
    def for_services(cls, svc: Services) -> CallbackScheduler:
        store = CallbackStore(svc.redis)

        async def dial(cb: Callback) -> str:
            return await originate_ai_call(
                svc,
                tenant_id=cb.tenant_id,
                to=cb.to,
                from_=cb.from_,
                voice_agent_id=await _routed_agent(svc, cb),
                campaign_id=cb.campaign_id,
                lead_id=cb.lead_id,
            )

        return cls(
            store,
            dial,
            instance_id=svc.settings.instance_id,
            interval_s=svc.settings.scheduler_interval_s,
            leads=svc.calls.leads if svc.calls is not None else LeadStore(svc.redis),
            ready=lambda: svc.switches.any_connected,
        )

    def start(self, svc: Services) -> asyncio.Task[None]:
        return svc.spawn(self.run(), name="callback-scheduler")

    async def run(self) -> None:
        log.info("callback_scheduler_started", interval_s=self.interval_s)
        while True:
            handled = 0
            try:
                handled = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("callback_scheduler_tick_failed")
            # A full batch means more are due right now: go again without waiting.
            if handled < self.batch:
                await asyncio.sleep(self.interval_s)

    async def tick(self, now_ms: int | None = None) -> int:
        """One pass: fail dead claims, then claim and dial what is due. Returns how many it claimed."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        for cb_id in await self.store.reap_expired(now_ms):
            log.error("callback_claim_lost", callback_id=cb_id)
        if not self.ready():
            return 0
        handled = 0
        for cb_id in await self.store.due_ids(now_ms, self.batch):
            claim = f"{self.instance_id}:{ULID()}"
            cb = await self.store.claim(cb_id, claim, now_ms + int(self.lease_s * 1000))
            if cb is None:
                continue
            handled += 1
            await self._dial(cb, claim)
        return handled

    async def _dial(self, cb: Callback, claim: str) -> None:
        logger = log.bind(callback_id=cb.id, tenant_id=cb.tenant_id, attempt=cb.attempts)
        try:
            call_id = await self.dial(cb)
        except ApiError as exc:
            if exc.status == 429 and self._may_retry(cb):
                due_ms = int((time.time() + self.retry_delay_s) * 1000)
                await self.store.retry_later(cb.id, claim, due_ms, exc.code, f"{exc.message}; retrying")
                logger.warning("callback_dial_deferred", code=exc.code, retry_in_s=self.retry_delay_s)
                return
            await self.store.mark_failed(cb.id, claim, exc.code, exc.message)
            logger.warning("callback_dial_failed", code=exc.code, error=exc.message)
            return
        except SwitchUnavailable as exc:
            await self.store.mark_failed(cb.id, claim, "switch_unavailable", str(exc) or "no ESL connection")
            logger.warning("callback_dial_failed", code="switch_unavailable")
            return
        except SwitchError as exc:
            await self.store.mark_failed(cb.id, claim, exc.code, exc.reply)
            logger.warning("callback_dial_failed", code=exc.code, reply=exc.reply)
            return
        except Exception as exc:
            logger.exception("callback_dial_crashed")
            await self.store.mark_failed(cb.id, claim, "internal_error", type(exc).__name__)
            return
        await self.store.mark_dialed(cb.id, claim, call_id)
        logger.info("callback_dialed", call_id=call_id, to=cb.to)
        if self.leads is not None and cb.lead_id:
            try:
                await self.leads.record_attempt(cb.lead_id, cb.tenant_id)
            except Exception:
                logger.exception("lead_attempt_not_recorded", lead_id=cb.lead_id)

    def _may_retry(self, cb: Callback) -> bool:
        return time.time() * 1000 < cb.scheduled_ms + self.retry_window_s * 1000


async def _routed_agent(svc: Services, cb: Callback) -> str | None:
    """The agent asked for; else the one that took the original call while it is still active;
    else None, and originate resolves campaign > tenant default as for any outbound call."""
    if cb.voice_agent_id:
        return cb.voice_agent_id
    if cb.origin_voice_agent_id:
        agent = await svc.voice_agents.get(cb.origin_voice_agent_id, cb.tenant_id)
        if agent is not None and agent.status == "active":
            return agent.id
    return None


async def start_scheduler(svc: Services) -> CallbackScheduler:
    """Called from bridge.runtime: one scheduler per bridge process."""
    scheduler = CallbackScheduler.for_services(svc)
    scheduler.start(svc)
    return scheduler
