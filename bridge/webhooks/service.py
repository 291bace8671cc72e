"""Webhook delivery: drain the outbox into per-subscription deliveries, and send them.

Two loops per process, both started by `WebhookService.start()`:

- the consumer reads the outbox stream through a consumer group (so several bridge instances share
  it), fans each event out to the matching subscriptions and acks it in the same Lua call; entries a
  dead consumer left pending are taken over with XAUTOCLAIM;
- the dispatcher claims due deliveries from `webhooks:retry` and sends each in its own task, at most
  `max_concurrency` at a time, through one aiohttp session.

Nothing here runs on the path of a control request or of the ESL reader: they only XADD (Outbox.emit).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from redis.exceptions import ResponseError
from ulid import ULID

from bridge.store import keys
from bridge.tasks import STOP_TIMEOUT_S, cancel_and_wait
from bridge.webhooks.deliveries import (
    DEAD,
    DELIVERED,
    RETRYING,
    Delivery,
    DeliveryQueue,
    now_ms,
)
from bridge.webhooks.outbox import DomainEvent
from bridge.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_header,
)
from bridge.webhooks.subscriptions import Subscription, SubscriptionCache, WebhookStore, iso

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)

USER_AGENT = "yotel-bridge-webhooks/1"
RETRYABLE_STATUSES = frozenset({408, 429})
RESPONSE_EXCERPT_BYTES = 512
JITTER = 0.10


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int
    response_excerpt: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        if self.status_code is None:  # timeout, refused, reset, DNS, TLS
            return True
        return self.status_code in RETRYABLE_STATUSES or self.status_code >= 500


def retry_delay_s(schedule: tuple[float, ...], retry_index: int) -> float | None:
    """Delay before the retry that follows failed attempt `retry_index` (1-based); None once spent."""
    if retry_index > len(schedule):
        return None
    base = float(schedule[retry_index - 1])
    return base * random.uniform(1 - JITTER, 1 + JITTER)


class WebhookService:
    def __init__(
        self,
        services: Services,
        *,
        max_concurrency: int = 64,
        batch_size: int = 100,
        block_ms: int = 1000,
        poll_s: float = 0.25,
        claim_idle_s: float | None = None,
        lease_margin_s: float | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.metrics = services.metrics
        self.redis = services.redis
        self.store = WebhookStore(self.redis)
        # One per loop: each reads the version token at its own batches.
        self._fan_out_subs = SubscriptionCache(self.store)
        self._send_subs = SubscriptionCache(self.store)
        self.queue = DeliveryQueue(self.redis)
        self.group = keys.OUTBOX_WEBHOOK_GROUP
        # Unique per start, so two processes with one instance_id (or a restart) never share a PEL.
        self.consumer = f"{self.settings.instance_id}:{ULID()}"
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        # XREADGROUP blocks on a pooled connection whose socket timeout is 5 s: stay well under it.
        self.block_ms = block_ms
        self.poll_s = poll_s
        if claim_idle_s is None:
            claim_idle_s = self.settings.webhook_claim_idle_s
        if lease_margin_s is None:
            lease_margin_s = self.settings.webhook_lease_margin_s
        self.claim_idle_ms = int(claim_idle_s * 1000)
        # An attempt cannot outlive the HTTP timeout, so a lease this long is never cut short by a
        # live sender; a dead sender's delivery comes due again when it runs out.
        self.lease_ms = int((self.settings.webhook_timeout_s + lease_margin_s) * 1000)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        self._loops: list[asyncio.Task[Any]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._started = False
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        await self.ensure_group()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_concurrency),
            headers={"User-Agent": USER_AGENT},
            # A receiver's Set-Cookie is never sent back, to it or to another tenant's endpoint.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._started = True
        self._stopping = False
        self._loops = [
            self.services.spawn(self._consume_loop(), name="webhooks.consume"),
            self.services.spawn(self._dispatch_loop(), name="webhooks.dispatch"),
            self.services.spawn(self._queue_depth_loop(), name="webhooks.queue_depth"),
        ]
        log.info("webhooks_started", consumer=self.consumer)

    async def stop(self) -> None:
        """Stop reading and sending. Unfinished attempts are handed back for another instance."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        # Bounded (bridge.tasks); another round catches an attempt spawned while the dispatcher
        # was winding down.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (pending := {t for t in (*self._loops, *self._inflight) if not t.done()}) and (
            left := deadline - time.monotonic()
        ) > 0:
            await cancel_and_wait(pending, timeout_s=left, what="webhooks")
        self._loops.clear()
        self._inflight.clear()
        await self.queue.aclose()  # completions already handed to Redis are read back
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._forget_consumer()
        log.info("webhooks_stopped", consumer=self.consumer)

    async def ensure_group(self) -> None:
        # From "0", not "$": events emitted before the first start are delivered too.
        try:
            await self.redis.xgroup_create(keys.outbox(), self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _forget_consumer(self) -> None:
        # Each start registers a fresh consumer name; drop ours when it holds nothing, so the
        # group does not collect one dead name per restart. One with pending entries stays for
        # XAUTOCLAIM to empty.
        with contextlib.suppress(Exception):
            for info in await self.redis.xinfo_consumers(keys.outbox(), self.group):
                if info.get("name") == self.consumer and int(info.get("pending", 0)) == 0:
                    await self.redis.xgroup_delconsumer(keys.outbox(), self.group, self.consumer)

    # ------------------------------------------------------------------ queue depth (metrics)

    async def _queue_depth_loop(self) -> None:
        """Keep bridge_webhook_queue_depth fresh: a scrape cannot ask Redis itself (it is not async)."""
        while not self._stopping:
            try:
                await self.refresh_queue_depth()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.metrics.redis_error("webhooks", exc):
                    log.exception("webhooks_queue_depth_failed")
            await asyncio.sleep(self.settings.metrics_refresh_s)

    async def refresh_queue_depth(self) -> None:
        """outbox: entries the consumer group has read but not fanned out yet (pending), plus those
        no consumer has read (the group's `lag`, Redis 7+; not known on 6.2); deliveries: every
        delivery not yet delivered or given up (due, waiting for a retry, or being sent)."""
        outbox = 0
        for group in await self.redis.xinfo_groups(keys.outbox()):
            if group.get("name") == self.group:
                outbox = int(group.get("pending") or 0) + int(group.get("lag") or 0)
        deliveries = int(await self.redis.zcard(keys.webhook_retry_queue()))
        self.metrics.webhook_queue_depth(outbox, deliveries)

    # ------------------------------------------------------------------ outbox -> deliveries

    async def _consume_loop(self) -> None:
        next_reclaim = 0.0
        backoff = 0.1
        while not self._stopping:
            try:
                if time.monotonic() >= next_reclaim:
                    await self._reclaim()
                    next_reclaim = time.monotonic() + max(self.claim_idle_ms / 2000, 0.05)
                reply = await self.redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {keys.outbox(): ">"},
                    count=self.batch_size,
                    block=self.block_ms,
                )
                for _stream, entries in reply or []:
                    await self._fan_out(entries)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # The stream was deleted under us (FLUSHDB, an operator): start over.
                    await self._retry_later(self.ensure_group, "webhooks_group_recreate_failed")
                    continue
                log.exception("webhooks_consume_failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                self.metrics.redis_error("webhooks", exc)
                log.exception("webhooks_consume_failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _retry_later(self, fn: Any, what: str) -> None:
        try:
            await fn()
        except Exception:
            log.exception(what)
            await asyncio.sleep(1.0)

    async def _reclaim(self) -> None:
        """Fan out what a consumer that died (or stalled) read but never acked."""
        cursor = "0-0"
        for _ in range(100):
            reply = await self.redis.xautoclaim(
                keys.outbox(),
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=cursor,
                count=self.batch_size,
            )
            cursor, entries = reply[0], reply[1]
            live: list[tuple[str, dict[str, str]]] = []
            for entry_id, fields in entries:
                if entry_id is None:
                    continue
                if not fields:
                    # Trimmed from the stream while pending: nothing left to deliver.
                    await self.redis.xack(keys.outbox(), self.group, entry_id)
                    continue
                log.info("webhooks_outbox_entry_reclaimed", entry_id=entry_id)
                live.append((entry_id, fields))
            await self._fan_out(live)
            if cursor in ("0-0", b"0-0"):
                return

    async def _fan_out(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """One batch of outbox entries -> deliveries, acked with them in one Lua call."""
        if not entries:
            return
        await self._fan_out_subs.refresh()
        batch: list[tuple[str, DomainEvent | None, list[Subscription]]] = []
        for entry_id, fields in entries:
            try:
                event = DomainEvent.from_fields(fields)
            except (KeyError, ValueError, TypeError):
                # Retrying a malformed entry would block nobody but would never succeed either:
                # it is acked with no delivery.
                log.error("webhooks_outbox_entry_malformed", entry_id=entry_id, fields=fields)
                batch.append((entry_id, None, []))
                continue
            subs = await self._fan_out_subs.matching(event.tenant_id, event.event_type)
            batch.append((entry_id, event, subs))
        created = await self.queue.fan_out_many(self.group, batch, now_ms())
        if created:
            self._wake.set()
        log.debug("webhooks_events_fanned_out", entries=len(batch), created=created)

    # ------------------------------------------------------------------ deliveries -> HTTP

    async def _dispatch_loop(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                self._wake.clear()
                free = self.max_concurrency - len(self._inflight)
                if free > 0:
                    now = now_ms()
                    lease = now + self.lease_ms
                    claimed, next_due = await self.queue.claim_due(now, lease, free)
                    await self._start_attempts(claimed, lease)
                    if len(self._inflight) < self.max_concurrency:
                        await self._sleep_until(next_due)
                    else:
                        await self._wait_wake(self.poll_s)
                else:
                    await self._wait_wake(self.poll_s)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.redis_error("webhooks", exc)
                log.exception("webhooks_dispatch_failed")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _start_attempts(self, claimed: list[str], lease: int) -> None:
        """Load what was claimed (deliveries, and their subscriptions unless the cache has them)
        and send each in its own task."""
        if not claimed:
            return
        version, deliveries = await self.queue.load_many(claimed, version_key=keys.webhooks_version())
        self._send_subs.observe(version)
        subs = await self._send_subs.get_many([d.sub_id for d in deliveries if d is not None])
        for delivery_id, delivery in zip(claimed, deliveries, strict=True):
            sub = subs.get(delivery.sub_id) if delivery is not None else None
            task = asyncio.create_task(
                self._run(delivery_id, delivery, sub, lease), name=f"webhooks.attempt.{delivery_id}"
            )
            self._inflight.add(task)
            task.add_done_callback(self._attempt_done)

    async def _sleep_until(self, next_due: int | None) -> None:
        wait = self.poll_s
        if next_due is not None:
            # Other instances add work too, so never sleep longer than one poll.
            wait = min(wait, max(0.0, (next_due - now_ms()) / 1000))
        if wait > 0:
            await self._wait_wake(wait)

    async def _wait_wake(self, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that lands just as the
        # event is set, and the loop would then outlive stop().
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    def _attempt_done(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        # Under load, claim a quarter of the slots at a time rather than one claim (and one load)
        # per finished attempt; a dispatcher that is not full is woken by each one as before.
        if len(self._inflight) <= self.max_concurrency - max(1, self.max_concurrency // 4):
            self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.metrics.redis_error("webhooks", exc)
            log.error("webhooks_attempt_crashed", task=task.get_name(), exc_info=exc)

    async def _run(
        self, delivery_id: str, delivery: Delivery | None, sub: Subscription | None, lease: int
    ) -> None:
        try:
            await self._attempt(delivery_id, delivery, sub, lease)
        except asyncio.CancelledError:
            # Graceful stop mid-attempt: make it due now rather than after the lease runs out.
            with contextlib.suppress(Exception):
                await self.queue.release(delivery_id, lease, now_ms())
            raise

    async def _attempt(
        self, delivery_id: str, delivery: Delivery | None, sub: Subscription | None, lease: int
    ) -> None:
        if delivery is None:
            # The record expired or was deleted: a stale queue entry.
            await self.queue.drop(delivery_id, lease, delete=False)
            return
        if delivery.state in (DELIVERED, DEAD):
            await self.queue.drop(delivery_id, lease, delete=False)
            return
        if sub is None:
            log.info("webhooks_delivery_dropped", delivery_id=delivery_id, reason="subscription_deleted")
            await self.queue.drop(delivery_id, lease, delete=True)
            return
        attempt = delivery.attempts + 1
        url = sub.target_url(delivery.livemode)
        if not sub.is_active:
            # Paused: park it as dead so the user can redeliver once they re-enable the endpoint.
            result = AttemptResult(None, "subscription_inactive", 0)
            await self._record(delivery, sub, lease, attempt, url, result, "", force_dead=True)
            return
        attempt_id = str(uuid.uuid4())
        result = await self._post(url, delivery, sub, attempt_id)
        await self._record(delivery, sub, lease, attempt, url, result, attempt_id)

    async def _post(self, url: str, delivery: Delivery, sub: Subscription, attempt_id: str) -> AttemptResult:
        assert self._session is not None
        body = delivery.body.encode()
        timestamp = int(time.time())  # the send time of this attempt, not the event's
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(sub.signing_secrets(), timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            EVENT_HEADER: delivery.event_type,
            EVENT_ID_HEADER: delivery.event_id,
            DELIVERY_HEADER: attempt_id,
        }
        timeout_s = self.settings.webhook_timeout_s
        started = time.monotonic()
        try:
            # aiohttp's total timeout covers connecting, sending and reading the excerpt.
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as resp:
                excerpt = await resp.content.read(RESPONSE_EXCERPT_BYTES)
                return AttemptResult(
                    resp.status, None, _ms_since(started), excerpt.decode("utf-8", "replace") or None
                )
        except TimeoutError:
            return AttemptResult(None, f"timeout: no response within {timeout_s:g} s", _ms_since(started))
        except aiohttp.ClientError as exc:
            return AttemptResult(
                None, f"connection_error: {type(exc).__name__}: {exc}".strip(), _ms_since(started)
            )
        except OSError as exc:
            return AttemptResult(None, f"connection_error: {exc}", _ms_since(started))

    async def _record(
        self,
        delivery: Delivery,
        sub: Subscription,
        lease: int,
        attempt: int,
        url: str,
        result: AttemptResult,
        attempt_id: str,
        *,
        force_dead: bool = False,
    ) -> None:
        now = now_ms()
        next_due: int | None = None
        if result.ok:
            outcome = DELIVERED
        elif result.retryable and not force_dead:
            delay = retry_delay_s(self.settings.webhook_retry_schedule_s, attempt - delivery.retry_base)
            if delay is None:
                outcome = DEAD
            else:
                outcome = RETRYING
                next_due = now + int(delay * 1000)
        else:
            outcome = DEAD
        entry = {
            "id": attempt_id or None,
            "delivery_id": delivery.id,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "attempt": attempt,
            "url": url,
            "status_code": result.status_code,
            "error": result.error,
            "response_body": result.response_excerpt if not result.ok else None,
            "duration_ms": result.duration_ms,
            "attempted_at": iso(now / 1000),
            "delivered_at": iso(now / 1000) if outcome == DELIVERED else None,
            "next_retry_at": iso(next_due / 1000) if next_due else None,
            "state": outcome,
        }
        fields = {
            "attempts": str(attempt),
            "state": "pending" if outcome == RETRYING else outcome,
            "last_status_code": "" if result.status_code is None else str(result.status_code),
            "last_error": result.error or "",
            "next_retry_at_ms": str(next_due) if next_due else "",
            "last_attempt_at": iso(now / 1000),
        }
        ttl = {DELIVERED: keys.DELIVERED_TTL_S, DEAD: keys.DEAD_TTL_S}.get(outcome, 0)
        recorded = await self.queue.complete(
            delivery,
            lease,
            outcome=outcome,
            next_due_ms=next_due,
            log_entry=entry,
            # A paused subscription says nothing about the receiver's health.
            failed=None if force_dead else not result.ok,
            fields=fields,
            terminal_ttl_s=ttl,
        )
        # A paused subscription's delivery is parked without an HTTP attempt: no duration to observe.
        self.metrics.webhook_attempt(outcome, None if force_dead else result.duration_ms / 1000)
        log_fn = log.info if outcome == DELIVERED else log.warning
        log_fn(
            "webhook_attempt",
            delivery_id=delivery.id,
            subscription_id=sub.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            attempt=attempt,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
            state=outcome,
            recorded=recorded,
        )


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
